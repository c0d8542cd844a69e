"""A netlist's canvas and grid: what its file states, the default canvas and header when there is no
.plc (Circuit Training's gridding picks the grid), and the check of a .plc header against them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from moeplace.errors import InputError
from moeplace.place.chip.netlist import Netlist
from moeplace.place.chip.plc import _NUM, PlcHeader


def netlist_sizes(netlist: Netlist) -> dict[str, tuple[float, float]]:
    """Canvas and grid a netlist states: its metadata canvas, and the leading comment lines of its
    file as Circuit Training reads them (`FP bbox: {x0 y0} {x1 y1}`, `Width : w  Height : h`,
    `Columns : c  Rows : r`)."""
    out: dict[str, tuple[float, float]] = {}
    if netlist.canvas is not None:
        out["canvas"] = (float(netlist.canvas[0]), float(netlist.canvas[1]))
    path = Path(netlist.source) if netlist.source else None
    if path is None or not path.is_file() or path.suffix == ".aux":
        return out
    import gzip

    try:
        with (gzip.open(path, "rt", errors="replace") if path.suffix == ".gz"
              else path.open(encoding="utf-8", errors="replace")) as f:
            for _, line in zip(range(200), f):
                if not line.startswith("#"):
                    break
                m = re.search(rf"FP bbox:\s*\{{{_NUM}\s+{_NUM}\}}\s*\{{{_NUM}\s+{_NUM}\}}", line)
                m2 = re.search(rf"Width\s*:\s*{_NUM}\s+Height\s*:\s*{_NUM}", line)
                m3 = re.search(rf"(?<![A-Za-z] )Columns\s*:\s*{_NUM}\s+Rows\s*:\s*{_NUM}", line)
                if m:
                    out["canvas"] = (float(m.group(3)), float(m.group(4)))
                elif m2:
                    out["canvas"] = (float(m2.group(1)), float(m2.group(2)))
                elif m3:
                    out["grid"] = (float(m3.group(1)), float(m3.group(2)))
    except (OSError, EOFError, ValueError):
        pass  # the netlist reader reports unreadable files itself
    return out


def check_header_against_netlist(netlist: Netlist, header: PlcHeader, source: str) -> None:
    """InputError (file:line) where the .plc's canvas or grid disagrees with what the netlist states."""
    sizes = netlist_sizes(netlist)
    where = netlist.source or "the netlist"
    if "canvas" in sizes and header.field_lines.get("width"):
        w, h = sizes["canvas"]
        if any(abs(a - b) > max(1e-3, 1e-6 * abs(b)) for a, b in ((header.width, w), (header.height, h))):
            raise InputError(f"{source}:{header.field_lines['width']}: canvas {header.width:g} x "
                             f"{header.height:g} disagrees with the netlist's {w:g} x {h:g} ({where})")
    if "grid" in sizes and header.field_lines.get("columns"):
        c, r = sizes["grid"]
        if (header.columns, header.rows) != (int(c), int(r)):
            raise InputError(f"{source}:{header.field_lines['columns']}: grid {header.columns} x "
                             f"{header.rows} disagrees with the netlist's {int(c)} x {int(r)} ({where})")


def default_canvas(netlist: Netlist, utilization: float = 0.6) -> tuple[float, float]:
    """The netlist's own canvas, else a square holding its cell area at `utilization`, grown to
    reach every (fixed) port. The cell area is the hard macros' plus the soft macros' divided by the
    netlist's `soft_macro_area_bloating_ratio` (Circuit Training's grouping bloats soft macros)."""
    if netlist.canvas is not None:
        return float(netlist.canvas[0]), float(netlist.canvas[1])
    if not 0 < utilization <= 1:
        raise InputError(f"utilization must be in (0, 1], got {utilization}")
    try:
        bloat = float(netlist.metadata.get("soft_macro_area_bloating_ratio", 1.0))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        bloat = 1.0
    bloat = bloat if np.isfinite(bloat) and bloat > 0 else 1.0
    hard, soft = netlist.hard_macros, netlist.soft_macros
    area = float(np.sum(netlist.width[hard] * netlist.height[hard])
                 + np.sum(netlist.width[soft] * netlist.height[soft]) / bloat)
    width = height = float(np.sqrt(max(area, 1e-9) / utilization))
    ports = netlist.ports  # ports are fixed: the canvas must reach them
    if len(ports):
        width = max(width, float(netlist.x[ports].max()))
        height = max(height, float(netlist.y[ports].max()))
    return width, height


def default_header(netlist: Netlist, columns: int | None = None, rows: int | None = None,
                   width: float | None = None, height: float | None = None,
                   utilization: float = 0.6) -> PlcHeader:
    """A header for a netlist without a .plc: the canvas given, else `default_canvas`; the grid given,
    else the one Circuit Training's gridding picks (`gridding.choose_grid`, which also fills in a
    missing `columns` or `rows`); Circuit Training's default routing settings."""
    if width is None or height is None:
        width, height = default_canvas(netlist, utilization)
    if columns is None or rows is None:
        from moeplace.place.chip.gridding import choose_grid  # gridding builds on cost, which imports plc

        choice = choose_grid(netlist, float(width), float(height), columns=columns, rows=rows)
        columns, rows = choice.columns, choice.rows
    header = PlcHeader(columns=int(columns), rows=int(rows), width=float(width), height=float(height))
    header.validate()
    return header
