"""`moeplace place chip eval`: score a given placement (no search) with the proxy cost.

    moeplace place chip eval --netlist netlist.pb.txt.gz --plc placement.plc [--settings tilos] [--json]

Prints wirelength, density, congestion, proxy cost and HPWL of the placement under the chosen
settings, beside the figures the .plc header states (those the tool that wrote it computed).
`add_cost_options` / `apply_cost_options` give `place chip` the same cost options.
"""

from __future__ import annotations

import argparse


def add_cost_options(p: argparse.ArgumentParser, smoothing: bool = False) -> None:
    """The proxy-cost setting options (congestion grid, weights; optionally smoothing and presets)."""
    if smoothing:
        p.add_argument("--settings", choices=["reference", "tilos", "ct"], default="reference",
                       help="preset: reference = the .plc header as written (default); tilos = placement "
                            "grid, smoothing 2, weights 1/0.5/0.5 (TILOS MacroPlacement's tables); ct = "
                            "Circuit Training's current defaults (own congestion grid, smoothing 5, 1/1/0.5)")
        p.add_argument("--smoothing", type=float, default=None,
                       help="congestion smoothing range (default: the preset's, else the .plc header's)")
    p.add_argument("--congestion-grid", default=None, metavar="MODE",
                   help="grid congestion is computed on: header (the .plc's, default), placement, ct "
                        "(Circuit Training's separate grid from --routes-per-congestion-grid) or CxR")
    p.add_argument("--routes-per-congestion-grid", type=float, default=1000.0,
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


def register(actions: argparse._SubParsersAction) -> None:
    """Register `place chip eval`."""
    p = actions.add_parser("eval", help="score a placement (.plc) without searching",
                           description=__doc__.splitlines()[0])
    p.add_argument("--netlist", required=True, help="Circuit Training netlist (.pb.txt[.gz]) or Bookshelf")
    p.add_argument("--plc", required=True, help="the placement to score (.plc); its header gives the grid")
    p.add_argument("--columns", type=int, default=None, help="grid columns (default: the .plc header's)")
    p.add_argument("--rows", type=int, default=None, help="grid rows (default: the .plc header's)")
    add_cost_options(p, smoothing=True)
    p.add_argument("--seed", type=int, default=0, help="random seed (the evaluation uses none)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate the placement and print the table (and the JSON line)."""
    from moeplace.cli.place_chip import _load
    from moeplace.place.chip.cost import ProxyCost
    from moeplace.utils import markdown_table, print_json_line, seed_everything

    seed_everything(args.seed)
    netlist, header = _load(args)  # applies the cost options
    pc = ProxyCost(netlist, header)
    terms = pc.evaluate().as_dict()
    hpwl = pc.hpwl()
    rows = [{"placement": str(args.plc), **{k: round(v, 5) for k, v in terms.items()}, "hpwl": f"{hpwl:.1f}"}]
    ref = header.figures
    keys = {"wirelength": "Wirelength cost", "density": "Density cost", "congestion": "Congestion cost",
            "proxy": "Proxy cost", "hpwl": "Wirelength"}
    reference = {k: ref[v] for k, v in keys.items() if v in ref}
    if reference:
        shown = {k: (f"{v:.1f}" if k == "hpwl" else v) for k, v in reference.items()}
        rows.append({"placement": "figures in its header", **{k: shown.get(k, "") for k in keys}})
    g, cg = pc.grid, pc.cgrid
    settings = {"grid": f"{g.columns}x{g.rows}", "congestion_grid": f"{cg.columns}x{cg.rows}",
                "smoothing": pc.smoothing, "weights": list(pc.weights)}
    print(markdown_table(rows))
    print(f"settings: grid {settings['grid']}, congestion grid {settings['congestion_grid']}, smoothing "
          f"{pc.smoothing}, weights {'/'.join(f'{w:g}' for w in pc.weights)}")
    if args.json:
        print_json_line({"netlist": str(args.netlist), "plc": str(args.plc), **terms, "hpwl": hpwl,
                         "settings": settings, "header_figures": reference})
    return 0
