"""Circuit Training .plc placement files: the header (grid, canvas, routing settings, figures) and rows.

A .plc file is comment lines (`# Columns : 24  Rows : 21`, `# Width : ...  Height : ...`,
`# Routes per micron, hor : ...  ver : ...`, `# Routes used by macros, hor : ...  ver : ...`,
`# Smoothing factor : k`, `# Blockage : x0 y0 x1 y1 rate`, reference figures such as
`# Wirelength cost : 0.0736`) followed by one row per placed node: `node_index x y orientation fixed`
(x, y are centres). We keep every header line we read and rewrite only the ones whose values change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moeplace.errors import InputError
from moeplace.place.chip.netlist import ORIENTATIONS, Netlist, NodeKind, orientation_code
from moeplace.utils import atomic_write_text

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_PAIR_FIELDS = {  # regex -> (first attribute, second attribute)
    re.compile(rf"^Columns\s*:\s*{_NUM}\s+Rows\s*:\s*{_NUM}"): ("columns", "rows"),
    re.compile(rf"^Width\s*:\s*{_NUM}\s+Height\s*:\s*{_NUM}"): ("width", "height"),
    re.compile(rf"^Routes per micron,\s*hor\s*:\s*{_NUM}\s+ver\s*:\s*{_NUM}"):
        ("hroutes_per_micron", "vroutes_per_micron"),
    re.compile(rf"^Routes used by macros,\s*hor\s*:\s*{_NUM}\s+ver\s*:\s*{_NUM}"):
        ("hrouting_alloc", "vrouting_alloc"),
    re.compile(rf"^Congestion Columns\s*:\s*{_NUM}\s+Congestion Rows\s*:\s*{_NUM}"):
        ("congestion_columns", "congestion_rows"),
}
_SINGLE_FIELDS = {
    re.compile(rf"^Smoothing factor\s*:\s*{_NUM}"): "smoothing",
    re.compile(rf"^Overlap threshold\s*:\s*{_NUM}"): "overlap_threshold",
}
_BLOCKAGE = re.compile(rf"^Blockage\s*:\s*{_NUM}\s+{_NUM}\s+{_NUM}\s+{_NUM}(?:\s+{_NUM})?\s*$")
FIGURE_KEYS = ("Area", "Wirelength", "Wirelength cost", "Congestion cost", "Density cost", "Proxy cost")
_FIGURE = re.compile(rf"^(Area(?: \(stdcell\+macros\))?|Wirelength|Wirelength cost|Congestion cost|"
                     rf"Density cost|Proxy cost)\s*:\s*{_NUM}\s*$")
_MAP_TITLES = ("Hard Macro Placements:", "Overall Placement Density:", "Horizontal Routing Congestion:",
               "Vertical Routing Congestion:")
_KEYED = re.compile(r"^([A-Za-z][A-Za-z ,()+%]*?)\s*:")


@dataclass
class PlcHeader:
    """Settings of a placement: grid, canvas, routing resources, smoothing, blockages, and figures read."""

    columns: int = 10
    rows: int = 10
    width: float = 0.0
    height: float = 0.0
    hroutes_per_micron: float = 70.33  # Circuit Training's test defaults where a file names none
    vroutes_per_micron: float = 74.51
    hrouting_alloc: float = 51.79
    vrouting_alloc: float = 51.79
    smoothing: float = 2.0
    overlap_threshold: float = 0.004
    congestion_columns: int | None = None  # a separate congestion grid (Circuit Training's current
    congestion_rows: int | None = None  # code writes `Congestion Columns : c  Congestion Rows : r`)
    weights: tuple[float, float, float] = (1.0, 0.5, 0.5)  # wirelength, density, congestion (not in files)
    blockages: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)  # e.g. "Wirelength cost" -> 0.0736
    lines: list[str] = field(default_factory=list)  # raw header comment lines, '#' stripped
    source: str = ""
    field_lines: dict[str, int] = field(default_factory=dict)  # e.g. "width" -> its line in the file

    @property
    def cell_width(self) -> float:
        """Width of one grid cell."""
        return self.width / self.columns

    @property
    def cell_height(self) -> float:
        """Height of one grid cell."""
        return self.height / self.rows

    def validate(self, where: str = "header") -> None:
        """Raise InputError if the grid or canvas is unusable."""
        if self.columns < 1 or self.rows < 1:
            raise InputError(f"{where}: grid must have at least 1 column and 1 row "
                             f"(got {self.columns} x {self.rows})")
        if not (self.width > 0 and self.height > 0):
            raise InputError(f"{where}: canvas width and height must be positive "
                             f"(got {self.width} x {self.height})")
        if self.hroutes_per_micron <= 0 or self.vroutes_per_micron <= 0:
            raise InputError(f"{where}: routes per micron must be positive")


@dataclass
class PlcPlacement:
    """The rows of a .plc file: node index, centre, orientation, fixed flag (and the line each came from)."""

    node_index: np.ndarray  # int64 [K]
    x: np.ndarray  # float64 [K]
    y: np.ndarray  # float64 [K]
    orientation: list[str]
    fixed: np.ndarray  # bool [K]
    line: np.ndarray  # int64 [K] line number of each row in its file
    node_name: list[str] = field(default_factory=list)  # per row: the node's name where the row gives
    # one instead of an index (node_index -1 until apply_plc looks it up), else ""


def _number(text: str, path: Path, lineno: int, what: str) -> float:
    """A finite number from a .plc field, or InputError naming file and line."""
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{path}:{lineno}: {what} is not a number: {text!r}") from None
    if not np.isfinite(v):
        raise InputError(f"{path}:{lineno}: {what} is not finite: {text!r}")
    return v


def _parse_header_line(header: PlcHeader, body: str, path: Path, lineno: int) -> None:
    """Fill header fields from one comment line (without '#')."""
    for rx, (a, b) in _PAIR_FIELDS.items():
        m = rx.match(body)
        if m:
            va, vb = float(m.group(1)), float(m.group(2))
            if not (np.isfinite(va) and np.isfinite(vb)):
                raise InputError(f"{path}:{lineno}: {a} and {b} must be finite numbers")
            if a in ("columns", "congestion_columns"):
                if va != int(va) or vb != int(vb) or va < 1 or vb < 1:
                    raise InputError(f"{path}:{lineno}: grid columns and rows must be positive integers")
                va, vb = int(va), int(vb)
            setattr(header, a, va)
            setattr(header, b, vb)
            header.field_lines[a] = lineno
            return
    for rx, a in _SINGLE_FIELDS.items():
        m = rx.match(body)
        if m:
            setattr(header, a, float(m.group(1)))
            return
    if body.startswith("Blockage"):
        m = _BLOCKAGE.match(body)
        if not m:
            raise InputError(f"{path}:{lineno}: malformed blockage (want 'Blockage : x0 y0 x1 y1 [rate]')")
        x0, y0, x1, y1 = (float(m.group(i)) for i in range(1, 5))
        rate = float(m.group(5)) if m.group(5) is not None else 1.0
        header.blockages.append((x0, y0, x1, y1, rate))
        return
    m = _FIGURE.match(body)
    if m:
        key = "Area" if m.group(1).startswith("Area") else m.group(1)
        header.figures[key] = float(m.group(2))
        return
    for key in ("Columns", "Congestion Columns", "Width", "Routes per micron", "Routes used by macros",
                "Smoothing factor"):
        if body.startswith(key):
            raise InputError(f"{path}:{lineno}: malformed header line {('# ' + body)[:80]!r}")


def read_plc(path: str | Path) -> tuple[PlcHeader, PlcPlacement]:
    """Read a .plc file: its header settings and its placement rows. InputError names file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"{path}: cannot read placement file ({e.strerror or e})") from None
    header = PlcHeader(source=str(path))
    idx, xs, ys, orients, fixed, lines, names = [], [], [], [], [], [], []
    in_body = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if not s:
            continue
        if s.startswith("#"):
            if not in_body:
                body = s[1:].strip()
                header.lines.append(s[1:].rstrip())
                _parse_header_line(header, body, path, lineno)
            continue
        in_body = True
        parts = s.split()
        if len(parts) not in (4, 5):
            raise InputError(f"{path}:{lineno}: placement row needs 'node_index x y orientation [fixed]', "
                             f"got {len(parts)} fields")
        name = ""
        try:
            i = int(parts[0])
        except ValueError:
            try:
                float(parts[0])
            except ValueError:  # a node name: looked up in the netlist by apply_plc
                i, name = -1, parts[0]
            else:
                raise InputError(f"{path}:{lineno}: node index is not an integer: {parts[0]!r}") from None
        if i < 0 and not name:
            raise InputError(f"{path}:{lineno}: negative node index {i}")
        o = parts[3]
        if o != "-" and o not in ORIENTATIONS:
            raise InputError(f"{path}:{lineno}: unknown orientation {o!r}")
        f = parts[4] if len(parts) == 5 else "0"
        if f not in ("0", "1"):
            raise InputError(f"{path}:{lineno}: fixed flag must be 0 or 1, got {f!r}")
        idx.append(i)
        xs.append(_number(parts[1], path, lineno, "x"))
        ys.append(_number(parts[2], path, lineno, "y"))
        orients.append(o)
        fixed.append(f == "1")
        lines.append(lineno)
        names.append(name)
    placement = PlcPlacement(node_index=np.asarray(idx, np.int64), x=np.asarray(xs, np.float64),
                             y=np.asarray(ys, np.float64), orientation=orients,
                             fixed=np.asarray(fixed, bool), line=np.asarray(lines, np.int64),
                             node_name=names if any(names) else [])
    return header, placement


def apply_plc(netlist: Netlist, placement: PlcPlacement, source: str = "placement") -> None:
    """Set centres, orientations and fixed flags of the netlist's macros and ports from .plc rows.

    Rows may name nodes instead of numbering them. A file with rows must place every hard and soft
    macro (one without rows keeps the netlist's positions); InputError names the file and line."""
    n = netlist.num_nodes
    for k, name in enumerate(placement.node_name):
        if name:
            try:
                placement.node_index[k] = netlist.index(name)
            except KeyError:
                raise InputError(f"{source}:{placement.line[k]}: unknown node {name!r}") from None
    seen: dict[int, int] = {}
    for k, i in enumerate(placement.node_index):
        if int(i) in seen:
            raise InputError(f"{source}:{placement.line[k]}: node {i} ({netlist.names[i] if i < n else '?'}) "
                             f"is placed twice (first on line {seen[int(i)]})")
        seen[int(i)] = int(placement.line[k])
        if i >= n:
            raise InputError(f"{source}:{placement.line[k]}: node index {i} is out of range "
                             f"(netlist has {n} nodes)")
        kind = netlist.kind[i]
        if kind not in (NodeKind.HARD_MACRO, NodeKind.SOFT_MACRO, NodeKind.PORT):
            raise InputError(f"{source}:{placement.line[k]}: node {i} ({netlist.names[i]!r}) is a pin, "
                             "not a macro or port")
    if len(placement.node_index):
        missing = np.setdiff1d(netlist.macros, placement.node_index)
        if len(missing):
            m = int(missing[0])
            raise InputError(f"{source}: no row for macro {netlist.names[m]!r} (node {m}; {len(missing)} "
                             "macros missing): a .plc with rows must place every hard and soft macro")
    i = placement.node_index
    netlist.x[i] = placement.x
    netlist.y[i] = placement.y
    netlist.fixed[i] = placement.fixed
    hard = netlist.kind[i] == NodeKind.HARD_MACRO
    netlist.orient[i[hard]] = [orientation_code(o) for o, h in zip(placement.orientation, hard) if h]


def load_placement(netlist: Netlist, path: str | Path) -> PlcHeader:
    """Read a .plc file, check it against the netlist, apply it and return its header."""
    from moeplace.place.chip.canvas import check_header_against_netlist  # canvas builds on PlcHeader

    header, placement = read_plc(path)
    check_header_against_netlist(netlist, header, str(path))
    apply_plc(netlist, placement, source=str(path))
    return header


def _fmt(v: float) -> str:
    """A number as written in .plc files (up to 10 significant digits)."""
    return f"{v:.10g}"


def _canonical_lines(header: PlcHeader, figures: dict[str, float]) -> dict[str, str]:
    """Header lines we own, keyed by the text before their first colon."""
    out = {
        "Columns": f" Columns : {header.columns}  Rows : {header.rows}",
        "Width": f" Width : {_fmt(header.width)}  Height : {_fmt(header.height)}",
        "Routes per micron, hor": f" Routes per micron, hor : {_fmt(header.hroutes_per_micron)}  "
                                  f"ver : {_fmt(header.vroutes_per_micron)}",
        "Routes used by macros, hor": f" Routes used by macros, hor : {_fmt(header.hrouting_alloc)}  "
                                      f"ver : {_fmt(header.vrouting_alloc)}",
        "Smoothing factor": f" Smoothing factor : {_fmt(header.smoothing)}",
        **({"Congestion Columns": f" Congestion Columns : {header.congestion_columns}  "
                                  f"Congestion Rows : {header.congestion_rows}"}
           if header.congestion_columns is not None and header.congestion_rows is not None else {}),
        "Overlap threshold": f" Overlap threshold : {_fmt(header.overlap_threshold)}",
    }
    for k, v in figures.items():
        out[k] = f" {k} : {v:.4f}" if "cost" in k else f" {k} : {_fmt(v)}"
    return out


def ascii_map(title: str, values: np.ndarray) -> list[str]:
    """A grid map drawn as Circuit Training's .plc headers draw it: one digit floor(10 x value) per
    cell ('#' above 1, '!' above 1.1, blank for 0), top row first (lines without the leading '#')."""
    rows, cols = values.shape
    rule = "    " + "-" * (2 * cols + 1)
    out = [f" {title}", "    |" + "".join(f"{c // 10 % 10}|" for c in range(cols)),
           "    |" + "".join(f"{c % 10}|" for c in range(cols)), rule]
    for r in range(rows - 1, -1, -1):
        cells = ["!" if v > 1.1 else "#" if v > 1.0 else (" " if int(v * 10) == 0 else str(int(v * 10)))
                 for v in values[r]]
        out.append(f"{r:4d}|" + "|".join(cells) + "|")
    return out + [rule, " "]


def write_plc(path: str | Path, netlist: Netlist, header: PlcHeader,
              figures: dict[str, float] | None = None, cost=None) -> None:
    """Write the netlist's macro and port positions as a .plc file (atomically), keeping the header's
    lines and updating its settings and any `figures` given (e.g. {"Wirelength cost": 0.07}).

    With `cost` (a ProxyCost of this netlist and header) the figures Wirelength, Wirelength cost,
    Density cost, Congestion cost and Proxy cost of this placement are computed and the header gets
    the reference tool's four ASCII pictures (hard macros, density, H and V congestion)."""
    figures = dict(figures or {})
    pictures: list[str] = []
    if cost is not None:
        x, y, o = netlist.x, netlist.y, netlist.orient
        terms = cost.evaluate(x, y, o)
        figures = {"Wirelength": cost.hpwl(x, y, o), "Wirelength cost": terms.wirelength,
                   "Density cost": terms.density, "Congestion cost": terms.congestion,
                   "Proxy cost": terms.proxy, **figures}
        g = cost.grid
        h, v = cost.congestion_maps(x, y, o)
        pictures = (ascii_map("Hard Macro Placements:",
                              cost.area_map(cost.hard, x, y, o) / (g.cell_width * g.cell_height))
                    + ascii_map("Overall Placement Density:", cost.density_map(x, y, o))
                    + ascii_map("Horizontal Routing Congestion:", h)
                    + ascii_map("Vertical Routing Congestion:", v))
    want = _canonical_lines(header, figures)
    done: set[str] = set()
    lines: list[str] = []
    in_map = False
    map_at: int | None = None
    for line in header.lines or [" Placement file for Circuit Training"]:
        body = line.strip()
        if body.startswith("node_index"):
            continue
        if body.endswith(_MAP_TITLES):
            in_map = True  # a picture of the old placement: stale once positions change
            map_at = len(lines) if map_at is None else map_at
            continue
        if in_map and (not body or body[0] in "|-0123456789"):
            continue
        in_map = False
        m = _KEYED.match(body)
        key = m.group(1).strip() if m else None
        if key is not None and key.startswith("Area"):
            key = "Area" if "Area" in want else key
        if key in want:
            if key not in done:
                lines.append(want[key])
                done.add(key)
            continue
        if body.startswith("Blockage"):
            continue  # rewritten from header.blockages below
        lines.append(line)
    lines += [want[k] for k in want if k not in done]
    lines += [f" Blockage : {' '.join(_fmt(v) for v in b)}" for b in header.blockages]
    at = len(lines) if map_at is None else map_at
    lines[at:at] = pictures
    lines.append(" node_index x y orientation fixed")
    out = ["#" + ln if ln.startswith(" ") or not ln else "# " + ln for ln in lines]
    rows = np.flatnonzero(np.isin(netlist.kind, (NodeKind.HARD_MACRO, NodeKind.SOFT_MACRO, NodeKind.PORT)))
    for i in rows:
        orient = "-" if netlist.kind[i] == NodeKind.PORT else ORIENTATIONS[netlist.orient[i]]
        out.append(f"{i} {_fmt(netlist.x[i])} {_fmt(netlist.y[i])} {orient} {int(netlist.fixed[i])}")
    atomic_write_text(path, "\n".join(out) + "\n")
