"""Run folders and their metrics logs: a new run never truncates or overwrites another run's files.

A trainer calls `claim_run_dir` before writing: a folder that already holds a run (its checkpoint or
metrics) is refused unless the user continues it (`--resume`) or replaces it (`--overwrite`).
Metrics are JSON lines appended with one `write` each (O_APPEND), so a crash leaves at most a torn
last line, which `read_jsonl` skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moeplace.errors import InputError
from moeplace.utils import atomic_write_text, json_dumps


def claim_run_dir(out: str | os.PathLike[str], files: Sequence[str], *, resume: bool = False,
                  overwrite: bool = False, flag: str = "--out") -> Path:
    """Check that a run may write in `out` (the names/globs in `files` mark an existing run).

    A fresh run (no `resume`) into a folder holding any of them raises InputError, or with
    `overwrite` deletes them first. `resume` leaves the folder alone (the trainer then loads it).
    """
    path = Path(out)
    if resume and overwrite:
        raise InputError("--resume and --overwrite: give one or the other (continue a run, or replace it)")
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: exists and is not a folder")
    if resume or not path.is_dir():
        return path
    found = sorted({p for pattern in files for p in path.glob(pattern)})
    if not found:
        return path
    if not overwrite:
        raise InputError(f"{flag} {path}: holds another run ({found[0].name}); continue it with --resume, "
                         "replace it with --overwrite, or choose another folder")
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return path


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one record as one line of valid JSON, written by a single O_APPEND write."""
    data = (json_dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        view = memoryview(data)
        while view:  # a regular file takes it in one write; loop only if the OS says otherwise
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, skipping blank and torn (unparsable) lines; [] if absent."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def truncate_jsonl(path: str | os.PathLike[str], step: int) -> None:
    """Keep only the records up to `step` (atomically), so a resumed run's log has no repeats."""
    p = Path(path)
    if not p.exists():
        return
    keep = [r for r in read_jsonl(p) if int(r.get("step", 0) or 0) <= step]
    atomic_write_text(p, "".join(json_dumps(r) + "\n" for r in keep))
