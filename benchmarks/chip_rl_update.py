"""Chip PPO update rules side by side: risk-seeking PPO (the chip default) against plain PPO.

Each run trains `train_chip_rl` from an untrained ChipPolicy on one design for the same wall time,
one after the other in this process. `plain` is PPO with the previous chip settings (GAE lambda
0.95, learning rate 3e-4, every episode in the update); `risk-seeking` is the default
(`PPO_DEFAULTS`: the top quarter of each rollout's episodes, lambda 1, learning rate 1e-3). Designs:
generated ones of a corpus seed no pre-training uses (default 3000). Reported per run: the best
proxy cost found, and the mean cost of the first and the last tenth of its training episodes
(whether the policy itself got better, not only its luckiest sample).

    OPENBLAS_NUM_THREADS=1 python benchmarks/chip_rl_update.py --budget 120 [--designs 3] [--seed 0]

Ends with one JSON line.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: tiny matrices, BLAS threads only spin

import argparse  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

import moeplace.place.search as search  # noqa: E402
from moeplace.place.chip.agent import train_chip_rl  # noqa: E402
from moeplace.place.chip.corpus import generate_corpus, load_corpus  # noqa: E402
from moeplace.place.chip.problem import ChipProblem  # noqa: E402
from moeplace.utils import markdown_table, print_json_line, seed_everything  # noqa: E402

VARIANTS = {"plain": {"risk_quantile": None, "gae_lambda": 0.95, "learning_rate": 3e-4},
            "risk-seeking": {}}


def run(problem: ChipProblem, budget_s: float, seed: int, hparams: dict) -> dict:
    """Train for `budget_s`; the best cost and the mean episode cost of the first and last tenth."""
    costs: list[float] = []
    record = search._Budget.record

    def logged(self, placement, cost):  # every training episode's cost, in order
        costs.append(float(cost))
        return record(self, placement, cost)

    search._Budget.record = logged
    try:
        res = train_chip_rl(problem, budget_s=budget_s, seed=seed, progress=False, greedy_every=0, **hparams)
    finally:
        search._Budget.record = record
    c = np.asarray(costs)
    tenth = max(len(c) // 10, 1)
    return {"best": round(res.cost, 4), "first_mean": round(float(c[:tenth].mean()), 4),
            "last_mean": round(float(c[-tenth:].mean()), 4), "episodes": len(c)}


def main() -> None:
    """Both variants on every design; the table, then the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=120.0, help="wall seconds per run")
    ap.add_argument("--designs", type=int, default=3, help="generated designs")
    ap.add_argument("--corpus-seed", type=int, default=3000, help="their corpus seed")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("MOEPLACE_NO_PROGRESS", "1")
    seed_everything(args.seed)
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        generate_corpus(tmp, args.designs, seed=args.corpus_seed, show_progress=False)
        designs = load_corpus([tmp], builtin=False)
    for d in designs:
        problem = ChipProblem(d.netlist, d.header, soft="fd", fd_iterations=50, soft_start="center")
        name = f"seed {args.corpus_seed}/{d.name.split('/')[-1]} ({problem.num_nodes} macros)"
        figures[name] = {}
        for variant, hp in VARIANTS.items():
            r = run(problem, args.budget, args.seed, hp)
            figures[name][variant] = r
            rows.append({"design": name, "update": variant, "best_proxy": r["best"],
                         "mean_first_tenth": r["first_mean"], "mean_last_tenth": r["last_mean"],
                         "episodes": r["episodes"]})
            print(f"{name} {variant}: {r}", flush=True)
    print(f"## Chip PPO update rules, {args.budget:g} s per run")
    print(markdown_table(rows))
    wins = sum(f["risk-seeking"]["best"] < f["plain"]["best"] for f in figures.values())
    print(f"risk-seeking best below plain on {wins} of {len(figures)} designs")
    print_json_line({"budget_s": args.budget, "designs": figures, "risk_wins": wins})


if __name__ == "__main__":
    main()
