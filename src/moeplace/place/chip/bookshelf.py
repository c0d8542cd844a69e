"""Bookshelf placement benchmarks (.aux .nodes .nets .pl .scl .wts) read into the same Netlist type.

Terminals become fixed ports (points at the terminal's centre). Nodes taller than a placement row
are hard macros; the other nodes (standard cells) are soft macros, each its own pin, as Circuit
Training's STDCELL nodes are. Each hard-macro pin named in .nets becomes a pin node with its offset
from the macro centre. A net's driver is its first output ('O') pin, else its first pin. Bookshelf
positions are lower-left corners; we store centres, with the core's lower-left corner moved to (0, 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moeplace.errors import InputError
from moeplace.place.chip.netlist import (
    ORIENTATIONS,
    Netlist,
    NodeKind,
    orientation_code,
    positions_of,
    swaps_axes,
)
from moeplace.place.chip.plc import PlcHeader


def _lines(path: Path):
    """(line number, fields) of the meaningful lines of a Bookshelf file (no header, comments, blanks)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError) as e:  # ValueError: a name with a NUL byte
        raise InputError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        s = raw.split("#", 1)[0].strip()
        if not s or s.startswith("UCLA"):
            continue
        yield lineno, s


def _float(text: str, path: Path, lineno: int, what: str) -> float:
    """A finite number from a Bookshelf field, or InputError naming file and line."""
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{path}:{lineno}: {what} is not a number: {text!r}") from None
    if not np.isfinite(v):
        raise InputError(f"{path}:{lineno}: {what} is not finite: {text!r}")
    return v


def _read_aux(aux: Path) -> dict[str, Path]:
    """The files an .aux lists, by extension."""
    for lineno, s in _lines(aux):
        if ":" in s:
            files = s.split(":", 1)[1].split()
            out = {Path(f).suffix.lstrip("."): aux.parent / f for f in files}
            for need in ("nodes", "nets", "pl"):
                if need not in out:
                    raise InputError(f"{aux}:{lineno}: no .{need} file listed")
            return out
    raise InputError(f"{aux}: no 'RowBasedPlacement : ...' line")


def _read_nodes(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Names, widths, heights and terminal flags from .nodes."""
    names, w, h, term = [], [], [], []
    for lineno, s in _lines(path):
        if s.startswith(("NumNodes", "NumTerminals")):
            continue
        f = s.split()
        if len(f) < 3:
            raise InputError(f"{path}:{lineno}: node line needs 'name width height [terminal]'")
        names.append(f[0])
        w.append(_float(f[1], path, lineno, "width"))
        h.append(_float(f[2], path, lineno, "height"))
        term.append(len(f) > 3 and f[3].startswith("terminal"))
    return names, np.asarray(w), np.asarray(h), np.asarray(term, bool)


def _read_scl(path: Path) -> tuple[float, float, float, float, float]:
    """Core area (x0, y0, x1, y1) and row height from the rows."""
    x0 = y0 = np.inf
    x1 = y1 = -np.inf
    row_h = 0.0
    coord = height = origin = sites = spacing = None
    for lineno, s in _lines(path):
        key, _, val = s.partition(":")
        key = key.strip()
        if key == "Coordinate":
            coord = _float(val.strip(), path, lineno, "Coordinate")
        elif key == "Height":
            height = _float(val.strip(), path, lineno, "Height")
        elif key == "Sitespacing":
            spacing = _float(val.strip(), path, lineno, "Sitespacing")
        elif key == "SubrowOrigin":
            parts = val.split() or [""]
            origin = _float(parts[0], path, lineno, "SubrowOrigin")
            if len(parts) >= 3 and parts[1] == "Numsites":
                sites = _float(parts[-1].lstrip(":"), path, lineno, "Numsites")
        elif key == "Numsites":
            sites = _float(val.strip(), path, lineno, "Numsites")
        elif key == "End":
            if None in (coord, height, origin, sites):
                raise InputError(f"{path}:{lineno}: row lacks Coordinate, Height, SubrowOrigin or Numsites")
            x0, x1 = min(x0, origin), max(x1, origin + sites * (spacing or 1.0))
            y0, y1 = min(y0, coord), max(y1, coord + height)
            row_h = max(row_h, height)
            coord = height = origin = sites = spacing = None
    if not np.isfinite(x0):
        raise InputError(f"{path}: no rows found")
    return x0, y0, x1, y1, row_h


def _read_pl(path: Path, index: dict[str, int], n: int):
    """Lower-left x, y, orientation codes and fixed flags from .pl."""
    x, y = np.zeros(n), np.zeros(n)
    orient = np.zeros(n, np.int8)
    fixed = np.zeros(n, bool)
    for lineno, s in _lines(path):
        f = s.replace(":", " : ").split()
        if f[0] not in index:
            raise InputError(f"{path}:{lineno}: unknown node {f[0]!r}")
        if len(f) < 3:
            raise InputError(f"{path}:{lineno}: placement line needs 'name x y : orientation'")
        i = index[f[0]]
        x[i] = _float(f[1], path, lineno, "x")
        y[i] = _float(f[2], path, lineno, "y")
        rest = f[4:] if len(f) > 3 and f[3] == ":" else f[3:]
        for tok in rest:
            if tok.startswith("/FIXED"):
                fixed[i] = True
            elif tok in ORIENTATIONS:
                orient[i] = orientation_code(tok)
            else:
                raise InputError(f"{path}:{lineno}: unexpected {tok!r} (want an orientation or /FIXED)")
    return x, y, orient, fixed


def _read_nets(path: Path, index: dict[str, int]):
    """Nets as lists of (node, direction, x offset, y offset) and their names."""
    nets: list[list[tuple[int, str, float, float]]] = []
    names: list[str] = []
    left = 0
    for lineno, s in _lines(path):
        if s.startswith(("NumNets", "NumPins")):
            continue
        if s.startswith("NetDegree"):
            if left:
                raise InputError(f"{path}:{lineno}: previous net has {left} pin(s) missing")
            f = s.replace(":", " ").split()
            try:
                left = int(f[1])
            except (IndexError, ValueError):
                raise InputError(f"{path}:{lineno}: malformed 'NetDegree : k [name]'") from None
            names.append(f[2] if len(f) > 2 else f"net{len(nets)}")
            nets.append([])
            continue
        if not left:
            raise InputError(f"{path}:{lineno}: pin line outside a net")
        f = s.replace(":", " : ").split()
        if f[0] not in index:
            raise InputError(f"{path}:{lineno}: unknown node {f[0]!r}")
        direction = f[1] if len(f) > 1 and f[1] != ":" else "B"
        dx = dy = 0.0
        if ":" in f:
            k = f.index(":")
            if len(f) < k + 3:
                raise InputError(f"{path}:{lineno}: pin offset needs ': dx dy'")
            dx, dy = _float(f[k + 1], path, lineno, "x offset"), _float(f[k + 2], path, lineno, "y offset")
        nets[-1].append((index[f[0]], direction, dx, dy))
        left -= 1
    if left:
        raise InputError(f"{path}: last net has {left} pin(s) missing")
    return nets, names


def load_bookshelf(aux: str | Path, columns: int | None = None, rows: int | None = None
                   ) -> tuple[Netlist, PlcHeader]:
    """Read a Bookshelf benchmark from its .aux file into (Netlist, PlcHeader over the core area)."""
    aux = Path(aux)
    if not aux.is_file():
        raise InputError(f"{aux}: Bookshelf .aux file not found")
    files = _read_aux(aux)
    names, w, h, term = _read_nodes(files["nodes"])
    n = len(names)
    index = {nm: i for i, nm in enumerate(names)}
    if len(index) != n:
        raise InputError(f"{files['nodes']}: duplicate node names")
    x, y, orient, fixed = _read_pl(files["pl"], index, n)
    if "scl" in files:
        cx0, cy0, cx1, cy1, row_h = _read_scl(files["scl"])
    else:  # no rows: the bounding box of all nodes, rows as tall as the most common node height
        cx0, cy0 = float(x.min()), float(y.min())
        cx1, cy1 = float((x + w).max()), float((y + h).max())
        row_h = float(np.median(h[~term])) if np.any(~term) else 1.0
    kind = np.where(term, NodeKind.PORT, np.where(h > row_h + 1e-9, NodeKind.HARD_MACRO,
                                                  NodeKind.SOFT_MACRO)).astype(np.int8)
    hard = kind == NodeKind.HARD_MACRO
    orient[~hard] = 0
    fw = np.where(swaps_axes(orient), h, w)
    fh = np.where(swaps_axes(orient), w, h)
    cx, cy = x + fw / 2 - cx0, y + fh / 2 - cy0  # centres, core origin at (0, 0)
    fixed |= term
    width = np.where(term, 0.0, w)
    height = np.where(term, 0.0, h)
    nets, net_names = _read_nets(files["nets"], index)
    # Hard-macro pins become pin nodes; other pins are their node itself.
    all_names = list(names)
    parent = [-1] * n
    xo, yo = [0.0] * n, [0.0] * n
    net_driver, net_ptr, net_pins = [], [0], []
    for pins in nets:
        if not pins:
            continue
        order = sorted(range(len(pins)), key=lambda k: pins[k][1] != "O")  # stable: first 'O' first
        ids = []
        for k in order:
            node, _, dx, dy = pins[k]
            if kind[node] == NodeKind.HARD_MACRO:
                all_names.append(f"{names[node]}/pin{len(all_names)}")
                parent.append(node)
                xo.append(dx)
                yo.append(dy)
                ids.append(len(all_names) - 1)
            else:
                ids.append(node)
        net_driver.append(ids[0])
        net_pins.extend(ids)
        net_ptr.append(len(net_pins))
    m = len(all_names) - n
    net_weight = np.ones(len(net_driver))
    if "wts" in files:  # weights that name nets weight them; node weights are not used by the cost
        wmap = {nm: k for k, nm in enumerate(net_names) if nets[k]}
        kept = {k: j for j, k in enumerate(k for k in range(len(nets)) if nets[k])}
        for lineno, s in _lines(files["wts"]):
            f = s.split()
            if len(f) >= 2 and f[0] in wmap and f[0] not in index:
                net_weight[kept[wmap[f[0]]]] = _float(f[1], files["wts"], lineno, "weight")
    pin_kind = np.full(m, NodeKind.HARD_MACRO_PIN, np.int8)
    netlist = Netlist(
        names=all_names, kind=np.concatenate([kind, pin_kind]),
        width=np.concatenate([width, np.zeros(m)]), height=np.concatenate([height, np.zeros(m)]),
        x=np.concatenate([cx, np.zeros(m)]), y=np.concatenate([cy, np.zeros(m)]),
        orient=np.concatenate([orient, np.zeros(m, np.int8)]),
        fixed=np.concatenate([fixed, np.zeros(m, bool)]),
        parent=np.asarray(parent, np.int64), x_offset=np.asarray(xo), y_offset=np.asarray(yo),
        weight=np.ones(n + m), net_driver=np.asarray(net_driver, np.int64),
        net_ptr=np.asarray(net_ptr, np.int64), net_pins=np.asarray(net_pins, np.int64),
        net_weight=net_weight, canvas=(cx1 - cx0, cy1 - cy0),
        metadata={"format": "bookshelf", "core_origin": (cx0, cy0), "row_height": row_h},
        source=str(aux),
    )
    netlist.x[n:], netlist.y[n:] = _pin_xy(netlist, n)
    width_c, height_c = cx1 - cx0, cy1 - cy0
    if columns is None or rows is None:
        columns = columns or 32
        rows = rows or max(1, int(round(columns * height_c / width_c)))
    header = PlcHeader(columns=int(columns), rows=int(rows), width=width_c, height=height_c,
                       source=str(aux))
    header.validate(str(aux))
    return netlist, header


def _pin_xy(netlist: Netlist, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Absolute positions of the pin nodes n.. (they follow their macros)."""
    pins = np.arange(n, netlist.num_nodes)
    return positions_of(netlist, pins, netlist.x, netlist.y, netlist.orient)
