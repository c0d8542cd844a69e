"""Chip RL throughput on Ariane133: today's per-env PPO path against the batched path, side by side.

Both train PPO (moeplace.rl) from scratch on Ariane133 (133 hard macros, 782 soft macros placed by
10 force-directed iterations per episode, reward −proxy cost) in this process:

- baseline: `rl_search` over one PlacementEnv with the netlist-bound PlacementPolicy (conv head),
  4 episodes per update (what `place chip --method rl` ran before the batched path);
- batched: `train_chip_rl`: BatchedChipEnv (16 episodes in lockstep, one batched policy forward and
  one batched legality mask per step), the size-independent ChipPolicy, a LocalCollector;
- rollouts only (no updates) from the same collectors: in-process, 2 worker processes, and with
  --ray 2 Ray actors.

Episodes per second count complete episodes (every macro placed, soft macros placed, proxy cost
computed). One-time costs (numba compilation, torch's lazy imports) are paid in a warm-up first.
On a shared machine the wall time depends on the others' load: `cpu_s` (this process's CPU time,
in-process rows only) and the ratios measured side by side are the steadier figures.

    OPENBLAS_NUM_THREADS=1 python benchmarks/chip_rl_throughput.py [--baseline-episodes 8]
        [--episodes 64] [--ray]

The last line is one JSON line with every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: tiny matrices, BLAS threads only spin

import argparse  # noqa: E402
import functools  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from moeplace.data import CHIP_DIR  # noqa: E402
from moeplace.place.chip.agent import make_collector, make_policy, train_chip_rl  # noqa: E402
from moeplace.place.chip.problem import ChipProblem  # noqa: E402
from moeplace.place.policy import PlacementPolicy  # noqa: E402
from moeplace.place.search import rl_search  # noqa: E402
from moeplace.utils import markdown_table, print_json_line, seed_everything  # noqa: E402


def ariane() -> ChipProblem:
    """Ariane133 with its legalized.plc settings, soft macros by 10 force-directed iterations."""
    p = CHIP_DIR / "ariane133"
    return ChipProblem.from_files(p / "netlist.pb.txt.gz", p / "legalized.plc", soft="fd", fd_iterations=10)


def rollouts(problem: ChipProblem, kind: str, n_envs: int, rounds: int,
             seed: int) -> tuple[int, float, float]:
    """Episodes and seconds of `rounds` rollouts of whole episodes from a collector (startup excluded)."""
    policy_fn = functools.partial(make_policy, problem)
    weights = dict(policy_fn().state_dict())
    collector = make_collector(kind, problem, n_envs, policy_fn, seed)
    try:
        collector.collect(weights, 1)  # workers up and warm
        collector.collect(weights, problem.num_nodes - 1)  # finish the started episodes
        start, cpu, episodes = time.perf_counter(), time.process_time(), 0
        for _ in range(rounds):
            episodes += len(collector.collect(weights, problem.num_nodes).ends)
        return episodes, time.perf_counter() - start, time.process_time() - cpu
    finally:
        collector.close()


def main() -> None:
    """Run both paths, print the table and ratios, end with the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-episodes", type=int, default=8, help="training episodes of today's path")
    ap.add_argument("--episodes", type=int, default=64, help="training episodes of the batched path")
    ap.add_argument("--rounds", type=int, default=2, help="rollouts per collector in the rollout-only rows")
    ap.add_argument("--n-envs", type=int, default=16, help="episodes stepped together per collector worker")
    ap.add_argument("--ray", action="store_true", help="also measure 2 Ray actors (needs moeplace[ray])")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seed_everything(args.seed)
    os.environ.setdefault("MOEPLACE_NO_PROGRESS", "1")
    problem = ariane()
    print(f"ariane133: {problem.num_nodes} hard macros, {len(problem.netlist.soft_macros)} soft macros, "
          f"{problem.grid.columns}x{problem.grid.rows} grid; torch threads 1", flush=True)
    torch.set_num_threads(1)
    train_chip_rl(ariane(), max_episodes=1, n_envs=1, seed=args.seed, progress=False)  # warm-up

    rows, fig = [], {}
    t, cpu = time.perf_counter(), time.process_time()
    base = rl_search(problem, policy=PlacementPolicy(problem, hidden=64, rounds=3, head="conv"),
                     max_episodes=args.baseline_episodes, seed=args.seed, progress=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    fig["baseline_episodes_per_s"] = base.evaluations / wall
    fig["baseline_episodes_per_cpu_s"] = base.evaluations / cpu
    rows.append({"path": "today: rl_search, 1 env (train)", "episodes": base.evaluations,
                 "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                 "episodes_per_s": round(fig["baseline_episodes_per_s"], 3),
                 "best_proxy": round(base.cost, 4)})
    print(markdown_table(rows[-1:]), flush=True)

    cpu = time.process_time()
    res = train_chip_rl(ariane(), max_episodes=args.episodes, n_envs=args.n_envs, seed=args.seed,
                        progress=False)
    cpu = time.process_time() - cpu
    fig["rl_episodes_per_s"] = res.evaluations / res.wall_s
    fig["rl_episodes_per_cpu_s"] = res.evaluations / cpu
    rows.append({"path": f"batched: train_chip_rl, {args.n_envs} envs (train)", "episodes": res.evaluations,
                 "wall_s": round(res.wall_s, 1), "cpu_s": round(cpu, 1),
                 "episodes_per_s": round(fig["rl_episodes_per_s"], 3), "best_proxy": round(res.cost, 4)})
    print(markdown_table(rows[-1:]), flush=True)

    kinds = ["local", "process"] + (["ray"] if args.ray else [])
    for kind in kinds:
        episodes, wall, cpu = rollouts(problem, kind, args.n_envs, args.rounds, args.seed)
        fig[f"rollout_{kind}_episodes_per_s"] = episodes / wall
        workers = "" if kind == "local" else ", 2 workers"
        rows.append({"path": f"batched rollouts only: {kind}{workers}", "episodes": episodes,
                     "wall_s": round(wall, 1), "cpu_s": round(cpu, 1) if kind == "local" else "workers",
                     "episodes_per_s": round(episodes / wall, 3), "best_proxy": ""})
        print(markdown_table(rows[-1:]), flush=True)

    print("\n## Ariane133 RL throughput (complete episodes per second; shared 2-core machine)")
    print(markdown_table(rows))
    fig["ratio_train"] = fig["rl_episodes_per_s"] / fig["baseline_episodes_per_s"]
    best_rollout = max(fig[f"rollout_{k}_episodes_per_s"] for k in kinds)
    fig["ratio_rollout"] = best_rollout / fig["baseline_episodes_per_s"]
    fig["ratio_train_cpu"] = fig["rl_episodes_per_cpu_s"] / fig["baseline_episodes_per_cpu_s"]
    print(f"batched training / today: {fig['ratio_train']:.1f}x "
          f"(per CPU second {fig['ratio_train_cpu']:.1f}x); "
          f"best batched rollouts / today: {fig['ratio_rollout']:.1f}x")
    print_json_line({k: round(v, 4) for k, v in fig.items()} | {"n_envs": args.n_envs,
                                                                "baseline_episodes": base.evaluations,
                                                                "episodes": res.evaluations})


if __name__ == "__main__":
    main()
