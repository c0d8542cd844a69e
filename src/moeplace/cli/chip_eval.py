"""`moeplace place chip eval`: score a given placement (no search) with the proxy cost.

    moeplace place chip eval --netlist netlist.pb.txt.gz --plc placement.plc [--settings tilos] [--json]

Prints wirelength, density, congestion, proxy cost and HPWL of the placement under the chosen
settings, beside the figures the .plc header states (those the tool that wrote it computed).
Its grid, routing and cost options are those of `place chip` (cli/chip_settings.py).
"""

from __future__ import annotations

import argparse

from moeplace.cli.args import nonneg_int, positive_int
from moeplace.cli.chip_settings import add_cost_options, add_routing_options


def register(actions: argparse._SubParsersAction) -> None:
    """Register `place chip eval`."""
    p = actions.add_parser("eval", help="score a placement (.plc) without searching",
                           description=__doc__.splitlines()[0])
    p.add_argument("--netlist", required=True, help="Circuit Training netlist (.pb.txt[.gz]) or Bookshelf")
    p.add_argument("--plc", required=True, help="the placement to score (.plc); its header gives the grid")
    p.add_argument("--columns", type=positive_int, default=None,
                   help="grid columns (default: the .plc header's)")
    p.add_argument("--rows", type=positive_int, default=None, help="grid rows (default: the .plc header's)")
    add_routing_options(p)
    add_cost_options(p)
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (the evaluation uses none)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate the placement and print the table (and the JSON line)."""
    from moeplace.cli.chip_settings import load_design
    from moeplace.place.chip.cost import ProxyCost
    from moeplace.utils import markdown_table, print_json_line, seed_everything

    seed_everything(args.seed)
    netlist, header, _ = load_design(args)  # applies the routing and cost options
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
