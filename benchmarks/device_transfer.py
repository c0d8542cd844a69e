"""Device placement transfer, leave-one-family-out: pre-train the transfer policy on every family but
one, then place graphs of the held-out family (and two user models of no family) on each cluster.

    python benchmarks/device_transfer.py --family transformer --graphs 2 --clusters k80x4,hetero \\
        --pretrain-budget 120 --budget 5

Per held-out graph x cluster, side by side in one process (simulated step time, ms): the best
heuristic, simulated annealing from it (`sa`), the seq2seq policy trained from scratch with RL alone
(`rl`), the pre-trained policy zero-shot (no weight change: greedy + batches of 127 samples for
--zero-shot-budget seconds), the same fine-tuned with RL alone for the rest of --budget
(`finetuned`), and seq2seq RL then local search (`rl+ls`); every search gets --budget seconds.
The last line is JSON: per pair the step times, and the share of pairs where zero-shot is within 5%
of SA and where fine-tuned RL is at most SA.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.corpus import CorpusGraph, build_corpus
from moeplace.place.device.finetune import ZERO_SHOT_S, transfer_search
from moeplace.place.device.methods import HEURISTICS, run_method
from moeplace.place.device.pretrain import PretrainSettings, make_pairs, pretrain
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.transfer import load_policy
from moeplace.utils import markdown_table, print_json_line, seed_everything

USER_MODELS = ("device_user_models:unet", "device_user_models:wide_deep")


def place_pair(problem: DevicePlacementProblem, policy, budget: float, zero_shot_s: float,
               seed: int) -> dict[str, float]:
    """Step time (ms) of each method on one problem, and the zero-shot seconds (from the policy's copy
    to the last zero-shot batch); the fine-tuned run's budget includes its zero-shot part."""
    heur = [run_method(h, problem, seed=seed) for h in HEURISTICS]
    valid = [r for r in heur if r.valid] or heur
    best = min(valid, key=lambda r: r.cost)
    row: dict[str, float] = {"heuristic": best.step_time * 1e3}
    row["sa"] = run_method("sa", problem, budget_s=budget, seed=seed, init=best.placement).cost * 1e3
    row["rl"] = run_method("rl", problem, budget_s=budget, seed=seed).cost * 1e3
    ft = transfer_search(problem, policy, zero_shot_s=zero_shot_s, finetune_s=max(budget - zero_shot_s, 0.0),
                         seed=seed)  # zero-shot, then fine-tuning for the rest of the budget
    row["zero_shot"], row["zero_shot_s"] = ft.extra["zero_shot_cost"] * 1e3, ft.extra["zero_shot_s"]
    row["finetuned"] = ft.cost * 1e3
    row["rl+ls"] = run_method("rl+ls", problem, budget_s=budget, seed=seed, init=best.placement).cost * 1e3
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="transformer", help="the held-out family")
    ap.add_argument("--graphs", type=int, default=2, help="held-out graphs of that family")
    ap.add_argument("--corpus", default="builtin:4", help="pre-training corpus (the family is removed)")
    ap.add_argument("--clusters", default="k80x4,hetero")
    ap.add_argument("--pretrain-budget", type=float, default=120.0, help="seconds of pre-training")
    ap.add_argument("--budget", type=float, default=5.0, help="seconds per search method")
    ap.add_argument("--zero-shot-budget", type=float, default=ZERO_SHOT_S,
                    help="seconds of zero-shot sampling (no weight change; 0 = one batch; at most 2)")
    ap.add_argument("--no-user-models", action="store_true", help="skip the two user models")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seed_everything(args.seed)
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    clusters = {c: load_cluster(c) for c in args.clusters.split(",")}
    train = build_corpus(args.corpus, args.seed, exclude=(args.family,))
    with tempfile.TemporaryDirectory() as tmp:
        settings = PretrainSettings(args.corpus, list(clusters), [args.family], args.seed)
        summary = pretrain(make_pairs(train, clusters), settings, Path(tmp), budget_s=args.pretrain_budget,
                           max_updates=None, show_progress=False)
        policy = load_policy(tmp)
    print(f"pre-trained {summary['updates']} updates in {summary['seconds']:.0f} s on {len(train)} graphs "
          f"(no {args.family}) x {len(clusters)} clusters", flush=True)
    held: list[CorpusGraph] = build_corpus(f"{args.family}:{args.graphs}", seed=args.seed + 1000)
    if not args.no_user_models:
        held += build_corpus(",".join(USER_MODELS))
    rows = []
    for g in held:
        for cname, cluster in clusters.items():
            row = place_pair(DevicePlacementProblem(g.graph, cluster), policy, args.budget,
                             args.zero_shot_budget, args.seed)
            rows.append({"pair": f"{g.name}@{cname}", "groups": g.graph.num_groups, **row})
            print(markdown_table([rows[-1]]).splitlines()[-1], flush=True)
    print(markdown_table(rows))
    zs = np.array([r["zero_shot"] / r["sa"] for r in rows])
    ft = np.array([r["finetuned"] / r["sa"] for r in rows])
    rl = np.array([r["rl"] / r["sa"] for r in rows])
    figures = {
        "held_out_family": args.family, "pairs": len(rows), "budget_s": args.budget,
        "pretrain_s": args.pretrain_budget, "pretrain_updates": summary["updates"],
        "zero_shot_budget_s": args.zero_shot_budget,
        "zero_shot_within_5pct_of_sa": float((zs <= 1.05).mean()),
        "finetuned_le_sa": float((ft <= 1.0 + 1e-9).mean()),
        "geomean_zero_shot_over_sa": float(np.exp(np.log(zs).mean())),
        "geomean_finetuned_over_sa": float(np.exp(np.log(ft).mean())),
        "geomean_rl_scratch_over_sa": float(np.exp(np.log(rl).mean())),
        "max_zero_shot_s": float(max(r["zero_shot_s"] for r in rows)),
        "rows": rows,
    }
    print(f"zero-shot within 5% of SA on {figures['zero_shot_within_5pct_of_sa']:.0%} of pairs, fine-tuned "
          f"<= SA on {figures['finetuned_le_sa']:.0%}; geometric mean / SA: zero-shot "
          f"{figures['geomean_zero_shot_over_sa']:.3f}, fine-tuned "
          f"{figures['geomean_finetuned_over_sa']:.3f}, "
          f"RL from scratch {figures['geomean_rl_scratch_over_sa']:.3f}")
    print_json_line(figures)


if __name__ == "__main__":
    main()
