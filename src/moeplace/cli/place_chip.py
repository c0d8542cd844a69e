"""`moeplace place chip`: place a netlist's hard macros with RL (PPO) and/or simulated annealing.

    moeplace place chip --netlist netlist.pb.txt --plc initial.plc --method sa --budget 10m \\
        --out placement.plc --png placement.png

Prints wirelength, density, congestion and proxy cost of the input placement and of each method's
best placement (with the cost evaluations it used and its wall time), writes the best placement
(the input itself when no method beat it) as a .plc file and draws it as a PNG. Ctrl-C stops the
search and still writes the best so far.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from moeplace.cli.args import (
    duration,
    duration_or_off,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
)
from moeplace.cli.chip_settings import (
    add_cost_options,
    add_grid_options,
    add_routing_options,
    describe,
    load_design,
)

# `place chip ACTION ...`: each action lives in its own module defining `register(actions)`;
# without an action, `place chip --netlist ...` places the netlist.
_ACTIONS = ["moeplace.cli.chip_eval", "moeplace.cli.chip_generate", "moeplace.cli.chip_pretrain"]
ZERO_SHOT_MAX_S = 60.0  # zero-shot sampling never takes more than this by default (the issue: <= 60 s)
# RL improvement mode: logits on each macro's cell of the best placement so far (docs/chip.md,
# "Improvement mode"; chosen on validation designs, never on Ariane133)
INCUMBENT_LOGIT = 5.0


def register(sub: argparse._SubParsersAction) -> None:
    """Register the `place chip` subcommand."""
    p = sub.add_parser("chip", help="chip macro placement (Circuit Training netlists, Bookshelf)",
                       description=__doc__.splitlines()[0])
    p.add_argument("--netlist", default=None,
                   help="Circuit Training netlist (.pb.txt, optionally .gz) or Bookshelf .aux (required)")
    p.add_argument("--plc", default=None,
                   help=".plc placement: input positions, and grid/routing settings from its header")
    p.add_argument("--method", choices=["sa", "rl", "both", "rl+sa"], default="sa",
                   help="simulated annealing, RL (PPO), both one after the other, or rl+sa (RL for half "
                        "the budget, then annealing from its best placement) (default: sa)")
    p.add_argument("--budget", type=duration, default=60.0,
                   help="wall time per method, e.g. 90s, 30m, 1h (default 60s)")
    p.add_argument("--out", default="placement.plc", help="where to write the best placement (.plc)")
    p.add_argument("--png", default=None, help="also draw the best placement to this PNG")
    p.add_argument("--congestion-map", action="store_true", help="draw the congestion heat map in the PNG")
    add_grid_options(p)
    p.add_argument("--fd-iterations", type=nonneg_int, default=10,
                   help="force-directed iterations for the soft macros after each RL episode (default 10)")
    p.add_argument("--soft-start", choices=["input", "center"], default="input",
                   help="where force-directed placement starts the soft macros (default: input positions)")
    add_cost_options(p)  # --settings, --congestion-grid, --routes-per-congestion-grid, --weights
    p.add_argument("--rl-envs", type=positive_int, default=16,
                   help="RL: episodes stepped together per collector worker (default 16)")
    p.add_argument("--collector", choices=["local", "process", "ray"], default="local",
                   help="RL: where rollouts run: this process, 2 worker processes, or 2 Ray actors "
                        "(needs moeplace[ray]) (default local)")
    p.add_argument("--policy", default="default", metavar="DIR",
                   help="RL: start from this policy (a folder with policy.safetensors, e.g. a `place chip "
                        "pretrain` run, or the file): zero-shot rollouts, then PPO fine-tuning; 'default' = "
                        "the pre-trained policy shipped in the package, 'none' = PPO from scratch")
    p.add_argument("--finetune-budget", type=duration_or_off, default=None, metavar="T",
                   help="RL with a policy: fine-tuning wall time, e.g. 0 (zero-shot only), 60s "
                        "(default: what --budget leaves after the zero-shot rollouts)")
    p.add_argument("--rl-samples", type=positive_int, default=16,
                   help="RL with a policy: zero-shot sampled rollouts per batch (default 16)")
    p.add_argument("--zero-shot-budget", type=duration_or_off, default=None, metavar="T",
                   help="RL with a policy: wall time of zero-shot sampling, batch after batch, best of "
                        "all; 0 = one batch (default: a tenth of --budget, all of it with --finetune-budget "
                        f"0; at most {ZERO_SHOT_MAX_S:g}s)")
    p.add_argument("--rl-temperature", type=positive_float, default=1.0, metavar="T",
                   help="RL with a policy: sampling temperature of zero-shot and fine-tuning (logits / T; "
                        "the greedy episode is unchanged) (default 1)")
    p.add_argument("--rl-incumbent-logit", type=nonneg_float, default=INCUMBENT_LOGIT, metavar="B",
                   help="RL: improvement mode, B logits added to each macro's cell in the best placement so "
                        f"far, so samples are variations of it; 0 = off (default {INCUMBENT_LOGIT:g})")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    add_routing_options(p)
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="chip_action", metavar="ACTION", required=False, parser_class=type(p))
    from moeplace.cli import register_modules

    register_modules(actions, _ACTIONS)


def run(args: argparse.Namespace) -> int:
    """Run the chosen methods, print the table, write the .plc and the PNG."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads only spin
    from moeplace.errors import InputError
    from moeplace.place.chip.cost import ProxyCost
    from moeplace.place.chip.plc import write_plc
    from moeplace.utils import markdown_table, print_json_line, seed_everything

    if not args.netlist:
        raise InputError("--netlist: required (a netlist file to place)")
    budget_s = args.budget
    if args.fd_iterations < 0:
        raise InputError("--fd-iterations: must be >= 0")
    seed_everything(args.seed)
    netlist, header, settings = load_design(args)
    for line in describe(settings):
        print(line, flush=True)
    rows, results, phases = [], {}, {}
    terms = ProxyCost(netlist, header).evaluate().as_dict()
    rows.append(_row("input", terms, 1, 0.0))
    best_name, best = None, None
    methods = ["sa", "rl"] if args.method == "both" else [args.method]
    for method in methods:
        res, problem = _run_method(method, netlist, header, args, budget_s, phases)
        results[method] = res
        rows.append(_row(method, res.terms, res.evaluations, res.wall_s, res.interrupted))
        if best is None or res.cost < best[0].cost:
            best_name, best = method, (res, problem)
        if res.interrupted:
            break
    assert best is not None
    res, problem = best
    placed = problem.netlist.copy()
    placed.x, placed.y, placed.orient = problem.positions(res.placement)
    soft = placed.soft_macros
    placed.x[soft], placed.y[soft] = res.soft_x, res.soft_y
    check = ProxyCost(placed, header).evaluate().as_dict()
    if terms["proxy"] <= check["proxy"]:  # no method beat the placement we were given: keep it
        best_name, placed, check = "input", netlist, terms
    figures = {"Wirelength": ProxyCost(placed, header).hpwl(), "Wirelength cost": check["wirelength"],
               "Congestion cost": check["congestion"], "Density cost": check["density"]}
    write_plc(args.out, placed, header, figures=figures)
    if args.png:
        from moeplace.place.chip.render import render_placement

        render_placement(args.png, placed, header, congestion="max" if args.congestion_map else None,
                         title=f"{Path(args.netlist).name}: {best_name}, proxy {check['proxy']:.4f}")
    print(markdown_table(rows))
    for line in describe_phases(phases):
        print(line)
    print(f"best: {best_name} (proxy {check['proxy']:.4f}) -> {args.out}"
          + (f", {args.png}" if args.png else ""))
    if args.json:
        print_json_line({"input": rows[0], **{m: r for m, r in zip(methods, rows[1:])},
                         "best": best_name, "best_proxy": check["proxy"], "out": args.out,
                         "png": args.png, "hpwl": figures["Wirelength"], "settings": settings,
                         "rl_phases": phases or None})
    return 130 if res.interrupted else 0


def _row(name: str, terms: dict[str, float], evaluations: int, wall_s: float,
         interrupted: bool = False) -> dict:
    """One table row."""
    return {"placement": name + (" (interrupted)" if interrupted else ""),
            "wirelength": round(terms["wirelength"], 4), "density": round(terms["density"], 4),
            "congestion": round(terms["congestion"], 4), "proxy": round(terms["proxy"], 4),
            "evaluations": int(evaluations), "wall_s": round(wall_s, 1)}


def describe_phases(phases: dict) -> list[str]:
    """One line on what the RL policy did: its file, zero-shot greedy and best-of-M, fine-tuning."""
    if "greedy" not in phases:
        return []
    g, m = phases["greedy"], phases["sampled"]
    line = (f"rl from {phases['policy']}: zero-shot greedy {g['proxy']:.4f} ({g['wall_s']:.1f} s), best of "
            f"{m['samples']} sampled {m['proxy']:.4f} ({m['wall_s']:.1f} s)")
    f = phases.get("finetuned")
    line += (f", fine-tuned {f['proxy']:.4f} ({f['episodes']} episodes, {f['wall_s']:.1f} s)" if f
             else ", no fine-tuning")
    return [line]


def _run_method(method: str, netlist, header, args: argparse.Namespace, budget_s: float,
                phases: dict | None = None):
    """Build the problem for one method and search; returns (ChipSearchResult, problem)."""
    if method == "rl+sa":
        from moeplace.place.chip.anneal import anneal_chip
        from moeplace.place.chip.problem import ChipProblem

        rl, rl_problem = _run_method("rl", netlist, header, args, budget_s / 2, phases)
        placed = rl_problem.to_netlist(rl.placement)
        soft = placed.soft_macros
        placed.x[soft], placed.y[soft] = rl.soft_x, rl.soft_y
        problem = ChipProblem(placed, header, orientations=True, soft="fixed", soft_start="input")
        res = anneal_chip(problem, budget_s=budget_s / 2, seed=args.seed)
        res.evaluations += rl.evaluations
        res.wall_s += rl.wall_s
        res.interrupted = res.interrupted or rl.interrupted
        return res, problem
    return _single_method(method, netlist, header, args, budget_s, phases)


def _single_method(method: str, netlist, header, args: argparse.Namespace, budget_s: float,
                   phases: dict | None = None):
    """Build the problem for one method and search; returns (ChipSearchResult, problem)."""
    from moeplace.errors import InputError
    from moeplace.place.chip.problem import ChipProblem

    if method == "sa":
        from moeplace.place.chip.anneal import anneal_chip

        problem = ChipProblem(netlist, header, orientations=True, soft="fixed", soft_start=args.soft_start)
        return anneal_chip(problem, budget_s=budget_s, seed=args.seed), problem
    from moeplace.place.chip.agent import train_chip_rl

    problem = ChipProblem(netlist, header, soft="fd", fd_iterations=args.fd_iterations,
                          soft_start=args.soft_start)
    if args.rl_envs < 1:
        raise InputError("--rl-envs: must be >= 1")
    policy = _load_rl_policy(args.policy)
    if policy is None:
        return train_chip_rl(problem, budget_s=budget_s, seed=args.seed, n_envs=args.rl_envs,
                             collector=args.collector, incumbent_logit=args.rl_incumbent_logit), problem
    from moeplace.place.chip.transfer import run_pretrained

    # --finetune-budget: None = what --budget leaves after the zero-shot rollouts; 0 = none
    zero_shot_s = args.zero_shot_budget
    if zero_shot_s is None:
        zero_shot_s = min(ZERO_SHOT_MAX_S, budget_s if args.finetune_budget == 0 else budget_s / 10)
    res, done = run_pretrained(problem, policy, finetune_s=args.finetune_budget, budget_s=budget_s,
                               samples=args.rl_samples, zero_shot_s=zero_shot_s, seed=args.seed,
                               n_envs=args.rl_envs, collector=args.collector,
                               temperature=args.rl_temperature, incumbent_logit=args.rl_incumbent_logit)
    if phases is not None and done:
        phases.update(done, policy=args.policy)
    return res, problem


def _load_rl_policy(spec: str):
    """The ChipPolicy `--policy` names ('default': the shipped one; 'none': None, PPO from scratch)."""
    from moeplace.place.chip.policy_io import DEFAULT_POLICY, load_policy

    if spec == "none":
        return None
    policy, _ = load_policy(DEFAULT_POLICY if spec == "default" else spec)
    return policy
