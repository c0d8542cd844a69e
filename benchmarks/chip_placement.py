"""Chip macro placement benchmark: RL (PPO), simulated annealing and the reference placement side by side.

Ariane133 (133 hard macros, 782 soft macros) with the grid and routing settings of its legalized
.plc header: the reference placement's proxy cost (its header: 0.0736 + 0.5*0.4988 + 0.5*0.7259 =
0.686), simulated annealing started from the reference placement snapped to the grid, simulated
annealing from scratch (random legal macro placement, soft macros from the canvas centre) and
PPO from scratch, each for the same wall-time budget, with the cost evaluations each used.
ibm01 (Bookshelf, 246 hard macros) on a 48x48 grid: macro HPWL of SA and RL at a shorter budget.
A third section scores Ariane133 in the settings of the published TILOS MacroPlacement tables
(smoothing 2, congestion on the placement grid, weights 1 / 0.5 / 0.5; `settings.PRESETS["tilos"]`):
the reference placement, SA and RL from scratch, beside the published SA 0.7552 and CT 0.857.

    OPENBLAS_NUM_THREADS=1 python benchmarks/chip_placement.py --budget 10m --ibm-budget 2m \
        --published-budget 10m

The last line is one JSON line with every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: tiny matrices, BLAS threads only spin

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from moeplace.data import CHIP_DIR  # noqa: E402
from moeplace.place.chip.agent import train_chip_rl  # noqa: E402
from moeplace.place.chip.anneal import anneal_chip  # noqa: E402
from moeplace.place.chip.bookshelf import load_bookshelf  # noqa: E402
from moeplace.place.chip.cost import ProxyCost  # noqa: E402
from moeplace.place.chip.netlist import Netlist, NodeKind, load_netlist, pin_positions  # noqa: E402
from moeplace.place.chip.plc import load_placement  # noqa: E402
from moeplace.place.chip.problem import ChipProblem  # noqa: E402
from moeplace.place.chip.settings import preset  # noqa: E402
from moeplace.place.search import parse_budget, random_rollout  # noqa: E402
from moeplace.utils import markdown_table, print_json_line, seed_everything  # noqa: E402

# Published proxy costs on Ariane133 (NanGate45), from the TILOS MacroPlacement evaluation
# (Cheng et al., ISPD 2023); not measured here, and their soft-macro placement and flows differ.
ANCHORS = {
    "circuit_training": (0.857, "Circuit Training RL, as re-run by TILOS MacroPlacement (8 V100 GPUs, "
                                "hundreds of CPU workers)"),
    "circuit_training_3x": (0.809, "Circuit Training with 3x the training (same evaluation)"),
    "tilos_sa": (0.7552, "TILOS MacroPlacement simulated annealing"),
}


def row(name: str, terms: dict[str, float], evaluations: int, wall_s: float, **extra) -> dict:
    """One table row."""
    return {"placement": name, "wirelength": round(terms["wirelength"], 4),
            "density": round(terms["density"], 4), "congestion": round(terms["congestion"], 4),
            "proxy": round(terms["proxy"], 4),
            "evaluations": int(evaluations), "wall_s": round(wall_s, 1), **extra}


def macro_hpwl(netlist: Netlist, x: np.ndarray, y: np.ndarray, orient: np.ndarray) -> float:
    """Weighted HPWL of the nets among hard macros: each net restricted to its hard-macro pins
    (nets with at least two of them)."""
    px, py = pin_positions(netlist, x, y, orient)
    total = 0.0
    hard_pin = netlist.kind == NodeKind.HARD_MACRO_PIN
    for m in range(netlist.num_nets):
        pins = netlist.net_pins[netlist.net_ptr[m]:netlist.net_ptr[m + 1]]
        pins = pins[hard_pin[pins]]
        if len(pins) >= 2:
            total += netlist.net_weight[m] * (np.ptp(px[pins]) + np.ptp(py[pins]))
    return float(total)


def ariane(budget_s: float, seed: int) -> tuple[list[dict], dict]:
    """Reference, SA (from the reference), SA (from scratch) and RL (from scratch) on Ariane133."""
    path = CHIP_DIR / "ariane133"
    netlist = load_netlist(path / "netlist.pb.txt.gz")
    header = load_placement(netlist, path / "legalized.plc")
    ref = ProxyCost(netlist, header).evaluate().as_dict()
    rows = [row("reference (legalized.plc)", ref, 1, 0.0)]
    print(f"ariane133: reference proxy {ref['proxy']:.4f} (header figures: wirelength "
          f"{header.figures.get('Wirelength cost')}, density {header.figures.get('Density cost')}, "
          f"congestion {header.figures.get('Congestion cost')})", flush=True)

    problem = ChipProblem(netlist, header, orientations=True, soft="fixed")
    sa = anneal_chip(problem, budget_s=budget_s, seed=seed)
    assert problem.is_legal(sa.placement)
    rows.append(row("SA from reference", sa.terms, sa.evaluations, sa.wall_s))
    print(markdown_table(rows[-1:]), flush=True)

    sa0 = _sa_from_scratch(netlist, header, budget_s, seed, rows)
    rl = _rl_from_scratch(netlist, header, budget_s, seed, rows)
    best = min(sa.cost, sa0.cost, rl.cost)
    figures = {"reference_proxy": ref["proxy"], "sa_proxy": sa.cost, "sa_scratch_proxy": sa0.cost,
               "rl_proxy": rl.cost, "sa_evaluations": sa.evaluations,
               "sa_scratch_evaluations": sa0.evaluations, "rl_evaluations": rl.evaluations,
               "best_proxy": best, "best_over_reference": best / ref["proxy"]}
    return rows, figures


def _sa_from_scratch(netlist, header, budget_s: float, seed: int, rows: list[dict]):
    """Simulated annealing from a random legal placement (soft macros from the centre); adds its row."""
    problem = ChipProblem(netlist, header, orientations=True, soft="fixed", soft_start="center")
    start = random_rollout(problem, np.random.default_rng(seed))
    res = anneal_chip(problem, budget_s=budget_s, seed=seed, init=start)
    assert problem.is_legal(res.placement)
    rows.append(row("SA from scratch", res.terms, res.evaluations, res.wall_s))
    print(markdown_table(rows[-1:]), flush=True)
    return res


def _rl_from_scratch(netlist, header, budget_s: float, seed: int, rows: list[dict]):
    """PPO from an untrained policy (no `init_weights`); adds its row."""
    problem = ChipProblem(netlist, header, soft="fd", fd_iterations=10)
    res = train_chip_rl(problem, budget_s=budget_s, seed=seed)
    assert problem.is_legal(res.placement)
    rows.append(row("RL (PPO) from scratch", res.terms, res.evaluations, res.wall_s))
    print(markdown_table(rows[-1:]), flush=True)
    return res


def ariane_published(budget_s: float, seed: int, rl: bool = True) -> tuple[list[dict], dict]:
    """Ariane133 in TILOS MacroPlacement's published settings: reference, SA and RL from scratch."""
    path = CHIP_DIR / "ariane133"
    netlist = load_netlist(path / "netlist.pb.txt.gz")
    header = preset(load_placement(netlist, path / "legalized.plc"), "tilos")
    ref = ProxyCost(netlist, header).evaluate().as_dict()
    rows = [row("reference (legalized.plc)", ref, 1, 0.0)]
    sa = _sa_from_scratch(netlist, header, budget_s, seed, rows)
    figures = {"published_settings": "tilos: placement-grid congestion, smoothing 2, weights 1/0.5/0.5",
               "published_reference_proxy": ref["proxy"], "published_sa_scratch_proxy": sa.cost,
               "published_sa_scratch_evaluations": sa.evaluations}
    if rl:
        res = _rl_from_scratch(netlist, header, budget_s, seed, rows)
        figures.update(published_rl_proxy=res.cost, published_rl_evaluations=res.evaluations)
    return rows, figures


def ibm01(budget_s: float, seed: int, grid: int) -> tuple[list[dict], dict]:
    """Macro HPWL of SA and RL on ibm01 (soft macros = standard cells kept at their .pl positions)."""
    netlist, header = load_bookshelf(CHIP_DIR / "ibm01" / "ibm01.aux")
    header.columns = header.rows = grid
    base = macro_hpwl(netlist, netlist.x, netlist.y, netlist.orient)
    terms = ProxyCost(netlist, header).evaluate().as_dict()
    rows = [row("input .pl", terms, 1, 0.0, macro_hpwl=round(base))]
    problem = ChipProblem(netlist, header, orientations=True, soft="fixed")
    sa = anneal_chip(problem, budget_s=budget_s, seed=seed, fd_iterations=0)
    x, y, o = problem.full_positions(sa.placement)
    sa_hpwl = macro_hpwl(netlist, x, y, o)
    rows.append(row("SA", sa.terms, sa.evaluations, sa.wall_s, macro_hpwl=round(sa_hpwl)))
    print(markdown_table(rows[-1:]), flush=True)
    problem = ChipProblem(netlist, header, soft="fd", fd_iterations=0)
    rl = train_chip_rl(problem, budget_s=budget_s, seed=seed)
    x, y, o = problem.full_positions(rl.placement)
    rl_hpwl = macro_hpwl(netlist, x, y, o)
    rows.append(row("RL (PPO)", rl.terms, rl.evaluations, rl.wall_s, macro_hpwl=round(rl_hpwl)))
    print(markdown_table(rows[-1:]), flush=True)
    return rows, {"ibm01_input_macro_hpwl": base, "ibm01_sa_macro_hpwl": sa_hpwl,
                  "ibm01_rl_macro_hpwl": rl_hpwl, "ibm01_sa_proxy": sa.cost, "ibm01_rl_proxy": rl.cost,
                  "ibm01_sa_evaluations": sa.evaluations, "ibm01_rl_evaluations": rl.evaluations,
                  "ibm01_grid": grid}


def main() -> None:
    """Run both benchmarks and print tables, ratios and the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="10m", help="wall time per method on Ariane133 (e.g. 10m, 1h)")
    ap.add_argument("--ibm-budget", default="2m", help="wall time per method on ibm01 (0 skips ibm01)")
    ap.add_argument("--ibm-grid", type=int, default=48, help="grid columns = rows on ibm01")
    ap.add_argument("--published-budget", default="10m",
                    help="wall time per method on Ariane133 in TILOS's published settings (0 skips)")
    ap.add_argument("--published-rl", action=argparse.BooleanOptionalAction, default=True,
                    help="also run RL in the published settings (default: yes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seed_everything(args.seed)
    os.environ.setdefault("MOEPLACE_NO_PROGRESS", "1")
    t0 = time.perf_counter()
    figures: dict = {"seed": args.seed}
    if args.budget not in ("0", "0s"):
        rows, main_figures = ariane(parse_budget(args.budget), args.seed)
        figures.update(main_figures, budget=args.budget)
        print("\n## Ariane133 (24x21 grid, settings of legalized.plc), budget per method:", args.budget)
        print(markdown_table(rows))
        ref = figures["reference_proxy"]
        for name, key in (("SA from reference", "sa_proxy"), ("SA from scratch", "sa_scratch_proxy"),
                          ("RL from scratch", "rl_proxy")):
            print(f"{name}: proxy / reference = {figures[key] / ref:.4f}")
    figures.update({f"anchor_{k}": v for k, (v, _) in ANCHORS.items()})
    if args.published_budget not in ("0", "0s"):
        pub_rows, pub = ariane_published(parse_budget(args.published_budget), args.seed, args.published_rl)
        print("\n## Ariane133 in TILOS MacroPlacement's published settings (24x21 grid, congestion on the "
              "placement grid, smoothing 2, weights 1/0.5/0.5), budget per method:", args.published_budget)
        print(markdown_table(pub_rows))
        for key in ("published_sa_scratch_proxy", "published_rl_proxy"):
            if key in pub:
                print(f"{key}: {pub[key]:.4f}; / TILOS SA 0.7552 = {pub[key] / 0.7552:.4f}; "
                      f"/ CT 0.857 = {pub[key] / 0.857:.4f}")
        figures.update(pub, published_budget=args.published_budget)
    print("published anchors (not measured here; their netlist is another clustering of Ariane133):")
    for key, (value, what) in ANCHORS.items():
        print(f"  {key}: {value} ({what})")
    if args.ibm_budget not in ("0", "0s"):
        ibm_rows, ibm = ibm01(parse_budget(args.ibm_budget), args.seed, args.ibm_grid)
        grid = f"{args.ibm_grid}x{args.ibm_grid}"
        print(f"\n## ibm01 (Bookshelf, {grid} grid), budget per method:", args.ibm_budget)
        print(markdown_table(ibm_rows))
        print(f"macro HPWL SA / RL = {ibm['ibm01_sa_macro_hpwl'] / ibm['ibm01_rl_macro_hpwl']:.4f}")
        figures.update(ibm, ibm_budget=args.ibm_budget)
    figures["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print_json_line(figures)


if __name__ == "__main__":
    main()
