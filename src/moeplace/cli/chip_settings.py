"""Grid, canvas and routing settings of `place chip` actions: their options, and how they combine
with a .plc header and the netlist (option > .plc header > netlist > automatic choice).

`add_routing_options(parser)` / `routing_from_args(header, args)` register and apply the routing
options, `add_cost_options` / `apply_cost_options` the proxy-cost settings (preset, congestion grid,
weights); `load_design(args)` reads the netlist (and .plc) and settles every setting, choosing the
grid by Circuit Training's gridding when neither the options nor the .plc give one.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from moeplace.cli.args import finite_float, nonneg_int, positive_float, positive_int

# option, PlcHeader field, what it is (defaults: PlcHeader's, Circuit Training's create_placement_cost)
ROUTING_OPTIONS = (
    ("--hroutes-per-micron", "hroutes_per_micron", "horizontal routing tracks per micron", 70.33),
    ("--vroutes-per-micron", "vroutes_per_micron", "vertical routing tracks per micron", 74.51),
    ("--hrouting-alloc", "hrouting_alloc", "horizontal tracks per micron a hard macro takes", 51.79),
    ("--vrouting-alloc", "vrouting_alloc", "vertical tracks per micron a hard macro takes", 51.79),
    ("--smoothing", "smoothing", "congestion smoothing range in cells", 2),
)
_HEADER_KEYS = {"hroutes_per_micron": "Routes per micron", "vroutes_per_micron": "Routes per micron",
                "hrouting_alloc": "Routes used by macros", "vrouting_alloc": "Routes used by macros",
                "smoothing": "Smoothing factor"}


def add_routing_options(parser: argparse.ArgumentParser) -> None:
    """Register the routing options (each defaults to the .plc header, else Circuit Training's value)."""
    group = parser.add_argument_group("routing settings (default: the .plc header, else Circuit Training's)")
    for flag, field, what, default in ROUTING_OPTIONS:
        kind = nonneg_int if field == "smoothing" else finite_float  # ranges: routing_from_args
        group.add_argument(flag, dest=field, type=kind, default=None, metavar="N",
                           help=f"{what} (default: .plc header, else {default})")


def _in_header(header, field: str) -> bool:
    """True when the header's own lines set this routing field."""
    key = _HEADER_KEYS[field]
    return any(line.strip().startswith(key) for line in header.lines)


def routing_from_args(header, args: argparse.Namespace) -> dict[str, str]:
    """Set the routing options given on the header (in place); return where each setting came from
    ('option', 'plc' or 'default'). InputError names an option with an impossible value."""
    from moeplace.errors import InputError

    sources = {}
    for flag, field, _, _ in ROUTING_OPTIONS:
        value = getattr(args, field, None)
        if value is None:
            sources[field] = "plc" if _in_header(header, field) else "default"
            continue
        if not math.isfinite(value):
            raise InputError(f"{flag}: must be a finite number, got {value}")
        if field.endswith("routes_per_micron") and value <= 0:
            raise InputError(f"{flag}: must be > 0, got {value:g}")
        if value < 0:
            raise InputError(f"{flag}: must be >= 0, got {value:g}")
        setattr(header, field, float(value))
        sources[field] = "option"
    return sources


def add_cost_options(p: argparse.ArgumentParser) -> None:
    """The proxy-cost setting options: a preset, the congestion grid, the cost weights."""
    p.add_argument("--settings", choices=["reference", "tilos", "ct"], default="reference",
                   help="preset: reference = the .plc header as written (default); tilos = placement "
                        "grid, smoothing 2, weights 1/0.5/0.5 (TILOS MacroPlacement's tables); ct = "
                        "Circuit Training's current defaults (own congestion grid, smoothing 5, 1/1/0.5); "
                        "explicit options override it")
    p.add_argument("--congestion-grid", default=None, metavar="MODE",
                   help="grid congestion is computed on: header (the .plc's, default), placement, ct "
                        "(Circuit Training's separate grid from --routes-per-congestion-grid) or CxR")
    p.add_argument("--routes-per-congestion-grid", type=positive_float, default=1000.0,
                   help="routes through one congestion cell, for --congestion-grid ct (default 1000)")
    p.add_argument("--weights", default=None, metavar="W",
                   help="cost weights: google = 1,0.5,0.5 (default), ct = 1,1,0.5, or 'w,d,c'")


def _grid_mode(text: str):
    """'header' | 'placement' | 'ct' | (columns, rows) from 'CxR'."""
    from moeplace.errors import InputError

    if text in ("header", "placement", "ct"):
        return text
    try:
        c, r = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--congestion-grid: want header, placement, ct or CxR (e.g. 81x81), got {text!r}") \
            from None
    return c, r


def apply_cost_options(args: argparse.Namespace, header):
    """The header with the cost options of `args` applied (a preset first, then explicit options)."""
    from moeplace.place.chip.settings import preset, with_settings

    rpg = getattr(args, "routes_per_congestion_grid", 1000.0)
    header = preset(header, getattr(args, "settings", "reference"), rpg)
    grid = getattr(args, "congestion_grid", None)
    return with_settings(header, congestion_grid=_grid_mode(grid) if grid else "header",
                         routes_per_congestion_grid=rpg, smoothing=getattr(args, "smoothing", None),
                         weights=getattr(args, "weights", None))


def add_grid_options(parser: argparse.ArgumentParser) -> None:
    """Register --columns, --rows and --canvas."""
    parser.add_argument("--columns", type=positive_int, default=None,
                        help="grid columns (default: .plc header, else chosen by gridding)")
    parser.add_argument("--rows", type=positive_int, default=None,
                        help="grid rows (default: .plc header, else chosen by gridding)")
    parser.add_argument("--canvas", default=None, metavar="WxH",
                        help="canvas width x height in microns, e.g. 1433.4x1433.4 (default: .plc header, "
                             "else the netlist's, else a square at 60%% utilisation)")


def _parse_canvas(text: str) -> tuple[float, float]:
    """'WxH' (or 'W,H') as two positive finite floats."""
    from moeplace.errors import InputError

    parts = text.lower().replace(",", "x").split("x")
    try:
        w, h = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"--canvas: want WIDTHxHEIGHT in microns, e.g. 1000x800, got {text!r}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise InputError(f"--canvas: width and height must be positive, got {text!r}")
    return w, h


def _header_sets(header, key: str) -> bool:
    """True when the header's own lines hold this key (e.g. 'Columns', 'Width')."""
    return any(line.strip().startswith(key) for line in header.lines)


def load_design(args: argparse.Namespace):
    """Netlist, header and a settings dict from --netlist, --plc and the grid/canvas/routing options.

    Grid: --columns/--rows, else the .plc header's, else Circuit Training's gridding (which also fills
    in whichever of the two was not given). Canvas: --canvas, else the .plc header's, else the
    netlist's, else a square at 60% utilisation (Bookshelf: the row area)."""
    from moeplace.errors import InputError
    from moeplace.place.chip.canvas import default_canvas
    from moeplace.place.chip.gridding import check_canvas, choose_grid
    from moeplace.place.chip.netlist import load_netlist
    from moeplace.place.chip.plc import PlcHeader, load_placement

    columns, rows = getattr(args, "columns", None), getattr(args, "rows", None)
    for flag, value in (("--columns", columns), ("--rows", rows)):
        if value is not None and value < 1:
            raise InputError(f"{flag}: must be >= 1, got {value}")
    canvas = _parse_canvas(args.canvas) if getattr(args, "canvas", None) else None
    path = Path(args.netlist)
    plc = getattr(args, "plc", None)
    base: tuple[float, float] | None = None
    if path.suffix == ".aux":
        from moeplace.place.chip.bookshelf import load_bookshelf

        netlist, header = load_bookshelf(path)  # its grid is the reader's default, not the file's
        base = (header.width, header.height)
    else:
        netlist, header = load_netlist(path), PlcHeader()
    grid_from = ""
    if plc:
        header = load_placement(netlist, plc)
        grid_from = "plc" if _header_sets(header, "Columns") else ""
    if canvas is not None:
        (header.width, header.height), canvas_from = canvas, "option"
    elif plc and _header_sets(header, "Width"):
        canvas_from = "plc"
    elif base is not None:
        (header.width, header.height), canvas_from = base, "bookshelf rows"
    else:
        header.width, header.height = default_canvas(netlist)
        canvas_from = "netlist" if netlist.canvas is not None else "cell area at 60% utilisation"
    gridding = None
    if columns is not None and rows is not None:
        header.columns, header.rows, grid_from = columns, rows, "option"
    elif grid_from == "plc":
        header.columns = columns or header.columns
        header.rows = rows or header.rows
        grid_from = "option" if columns or rows else "plc"
    else:
        gridding = choose_grid(netlist, header.width, header.height, header.blockages, columns=columns,
                               rows=rows, show_progress=True)
        header.columns, header.rows, grid_from = gridding.columns, gridding.rows, "gridding"
    header.validate(plc or str(path))
    check_canvas(netlist, header.width, header.height)
    routing = routing_from_args(header, args)
    header = apply_cost_options(args, header)  # a preset, then explicit cost options (smoothing again)
    settings = {"columns": header.columns, "rows": header.rows, "grid_from": grid_from,
                "width": header.width, "height": header.height, "canvas_from": canvas_from,
                **{field: getattr(header, field) for _, field, _, _ in ROUTING_OPTIONS},
                "routing_from": routing, "gridding": gridding.as_dict() if gridding else None,
                "preset": getattr(args, "settings", "reference"), "weights": list(header.weights),
                "congestion_grid": getattr(args, "congestion_grid", None) or "header"}
    return netlist, header, settings


def describe(settings: dict) -> list[str]:
    """The settings as lines for the terminal."""
    s = settings
    grid = f"grid: {s['columns']} x {s['rows']} ({s['grid_from']}"
    g = s.get("gridding")
    if g:
        best, chosen = g["best"], g["chosen"]
        grid += (f": {g['packed']} of {g['tried']} grids pack the hard macros; score "
                 f"{chosen['metric']:.4f}, the most per cell within {100 * g['tolerance']:g}% of the best, "
                 f"{best['metric']:.4f} on {best['columns']} x {best['rows']}"
                 + ("; bounds widened" if g["relaxed"] else ""))
    grid += ")"
    src = sorted(set(s["routing_from"].values()))
    return [grid, f"canvas: {s['width']:.7g} x {s['height']:.7g} ({s['canvas_from']})",
            f"routing: {s['hroutes_per_micron']:g} / {s['vroutes_per_micron']:g} routes per micron H/V, "
            f"{s['hrouting_alloc']:g} / {s['vrouting_alloc']:g} macro allocation H/V, smoothing "
            f"{s['smoothing']:g} ({', '.join(src)})",
            f"cost: weights {'/'.join(f'{w:g}' for w in s['weights'])}, congestion grid "
            f"{s['congestion_grid']}, preset {s['preset']}"]
