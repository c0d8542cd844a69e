"""Placements per second of fine-tuning the transfer policy, with and without the step-feature cache
(scoring what the sampler just drew reuses its list-scheduled features), against the simulator's
evaluations per second that simulated annealing gets, side by side in one process.

    python benchmarks/device_finetune_throughput.py --graph nmt --seed 1000 --cluster a100x8 --updates 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.corpus import build_corpus
from moeplace.place.device.finetune import FINETUNE_RL
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.transfer import context_of, load_policy, packaged_policy
from moeplace.rl.reinforce import EliteBuffer, SequenceREINFORCE
from moeplace.utils import markdown_table, print_json_line, seed_everything


def updates_per_s(problem: DevicePlacementProblem, cache: bool, updates: int, seed: int) -> float:
    """SequenceREINFORCE updates per second with the fine-tuning settings, from the shipped policy."""
    policy = load_policy(packaged_policy())
    ctx = context_of(problem)
    ctx.cache = {} if cache else None
    algo = SequenceREINFORCE(policy, **{**FINETUNE_RL, "seed": seed})
    elite = EliteBuffer(FINETUNE_RL["sil_size"])
    algo.step(ctx, problem.cost, 0.0, elite)  # warm-up (first simulator call, allocator)
    t = time.perf_counter()
    for i in range(updates):
        algo.step(ctx, problem.cost, i / updates, elite)
    return updates / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", default="nmt", help="a corpus family; one config is drawn")
    ap.add_argument("--cluster", default="a100x8")
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1000, help="seed of the drawn config and the sampling")
    args = ap.parse_args()
    seed_everything(args.seed)
    torch.set_num_threads(1)
    g = build_corpus(f"{args.graph}:1", seed=args.seed)[0]
    problem = DevicePlacementProblem(g.graph, load_cluster(args.cluster))
    rng = np.random.default_rng(args.seed)
    problem.cost(rng.integers(0, problem.num_slots, problem.num_nodes))
    t, n = time.perf_counter(), 300
    for _ in range(n):
        problem.cost(rng.integers(0, problem.num_slots, problem.num_nodes))
    sim = n / (time.perf_counter() - t)
    batch = FINETUNE_RL["batch"]
    off = updates_per_s(problem, False, args.updates, args.seed) * batch
    on = updates_per_s(problem, True, args.updates, args.seed) * batch
    rows = [{"what": "simulator (SA's evaluations)", "per_s": sim, "vs_simulator": 1.0},
            {"what": "fine-tuning, no feature cache", "per_s": off, "vs_simulator": off / sim},
            {"what": "fine-tuning, feature cache", "per_s": on, "vs_simulator": on / sim}]
    print(f"{g.name} ({g.graph.num_groups} groups, {g.graph.num_ops} ops) on {args.cluster}, batch {batch}")
    print(markdown_table(rows))
    print(f"cache speed-up {on / off:.2f}x")
    print_json_line({"graph": g.name, "groups": g.graph.num_groups, "cluster": args.cluster,
                     "simulations_per_s": sim, "placements_per_s_no_cache": off,
                     "placements_per_s_cache": on, "cache_speedup": on / off})


if __name__ == "__main__":
    main()
