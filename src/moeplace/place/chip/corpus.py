"""A training corpus of chip designs: generated folders written to disk, and the loader pre-training reads.

A generated corpus is a folder with `corpus.json` (format, seed, ranges, one entry per design) and one
sub-folder per design holding `netlist.pb.txt`, `initial.plc` and optionally `placement.png`. Each
design folder is written whole or not at all (built in a hidden temporary folder, then renamed), and
the index is rewritten (atomically) after every design, so an interrupted run leaves a valid corpus of
the designs finished. `load_corpus` adds the shipped Circuit Training samples and ibm01 and refuses
Ariane133, the held-out design, wherever it is found (by path or by its hard macros).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from moeplace.data import CHIP_DIR
from moeplace.errors import InputError
from moeplace.place.chip.generate import Design, design_seed, generate_design
from moeplace.place.chip.netlist import Netlist, load_netlist
from moeplace.place.chip.netlist_writer import write_netlist
from moeplace.place.chip.plc import PlcHeader, load_placement, write_plc
from moeplace.utils import _umask, atomic_write_text, progress

INDEX, NETLIST, PLC, PNG = "corpus.json", "netlist.pb.txt", "initial.plc", "placement.png"
FORMAT, VERSION = "moeplace-chip-corpus", 1
HELD_OUT_DIR = CHIP_DIR / "ariane133"
# sha256 of Ariane133's sorted hard-macro names: recognises a copy of the held-out design anywhere
HELD_OUT_FINGERPRINT = "e2e2cb163c7d9f58655188988314bba7c97cf93744c0640f30a928c8806e1048"


def _fail_io(path: Path, e: OSError) -> InputError:
    """An InputError naming the path that could not be written."""
    return InputError(f"--out: cannot write {path} ({e.strerror or e})")


def prepare_out_dir(out: Path, overwrite: bool) -> dict | None:
    """Check `out` can take a corpus and create it; returns the old index if it already holds one.
    A non-empty folder that is not a corpus is refused unless `overwrite` (its other files are kept)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is a file, not a folder")
    old = None
    if (out / INDEX).is_file():
        try:
            old = json.loads((out / INDEX).read_text())
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            raise InputError(f"--out: {out / INDEX} is not a corpus index (use another folder)")
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out: {out} is not empty and holds no {INDEX}; pass --overwrite to write "
                         "into it anyway")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise _fail_io(out, e) from None
    return old


def write_design(design: Design, folder: Path, png: bool = False) -> None:
    """Write one design's netlist, initial .plc (with its proxy-cost figures) and PNG as a whole: into a
    hidden temporary folder beside `folder`, then moved into place."""
    from moeplace.place.chip.cost import ProxyCost

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        write_netlist(tmp / NETLIST, design.netlist)
        write_plc(tmp / PLC, design.netlist, design.header, cost=ProxyCost(design.netlist, design.header))
        if png:
            from moeplace.place.chip.render import render_placement

            render_placement(tmp / PNG, design.netlist, design.header, title=f"{design.name} (initial)")
        if not folder.exists():
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: give the folder the usual mode
            os.replace(tmp, folder)
            return
        for name in (NETLIST, PLC, PNG):  # an existing design folder: replace our files only
            if (tmp / name).exists():
                os.replace(tmp / name, folder / name)
            elif name == PNG:
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()  # a stale picture of the old design
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_index(out: Path, index: dict) -> None:
    """Rewrite corpus.json atomically."""
    atomic_write_text(out / INDEX, json.dumps(index, indent=1, sort_keys=True) + "\n")


def generate_corpus(out: str | Path, count: int, seed: int = 0, min_macros: int = 20, max_macros: int = 300,
                    png: bool = False, overwrite: bool = False, show_progress: bool = True) -> dict:
    """Generate `count` designs into `out` (design i from design_seed(seed, i)) and return the index."""
    from moeplace.place.chip.generate import MAX_MACROS_LIMIT

    if count < 1:
        raise InputError(f"--count: must be >= 1, got {count}")
    if seed < 0:
        raise InputError(f"--seed: must be >= 0, got {seed}")
    if min_macros < 1:
        raise InputError(f"--min-macros: must be >= 1, got {min_macros}")
    if max_macros < min_macros:
        raise InputError(f"--max-macros: must be >= --min-macros ({min_macros}), got {max_macros}")
    if max_macros > MAX_MACROS_LIMIT:
        raise InputError(f"--max-macros: at most {MAX_MACROS_LIMIT}, got {max_macros}")
    out = Path(out)
    old = prepare_out_dir(out, overwrite)
    index = {"format": FORMAT, "version": VERSION, "seed": seed, "count": count, "min_macros": min_macros,
             "max_macros": max_macros, "complete": False, "designs": []}
    width = max(4, len(str(count - 1)))
    names = [f"design_{i:0{width}d}" for i in range(count)]
    for entry in (old or {}).get("designs", []):  # designs of an earlier run that this one does not write
        folder = entry.get("folder") if isinstance(entry, dict) else None
        if isinstance(folder, str) and re.fullmatch(r"design_\d+", folder) and folder not in names:
            _remove_design(out / folder)
    with progress(total=count, desc="generate", unit="design", disable=not show_progress) as bar:
        for i in range(count):
            name = names[i]
            design = generate_design(design_seed(seed, i), name, min_macros, max_macros)
            try:
                write_design(design, out / name, png=png)
                index["designs"].append({**design.info, "folder": name, "index": i})
                if i == count - 1:
                    index["complete"] = True
                _write_index(out, index)
            except OSError as e:
                raise _fail_io(out / name, e) from None
            bar.update(1)
    return index


def _remove_design(folder: Path) -> None:
    """Delete a design folder's own files, and the folder when nothing else is left in it."""
    if not folder.is_dir():
        return
    for name in (NETLIST, PLC, PNG):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (folder / name).unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


@dataclass
class CorpusDesign:
    """One design of a corpus, loaded: its name, netlist (initial placement applied) and .plc header."""

    name: str
    netlist: Netlist
    header: PlcHeader
    source: str


@dataclass(frozen=True)
class CorpusEntry:
    """Where a corpus design lives; `load()` reads it (so a large corpus is read one design at a time)."""

    name: str
    netlist: Path  # netlist.pb.txt (or Bookshelf .aux)
    plc: Path | None
    grid: tuple[int, int] | None = None  # (columns, rows) where the files' own grid does not fit

    def load(self) -> CorpusDesign:
        """Read the design; InputError if it is the held-out Ariane133."""
        _refuse_held_out_path(self.netlist)
        if self.netlist.suffix == ".aux":
            from moeplace.place.chip.bookshelf import load_bookshelf

            columns, rows = self.grid or (None, None)
            netlist, header = load_bookshelf(self.netlist, columns=columns, rows=rows)
        else:
            netlist = load_netlist(self.netlist)
            _refuse_held_out(netlist, self.netlist)
            if self.plc is None:
                from moeplace.place.chip.canvas import default_header

                header = default_header(netlist)
            else:
                header = load_placement(netlist, self.plc)
        _refuse_held_out(netlist, self.netlist)
        return CorpusDesign(self.name, netlist, header, str(self.netlist))


def is_held_out(netlist: Netlist) -> bool:
    """True when the netlist is Ariane133 (its hard-macro names hash to the held-out fingerprint)."""
    hard = netlist.hard_macros
    if len(hard) != 133:
        return False
    names = "\n".join(sorted(netlist.names[i] for i in hard))
    return hashlib.sha256(names.encode()).hexdigest() == HELD_OUT_FINGERPRINT


def _refuse_held_out(netlist: Netlist, path: Path) -> None:
    """InputError when a loaded netlist is Ariane133."""
    if is_held_out(netlist):
        raise InputError(f"{path}: this is Ariane133, the held-out design; it is never part of a training "
                         "corpus")


def _refuse_held_out_path(path: Path) -> None:
    """InputError when a path lies in the shipped Ariane133 folder."""
    try:
        inside = path.resolve().is_relative_to(HELD_OUT_DIR.resolve())
    except OSError:
        inside = False
    if inside:
        raise InputError(f"{path}: Ariane133 is the held-out design; it is never part of a training corpus")


def builtin_entries() -> list[CorpusEntry]:
    """The shipped designs that join every corpus: Circuit Training's samples and ibm01 (not Ariane133)."""
    ct = CHIP_DIR / "circuit_training"
    out = [CorpusEntry(f"ct/{d.name}", d / NETLIST, d / PLC if (d / PLC).is_file() else None)
           for d in sorted(ct.iterdir()) if (d / NETLIST).is_file()]
    # ibm01's 246 macros do not fit its default 32 x 32 grid cell-centred: 48 x 48, as the benchmark
    return out + [CorpusEntry("ibm01", CHIP_DIR / "ibm01" / "ibm01.aux", None, grid=(48, 48))]


def corpus_entries(dirs: Iterable[str | Path] = (), builtin: bool = True) -> list[CorpusEntry]:
    """The designs of generated corpus folders (their corpus.json order) or single design folders
    (netlist.pb.txt [+ initial.plc]), then the shipped ones. InputError for Ariane133 or a folder that
    is neither."""
    entries: list[CorpusEntry] = []
    for d in dirs:
        d = Path(d)
        _refuse_held_out_path(d)
        if (d / INDEX).is_file():
            try:
                index = json.loads((d / INDEX).read_text())
                folders = [e["folder"] for e in index["designs"]]
            except (OSError, ValueError, KeyError, TypeError):
                raise InputError(f"{d / INDEX}: not a readable corpus index") from None
            for f in folders:
                entries.append(_design_entry(d / str(f), f"{d.name}/{f}"))
        elif d.is_dir() and any((d / n).is_file() for n in (NETLIST, NETLIST + ".gz")):
            entries.append(_design_entry(d, d.name))
        else:
            raise InputError(f"{d}: not a corpus folder (no {INDEX}) nor a design folder (no {NETLIST})")
    return entries + (builtin_entries() if builtin else [])


def _design_entry(folder: Path, name: str) -> CorpusEntry:
    """The entry of one design folder."""
    _refuse_held_out_path(folder)
    netlist = folder / NETLIST if (folder / NETLIST).is_file() else folder / (NETLIST + ".gz")
    if not netlist.is_file():
        raise InputError(f"{folder}: design folder has no {NETLIST}")
    plcs = [folder / PLC] + sorted(folder.glob("*.plc"))
    plc = next((p for p in plcs if p.is_file()), None)
    return CorpusEntry(name, netlist, plc)


def load_corpus(dirs: Iterable[str | Path] = (), builtin: bool = True,
                min_hard_macros: int = 1) -> list[CorpusDesign]:
    """Every design of the given corpus/design folders plus (with `builtin`) the shipped samples and
    ibm01, loaded; designs with fewer than `min_hard_macros` movable hard macros (nothing to place)
    are left out. Never Ariane133: it is refused with an InputError wherever it appears."""
    designs = [e.load() for e in corpus_entries(dirs, builtin)]
    return [d for d in designs if movable_hard_macros(d.netlist) >= min_hard_macros]


def movable_hard_macros(netlist: Netlist) -> int:
    """Number of hard macros a placer moves (not fixed)."""
    hard = netlist.hard_macros
    return int((~netlist.fixed[hard]).sum())
