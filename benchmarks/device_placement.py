"""Device placement: every benchmark graph x cluster, every method, in one run (simulated step time).

    python benchmarks/device_placement.py                      # the full run (see docs/benchmarks.md)
    python benchmarks/device_placement.py --graphs nmt4 --clusters k80x4 --rl-iters 300
    python benchmarks/device_placement.py --simulator-only     # simulator throughput alone

Per graph and cluster: the heuristics, simulated annealing and PPO (both seeded by the best
heuristic) and the 2017 seq2seq REINFORCE placer (--rl-iters iterations shared by --rl-restarts
independent runs, by default two of 500: the first seeded by imitating the best heuristic
(--rl-imitate-runs), the second from scratch; self-imitation and a greedy descent from each batch's
best sample unless --rl-sil 0 --rl-polish 0; at the end, sharing --rl-final-calls look-ups, a descent
by moves and swaps from each run's --rl-final-starts best placements in turn, then two simulated
annealings (cool and hot start) from the best optimum (--rl-anneal evaluations per group each, their
own budget), each followed by a descent from its best, then iterated local search from the best optimum
(kicks of --rl-final-kick random groups, each followed by a descent); the best placement found is
kept), each with its search time. --jobs 2 runs two pairs at once.
Also measures simulator throughput on a 1,000-op graph. The last line is JSON with the figures
named in the issue.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np
import torch

from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.graph import OpGraph
from moeplace.place.device.methods import HEURISTICS, run_method
from moeplace.place.device.models import build_benchmark
from moeplace.place.device.problem import DevicePlacementProblem
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
    """Every method on one graph x cluster: heuristics, then SA, RL and PPO from the best heuristic."""
    graph, cluster, args, rl_options = task
    torch.set_num_threads(1)
    prob = DevicePlacementProblem(graph, cluster)
    res = {h: run_method(h, prob, seed=args.seed) for h in HEURISTICS}
    valid = [r for r in res.values() if r.valid]
    init = min(valid, key=lambda r: r.step_time).placement if valid else None
    for m, b in (("sa", args.sa_budget), ("rl", args.rl_budget), ("ppo", args.ppo_budget)):
        if b > 0:  # PPO always starts from the best heuristic; RL only in its --rl-imitate-runs
            res[m] = run_method(
                m, prob, budget_s=b, seed=args.seed, init=init,
                rl_imitation=m == "ppo" or args.rl_imitate_runs > 0, rl_iters=args.rl_iters,
                rl_options=rl_options,
            )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", default="rnnlm,nmt2,nmt4,nmt8,inception,transformer,moe_lstm")
    ap.add_argument("--clusters", default="k80x4,a100x8,hetero")
    ap.add_argument("--rl-iters", type=int, default=1000, help="REINFORCE iterations per graph x cluster")
    ap.add_argument("--rl-restarts", type=int, default=2, help="independent RL runs sharing --rl-iters")
    ap.add_argument("--rl-imitate-runs", type=int, default=1,
                    help="the first N RL runs start by imitating the best heuristic, the rest from scratch")
    ap.add_argument("--rl-batch", type=int, default=32, help="placements sampled per RL iteration")
    ap.add_argument("--rl-epochs", type=int, default=1, help="gradient steps per RL batch (PPO clip)")
    ap.add_argument("--rl-budget", type=float, default=600.0, help="RL wall-time cap (s) per graph x cluster")
    ap.add_argument("--sa-budget", type=float, default=20.0)
    ap.add_argument("--ppo-budget", type=float, default=10.0)
    ap.add_argument("--rl-sil", type=float, default=0.3, help="RL self-imitation weight (0: off)")
    ap.add_argument("--rl-polish", type=int, default=500,
                    help="RL: cost look-ups of the greedy descent from each batch's best sample (0: off)")
    ap.add_argument("--rl-final-starts", type=int, default=1,
                    help="RL: each run's best placements that the final descent starts from")
    ap.add_argument("--rl-final-kick", type=int, default=5,
                    help="RL: groups moved by each kick of the final iterated local search (0: no kicks)")
    ap.add_argument("--rl-anneal", type=int, default=5000,
                    help="RL: evaluations per group of each of the two final annealings (0: none)")
    ap.add_argument("--rl-final-calls", type=int, default=400_000,
                    help="RL: cost look-ups of the final descents and kicks (0: none)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="graph x cluster pairs run at once, one process and one core each")
    ap.add_argument("--simulator-only", action="store_true",
                    help="measure the simulator's throughput alone (no placements)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
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
    rl_options = {"restarts": args.rl_restarts, "batch": args.rl_batch, "epochs": args.rl_epochs,
                  "imitate_runs": args.rl_imitate_runs, "sil_coef": args.rl_sil,
                  "polish_calls": args.rl_polish, "final_starts": args.rl_final_starts,
                  "final_kick_size": args.rl_final_kick, "final_anneal": args.rl_anneal,
                  "final_polish_calls": args.rl_final_calls}
    pairs = [(g, c) for c in args.clusters.split(",") for g in graphs]
    tasks = [(graphs[g], load_cluster(c), args, rl_options) for g, c in pairs]
    pool = multiprocessing.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else None
    results = pool.imap(run_pair, tasks) if pool is not None else map(run_pair, tasks)
    for (gname, cname), res in zip(pairs, results):
        graph = graphs[gname]
        single, exp = res["single"].step_time, res["expert"].step_time
        base = [r for k, r in res.items() if k not in ("rl", "ppo") and r.valid]
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
        rl = res.get("rl")
        if rl is not None:
            base_time = best_base.step_time if best_base else np.inf
            run["rl_ge_best_baseline"] = at_least_as_fast(rl, base_time)
            run["rl_speedup_over_expert"] = exp / rl.step_time - 1
            run["rl_iterations"] = rl.extra.get("iterations", 0)
            run["rl_final_descents"] = rl.extra.get("final_descents", 0)
            run["rl_final_kicks"] = rl.extra.get("final_kicks", 0)
            run["rl_final_anneal_evals"] = rl.extra.get("final_anneal_evals", 0)
            run["rl_before_final_ms"] = rl.extra.get("cost_before_final", float("nan")) * 1e3
            heur = [r for k, r in res.items() if k in HEURISTICS and r.valid]
            best_h = min((r.step_time for r in heur), default=np.inf)
            run["rl_ge_best_heuristic"] = at_least_as_fast(rl, best_h)
            if "sa" in res:
                run["rl_ge_sa"] = at_least_as_fast(rl, res["sa"].step_time)
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
    with_rl = [r for r in runs if "rl_ge_best_baseline" in r]
    nmt4 = next((r for r in runs if r["graph"] == "nmt4" and r["cluster"] == "k80x4"), None)
    mem = next((r for r in runs if r["graph"] == "moe_lstm" and r["cluster"] == "k80x4"), None)
    heur_times = [r["methods"][h]["search_s"] for r in runs for h in HEURISTICS]
    rl_times = [r["methods"]["rl"]["search_s"] for r in with_rl]
    out = {
        "rl_ge_best_baseline_count": sum(r["rl_ge_best_baseline"] for r in with_rl),
        "runs_with_rl": len(with_rl),
        "rl_ge_best_baseline_misses": [
            f"{r['graph']}@{r['cluster']}" for r in with_rl if not r["rl_ge_best_baseline"]
        ],
        "rl_ge_best_heuristic_count": sum(r["rl_ge_best_heuristic"] for r in with_rl),
        "rl_ge_sa_count": sum(r.get("rl_ge_sa", False) for r in with_rl),
        "nmt4_k80x4_rl_speedup_over_expert": nmt4.get("rl_speedup_over_expert") if nmt4 else None,
        "memory_bound_moe_lstm_k80x4": None
        if mem is None
        else {
            "single_valid": mem["methods"]["single"]["valid"],
            "rl_valid": mem["methods"].get("rl", {}).get("valid"),
            "valid_methods": [k for k, v in mem["methods"].items() if v["valid"]],
        },
        "max_heuristic_search_s": max(heur_times),
        "max_rl_search_s": max(rl_times) if rl_times else None,
        "simulator": throughput,
        "rl_imitation": args.rl_imitate_runs > 0,
        "budgets_s": {"rl_cap": args.rl_budget, "sa": args.sa_budget, "ppo": args.ppo_budget},
        "rl_iterations": args.rl_iters,
        "rl_restarts": args.rl_restarts,
        "rl_batch": args.rl_batch,
        "rl_epochs": args.rl_epochs,
        "rl_imitate_runs": args.rl_imitate_runs,
        "rl_sil": args.rl_sil,
        "rl_polish": args.rl_polish,
        "rl_final_starts": args.rl_final_starts,
        "rl_final_kick": args.rl_final_kick,
        "rl_anneal": args.rl_anneal,
        "rl_final_calls": args.rl_final_calls,
        "jobs": args.jobs,
        "rl_capped_by_wall_time": [
            f"{r['graph']}@{r['cluster']}" for r in with_rl if r.get("rl_iterations", 0) < args.rl_iters
        ],
        "evaluations": {
            f"{r['graph']}@{r['cluster']}": {k: r["methods"][k]["evaluations"] for k in ("sa", "rl", "ppo")
                                              if k in r["methods"]}
            for r in runs
        },
        **{key: {f"{r['graph']}@{r['cluster']}": r[key] for r in with_rl}  # per pair, as the runs hold them
           for key in ("rl_final_descents", "rl_final_kicks", "rl_final_anneal_evals", "rl_before_final_ms")},
        "published": PUBLISHED,
        "speedup_over_expert": {
            f"{r['graph']}@{r['cluster']}": round(r.get("rl_speedup_over_expert", 0), 4) for r in with_rl
        },
    }
    print_json_line(out)


if __name__ == "__main__":
    main()
