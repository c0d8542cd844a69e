"""Small shared helpers: seeding, atomic file writes, progress bars, PNG saving, JSON result lines."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run repeats exactly on CPU."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (never half-written)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    mode = 0o666 & ~_umask()  # mkstemp makes 0600; give the file the usual mode
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # after the write: some writers (safetensors) replace the file
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text to `path` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes to `path` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def progress(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False,
             **kw: Any) -> Any:
    """A tqdm progress bar on stderr with rate and ETA; quiet if `disable` or MOEPLACE_NO_PROGRESS is set."""
    from tqdm.auto import tqdm

    disable = disable or bool(os.environ.get("MOEPLACE_NO_PROGRESS"))
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
                file=sys.stderr, **kw)


def print_json_line(figures: dict[str, Any]) -> None:
    """Print one line of JSON holding a command's or benchmark's figures (always the last line)."""
    print(json_dumps(figures, sort_keys=True), flush=True)


def json_dumps(obj: Any, **kw: Any) -> str:
    """json.dumps that always gives valid JSON: NaN and infinities become null, numpy values and
    paths become plain JSON values (every JSON file and line the project writes goes through it)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def json_safe(obj: Any) -> Any:
    """A copy of `obj` with non-finite floats as None and numpy scalars/arrays and paths as plain values."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return json_safe(float(obj))
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def markdown_table(rows: list[dict[str, Any]], floatfmt: str = ".4g") -> str:
    """Render a list of dicts (same keys) as a Markdown table."""
    if not rows:
        return ""
    keys = list(rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
