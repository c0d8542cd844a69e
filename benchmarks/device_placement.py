"""Device placement: every benchmark graph x cluster, every method, in one run (simulated step time).

    python benchmarks/device_placement.py                      # the full run (see docs/benchmarks.md)
    python benchmarks/device_placement.py --graphs nmt4 --clusters k80x4 --rl-iters 300
    python benchmarks/device_placement.py --simulator-only     # simulator throughput alone
    python benchmarks/device_placement.py --rl-cap 75          # rl and rl+ls: 75 s of wall time per pair

Per graph and cluster: the heuristics, simulated annealing and PPO (both seeded by the best
heuristic), and the 2017 seq2seq REINFORCE placer twice, side by side: `rl`, the policy gradient
alone, and `rl+ls`, the same training plus local search (a descent from each batch's best sample,
then the final stage: multi-start descent, a cool and a hot annealing with window moves, iterated
local search). Their settings are an RL config (--rl-config: a preset or a JSON file, see
docs/device.md; default the `benchmark` preset: 1,000 iterations over two runs, the first imitating
the best heuristic); --rl-iters overrides its iteration count; --rl-cap S drops the iteration count
and gives rl and rl+ls S seconds of wall time each per pair (a full run that fits a shared machine;
rl+ls keeps its local-search share of the S seconds). Each with its search time.
--jobs 2 runs two pairs at once. Also measures simulator throughput on a 1,000-op graph. The last
line is JSON with the figures named in the issue (`rl_*` for RL alone, `rl_ls_*` for rl+ls).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import time

import numpy as np
import torch

from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.graph import OpGraph
from moeplace.place.device.methods import HEURISTICS, run_method
from moeplace.place.device.models import build_benchmark
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.rl_config import load_rl_config, validate
from moeplace.place.device.simulator import Simulator
from moeplace.place.device.trace import trace_graph
from moeplace.utils import markdown_table, print_json_line, seed_everything

PUBLISHED = {  # relative gains on real hardware (DESIGN.md, "Facts for the device-placement presets")
    "colocrl_nmt_2gpu_over_expert": 0.235,
    "colocrl_nmt_4gpu_over_expert": 0.206,
    "colocrl_inception_4gpu_over_expert": 0.19,
    "colocrl_rnnlm_over_single": 0.0,
    "hierarchical_nmt2_over_expert": 0.606,
    "hierarchical_nmt4_over_expert": 0.537,
    "hierarchical_inception_over_expert": 0.163,
    "baechi_heuristics_vs_expert": "within 6.2%",
}


def sim_throughput(seed: int = 0, n: int = 1000, reps: int = 300) -> dict[str, float]:
    """Simulations per second on a random layered 1,000-op graph over the 5-device K80 preset."""
    rng = np.random.default_rng(seed)
    edges = sorted({(int(j), i) for i in range(1, n) for j in rng.integers(max(0, i - 30), i, 2)})
    g = OpGraph(
        names=[f"op{i}" for i in range(n)],
        kinds=["x"] * n,
        fwd_flops=rng.uniform(1e8, 1e9, n),
        bwd_flops=rng.uniform(2e8, 2e9, n),
        out_bytes=rng.uniform(1e5, 1e7, n),
        param_bytes=rng.uniform(0, 1e7, n),
        trivial=np.zeros(n, bool),
        edges=np.array(edges).T,
        anchor=np.full(n, -1),
        scope=[""] * n,
        layer=[""] * n,
        grouping="op",
    )
    sim = Simulator(g, load_cluster("k80x4"))
    placements = rng.integers(0, 5, (reps, n))
    sim.step_time(placements[0])  # compile / load the cached kernel
    wall, cpu = time.perf_counter(), time.process_time()
    for p in placements:
        sim.step_time(p)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"ops": n, "edges": len(edges), "sims_per_s_wall": reps / wall, "sims_per_s_cpu": reps / cpu}


def at_least_as_fast(result, step_time: float) -> bool:
    """A valid placement whose step time is no slower than `step_time` (up to float rounding)."""
    return bool(result.valid and result.step_time <= step_time * (1 + 1e-9))


def run_pair(task: tuple) -> dict:
    """Every method on one graph x cluster: heuristics, then SA, RL, RL+LS and PPO."""
    graph, cluster, args, rl_config = task
    torch.set_num_threads(1)
    prob = DevicePlacementProblem(graph, cluster)
    res = {h: run_method(h, prob, seed=args.seed) for h in HEURISTICS}
    valid = [r for r in res.values() if r.valid]
    init = min(valid, key=lambda r: r.step_time).placement if valid else None
    ppo_config = dataclasses.replace(rl_config, imitation=True)  # PPO always keeps the best heuristic
    for m, b in (("sa", args.sa_budget), ("rl", args.rl_budget), ("rl+ls", args.rl_budget),
                 ("ppo", args.ppo_budget)):
        if b > 0:
            res[m] = run_method(m, prob, budget_s=b, seed=args.seed, init=init,
                                rl_config=ppo_config if m == "ppo" else rl_config)
    return res


def rl_figures(run: dict, res: dict, key: str, method: str, best_base, exp: float) -> None:
    """Add method `method`'s comparisons to `run` under the prefix `key` (rl or rl_ls)."""
    r = res.get(method)
    if r is None:
        return
    run[f"{key}_ge_best_baseline"] = at_least_as_fast(r, best_base.step_time if best_base else np.inf)
    run[f"{key}_speedup_over_expert"] = exp / r.step_time - 1
    run[f"{key}_iterations"] = r.extra.get("iterations", 0)
    heur = [x for k, x in res.items() if k in HEURISTICS and x.valid]
    run[f"{key}_ge_best_heuristic"] = at_least_as_fast(r, min((x.step_time for x in heur), default=np.inf))
    if "sa" in res:
        run[f"{key}_ge_sa"] = at_least_as_fast(r, res["sa"].step_time)
    if method == "rl+ls":
        for k in ("final_descents", "final_kicks", "final_anneal_evals"):
            run[f"rl_ls_{k}"] = r.extra.get(k, 0)
        run["rl_ls_before_final_ms"] = r.extra.get("cost_before_final", float("nan")) * 1e3


def summary(runs: list[dict], key: str, method: str, iterations: int | None) -> dict:
    """The figures over all pairs of one RL method (prefix `key`)."""
    with_m = [r for r in runs if f"{key}_ge_best_baseline" in r]
    nmt4 = next((r for r in runs if r["graph"] == "nmt4" and r["cluster"] == "k80x4"), None)
    times = [r["methods"][method]["search_s"] for r in with_m]
    out = {
        f"{key}_ge_best_baseline_count": sum(r[f"{key}_ge_best_baseline"] for r in with_m),
        f"runs_with_{key}": len(with_m),
        f"{key}_ge_best_baseline_misses": [
            f"{r['graph']}@{r['cluster']}" for r in with_m if not r[f"{key}_ge_best_baseline"]
        ],
        f"{key}_ge_best_heuristic_count": sum(r[f"{key}_ge_best_heuristic"] for r in with_m),
        f"{key}_ge_sa_count": sum(r.get(f"{key}_ge_sa", False) for r in with_m),
        f"nmt4_k80x4_{key}_speedup_over_expert": nmt4.get(f"{key}_speedup_over_expert") if nmt4 else None,
        f"max_{key}_search_s": max(times) if times else None,
        f"{key}_capped_by_wall_time": [
            f"{r['graph']}@{r['cluster']}" for r in with_m
            if iterations is not None and r.get(f"{key}_iterations", 0) < iterations
        ],
        ("speedup_over_expert" if key == "rl" else f"speedup_over_expert_{key}"): {
            f"{r['graph']}@{r['cluster']}": round(r.get(f"{key}_speedup_over_expert", 0), 4) for r in with_m
        },
    }
    if key == "rl_ls":  # per pair, as the runs hold them
        for k in ("rl_ls_final_descents", "rl_ls_final_kicks", "rl_ls_final_anneal_evals",
                  "rl_ls_before_final_ms"):
            out[k] = {f"{r['graph']}@{r['cluster']}": r[k] for r in with_m}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", default="rnnlm,nmt2,nmt4,nmt8,inception,transformer,moe_lstm")
    ap.add_argument("--clusters", default="k80x4,a100x8,hetero")
    ap.add_argument("--rl-config", default="benchmark",
                    help="settings of rl, rl+ls and ppo: a preset or a JSON file (docs/device.md)")
    ap.add_argument("--rl-iters", type=int, default=None,
                    help="REINFORCE iterations per graph x cluster (overrides the config's)")
    ap.add_argument("--rl-budget", type=float, default=600.0,
                    help="wall-time cap (s) of rl and of rl+ls per graph x cluster")
    ap.add_argument("--rl-cap", type=float, default=None,
                    help="rl and rl+ls run S seconds of wall time each per pair, no iteration count "
                         "(replaces --rl-iters and --rl-budget)")
    ap.add_argument("--sa-budget", type=float, default=20.0)
    ap.add_argument("--ppo-budget", type=float, default=10.0)
    ap.add_argument("--jobs", type=int, default=1,
                    help="graph x cluster pairs run at once, one process and one core each")
    ap.add_argument("--simulator-only", action="store_true",
                    help="measure the simulator's throughput alone (no placements)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rl_config = load_rl_config(args.rl_config)
    if args.rl_iters is not None:
        rl_config = dataclasses.replace(rl_config, iterations=args.rl_iters)
        validate(rl_config, "--rl-iters")
    if args.rl_cap is not None:
        if not args.rl_cap > 0:
            ap.error(f"--rl-cap must be a positive number of seconds, got {args.rl_cap}")
        rl_config = dataclasses.replace(rl_config, iterations=None)
        args.rl_budget = args.rl_cap
    seed_everything(args.seed)
    torch.set_num_threads(1)
    throughput = sim_throughput(args.seed)
    print(
        f"simulator: {throughput['sims_per_s_wall']:.0f} simulations/s wall, "
        f"{throughput['sims_per_s_cpu']:.0f}/s per CPU-second on a {throughput['ops']}-op graph"
    )
    if args.simulator_only:
        print_json_line({"simulator": throughput})
        return
    graphs = {}
    for name in args.graphs.split(","):
        m, x = build_benchmark(name)
        graphs[name] = trace_graph(m, x, name=name)
    rows, figures = [], {"runs": []}
    pairs = [(g, c) for c in args.clusters.split(",") for g in graphs]
    tasks = [(graphs[g], load_cluster(c), args, rl_config) for g, c in pairs]
    pool = multiprocessing.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else None
    results = pool.imap(run_pair, tasks) if pool is not None else map(run_pair, tasks)
    for (gname, cname), res in zip(pairs, results):
        graph = graphs[gname]
        single, exp = res["single"].step_time, res["expert"].step_time
        base = [r for k, r in res.items() if k not in ("rl", "rl+ls", "ppo") and r.valid]
        best_base = min(base, key=lambda r: r.step_time) if base else None
        run = {
            "graph": gname,
            "cluster": cname,
            "ops": graph.num_ops,
            "groups": graph.num_groups,
            "best_baseline": best_base.method if best_base else None,
            "best_baseline_ms": best_base.step_time * 1e3 if best_base else None,
            "methods": {
                k: {
                    "step_ms": r.step_time * 1e3,
                    "valid": r.valid,
                    "search_s": r.search_s,
                    "evaluations": r.evaluations,
                    "peak_gb": [round(float(v) / 1e9, 2) for v in r.peak_memory],
                }
                for k, r in res.items()
            },
        }
        rl_figures(run, res, "rl", "rl", best_base, exp)
        rl_figures(run, res, "rl_ls", "rl+ls", best_base, exp)
        figures["runs"].append(run)
        for k, r in res.items():
            rows.append(
                {
                    "graph": gname,
                    "cluster": cname,
                    "method": k,
                    "step_ms": r.step_time * 1e3,
                    "vs_single": single / r.step_time,
                    "vs_expert": exp / r.step_time,
                    "valid": "valid" if r.valid else "OOM",
                    "search_s": r.search_s,
                    "evals": r.evaluations,
                }
            )
        print(
            f"{gname} on {cname}: "
            + ", ".join(
                f"{k} {r.step_time * 1e3:.2f}ms{'' if r.valid else ' OOM'}" for k, r in res.items()
            ),
            flush=True,
        )
    if pool is not None:
        pool.close()
    print(markdown_table(rows))
    runs = figures["runs"]
    mem = next((r for r in runs if r["graph"] == "moe_lstm" and r["cluster"] == "k80x4"), None)
    heur_times = [r["methods"][h]["search_s"] for r in runs for h in HEURISTICS]
    rc, ls = rl_config.reinforce, rl_config.local_search
    out = {
        **summary(runs, "rl", "rl", rl_config.iterations),
        **summary(runs, "rl_ls", "rl+ls", rl_config.iterations),
        "memory_bound_moe_lstm_k80x4": None
        if mem is None
        else {
            "single_valid": mem["methods"]["single"]["valid"],
            "rl_valid": mem["methods"].get("rl", {}).get("valid"),
            "rl_ls_valid": mem["methods"].get("rl+ls", {}).get("valid"),
            "valid_methods": [k for k, v in mem["methods"].items() if v["valid"]],
        },
        "max_heuristic_search_s": max(heur_times),
        "simulator": throughput,
        "rl_imitation": rl_config.imitation,
        "budgets_s": {"rl_cap": args.rl_budget, "sa": args.sa_budget, "ppo": args.ppo_budget},
        "rl_config": rl_config.to_dict(),
        "rl_iterations": rl_config.iterations,
        "rl_restarts": rl_config.restarts,
        "rl_batch": rc.batch,
        "rl_epochs": rc.epochs,
        "rl_imitate_runs": rl_config.imitate_runs,
        "rl_sil": rc.sil_coef,
        "rl_polish": ls.in_loop_calls,
        "rl_final_starts": ls.starts,
        "rl_final_kick": ls.kick_size,
        "rl_anneal": ls.anneal,
        "rl_final_calls": ls.calls,
        "jobs": args.jobs,
        "evaluations": {
            f"{r['graph']}@{r['cluster']}": {k: r["methods"][k]["evaluations"]
                                              for k in ("sa", "rl", "rl+ls", "ppo") if k in r["methods"]}
            for r in runs
        },
        "published": PUBLISHED,
    }
    print_json_line(out)


if __name__ == "__main__":
    main()
