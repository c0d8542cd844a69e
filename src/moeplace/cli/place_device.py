"""`moeplace place device ...`: place a model's ops on a cluster's devices; `place device-calibrate`."""

from __future__ import annotations

import argparse
from typing import Any

from moeplace.cli.args import duration, duration_or_off, nonneg_int, positive_int

# `place device ACTION ...`: each action lives in its own module defining `register(actions)`;
# without an action, `place device --model ...` places the model.
_ACTIONS = ["moeplace.cli.device_pretrain"]


def register(sub: argparse._SubParsersAction) -> None:
    """Register `place device` and `place device-calibrate`."""
    p = sub.add_parser(
        "device",
        help="device placement: which device runs each op of a model",
        description="Place a model's op groups on a cluster's devices and compare methods in the "
        "step-time simulator.",
    )
    p.add_argument(
        "--model",
        default="nmt4",
        help="benchmark name (rnnlm, nmt2, nmt4, nmt8, inception, "
        "transformer, moe_lstm) or module:attr, a callable returning (nn.Module, example inputs)",
    )
    p.add_argument("--size", default="full", choices=["full", "small", "tiny"], help="benchmark model size")
    p.add_argument("--graph", help="load a saved op graph (JSON) instead of tracing --model")
    p.add_argument("--save-graph", help="write the traced op graph as JSON")
    p.add_argument("--grouping", default="module", help="co-location groups: module, layer, op, or a depth")
    p.add_argument("--cluster", default="k80x4", help="preset (k80x4, a100x8, hetero) or a YAML/JSON file")
    p.add_argument(
        "--method",
        default="all",
        help="comma list of single, round_robin, expert, layer_split, metis, heft, m_etf, m_topo, sa, rl "
        "(policy gradient alone), rl+ls (RL, then local search), ppo, transfer (the pre-trained "
        "transfer policy: zero-shot, then --finetune-budget of RL); or all",
    )
    p.add_argument("--budget", type=duration, default=60.0,
                   help="time per search method (sa, rl, rl+ls, ppo), e.g. 90s, 10m")
    p.add_argument(
        "--rl-config",
        default=None,
        metavar="PRESET|FILE",
        help="settings of rl, rl+ls and ppo: a preset (default, paper, benchmark) or a JSON file "
        "(see docs/device.md); e.g. {\"iterations\": 300, \"imitation\": true}",
    )
    p.add_argument("--policy", default=None, metavar="DIR",
                   help="rl starts from this pre-trained transfer policy (a `place device pretrain` "
                   "folder) instead of a fresh seq2seq policy; method transfer uses it too (default: the "
                   "policy shipped in the package)")
    p.add_argument("--finetune-budget", type=duration_or_off, default=0.0,
                   help="with --policy, and for method transfer: RL fine-tuning time after the zero-shot "
                   "placement (default 0s: zero-shot only)")
    p.add_argument("--zero-shot-budget", type=duration_or_off, default=None, metavar="T",
                   help="with --policy, and for method transfer: zero-shot sampling time, batch after batch "
                   "without weight changes, best of all; 0 = one batch (default 1.5s, at most 2s)")
    p.add_argument("--placement", help="also evaluate this placement JSON (op -> device name)")
    p.add_argument("--out", help="write the best valid placement as JSON (op -> device)")
    p.add_argument("--png", help="write the best placement's per-device timeline as PNG")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--json", action="store_true", help="print the results as one JSON line")
    p.set_defaults(func=run)
    from moeplace.cli import register_modules

    actions = p.add_subparsers(dest="device_action", metavar="ACTION", required=False, parser_class=type(p))
    register_modules(actions, _ACTIONS)
    c = sub.add_parser(
        "device-calibrate",
        help="compare the simulator's prediction with this CPU",
        description="Measure a model's real step and per-op times on this CPU and compare with "
        "the simulator's single-device prediction.",
    )
    c.add_argument("--model", default="nmt2", help="benchmark name or module:attr (as for place device)")
    c.add_argument("--size", default="small", choices=["full", "small", "tiny"])
    c.add_argument("--repeats", type=positive_int, default=5)
    c.add_argument("--seed", type=nonneg_int, default=0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_calibrate)


def load_model(spec: str, size: str, device: str = "meta") -> tuple[Any, tuple]:
    """A benchmark name, or module:attr naming a callable that returns (module, example inputs)."""
    import importlib

    from moeplace.errors import InputError
    from moeplace.place.device.models import BENCHMARKS, build_benchmark

    if ":" not in spec:
        if spec not in BENCHMARKS:
            raise InputError(
                f"--model {spec}: unknown benchmark (choose from {', '.join(BENCHMARKS)}) or give module:attr"
            )
        return build_benchmark(spec, size, device)
    mod_name, attr = spec.split(":", 1)
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"--model {spec}: cannot import ({e})") from e
    out = obj() if callable(obj) else obj
    if not (isinstance(out, tuple) and len(out) == 2):
        raise InputError(f"--model {spec}: must return (nn.Module, tuple of example inputs)")
    module, inputs = out
    return module, tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def run(args: argparse.Namespace) -> int:
    """Trace, build the problem, run the methods, print the table, write JSON / PNG."""
    import json

    import torch

    from moeplace.errors import InputError
    from moeplace.place.device.cluster import load_cluster
    from moeplace.place.device.finetune import ZERO_SHOT_MAX_S
    from moeplace.place.device.graph import OpGraph
    from moeplace.place.device.methods import (
        METHODS,
        evaluated,
        placement_from_json,
        placement_to_json,
        run_method,
    )
    from moeplace.place.device.problem import DevicePlacementProblem
    from moeplace.place.device.render import render_timeline
    from moeplace.place.device.rl_config import load_rl_config
    from moeplace.place.device.trace import trace_graph
    from moeplace.place.search import SearchResult
    from moeplace.utils import atomic_write_text, markdown_table, print_json_line, seed_everything

    if args.zero_shot_budget is not None and args.zero_shot_budget > ZERO_SHOT_MAX_S:
        raise InputError(f"--zero-shot-budget {args.zero_shot_budget:g}s: at most {ZERO_SHOT_MAX_S:g}s "
                         "(a longer search is fine-tuning: --finetune-budget)")
    seed_everything(args.seed)
    torch.set_num_threads(1)
    rl_config = load_rl_config(args.rl_config)
    cluster = load_cluster(args.cluster)
    if args.graph:
        graph = OpGraph.load(args.graph)
    else:
        module, inputs = load_model(args.model, args.size)
        graph = trace_graph(module, inputs, name=args.model)
    grouping = int(args.grouping) if args.grouping.isdigit() else args.grouping
    graph.regroup(grouping)
    if args.save_graph:
        graph.save(args.save_graph)
    problem = DevicePlacementProblem(graph, cluster)
    methods = (
        list(METHODS) if args.method == "all" else [m.strip() for m in args.method.split(",") if m.strip()]
    )
    for m in methods:
        if m not in METHODS:
            raise InputError(f"--method {m}: unknown method (choose from {', '.join(METHODS)}, all)")
    budget, finetune_s = args.budget, args.finetune_budget
    policy = None
    if args.policy is not None or "transfer" in methods:
        from moeplace.place.device.transfer import load_policy, packaged_policy

        policy = load_policy(args.policy if args.policy is not None else packaged_policy())
    searches = ("sa", "rl", "rl+ls", "ppo", "transfer")
    results = {}
    for m in [x for x in methods if x not in searches]:
        results[m] = run_method(m, problem, seed=args.seed)
    valid = [r for r in results.values() if r.valid]
    init = min(valid, key=lambda r: r.step_time).placement if valid else None
    interrupted = False
    for m in [x for x in methods if x in searches]:
        results[m] = run_method(m, problem, budget_s=budget, seed=args.seed, init=init, rl_config=rl_config,
                                policy=policy if (m == "transfer" or args.policy) else None,
                                finetune_s=finetune_s, zero_shot_s=args.zero_shot_budget)
        if results[m].interrupted:  # Ctrl-C: keep what this search found, run no more
            interrupted = True
            break
    if args.placement:
        try:
            with open(args.placement) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"--placement {args.placement}: cannot read ({e})") from e
        pl = placement_from_json(problem, data, source=args.placement)
        results["given"] = evaluated(problem, "given", SearchResult(pl, float("nan"), 0, 0.0))
    single = results.get("single") or run_method("single", problem)
    expert = results.get("expert") or run_method("expert", problem)
    rows = []
    for name, r in results.items():
        rows.append(
            {
                "method": name + (" (interrupted)" if r.interrupted else ""),
                "step_ms": r.step_time * 1e3,
                "vs_single": single.step_time / r.step_time,
                "vs_expert": expert.step_time / r.step_time,
                "peak_gb": "/".join(f"{x / 1e9:.1f}" for x in r.peak_memory),
                "valid": "valid" if r.valid else "OOM",
                "search_s": r.search_s,
                "evals": r.evaluations,
            }
        )
    summary = graph.summary()
    best = min((r for r in results.values() if r.valid), key=lambda r: r.step_time, default=None)
    if args.out and best is not None:
        atomic_write_text(args.out, json.dumps(placement_to_json(problem, best.placement), indent=1))
    if args.png and best is not None:
        render_timeline(
            problem.simulate(best.placement),
            cluster,
            args.png,
            title=f"{args.model} on {cluster.name}: {best.method}, step {best.step_time * 1e3:.2f} ms",
        )
    if args.json:
        print_json_line(
            {
                "model": args.model,
                "cluster": cluster.name,
                "graph": summary,
                "results": rows,
                "best": best.method if best else None,
                "devices": cluster.names,
            }
        )
    else:
        print(
            f"{args.model}: {summary['ops']} ops, {summary['groups']} groups, "
            f"{summary['fwd_gflops'] + summary['bwd_gflops']:.1f} GFLOP/step, {summary['param_mb']:.0f} MB "
            f"parameters; cluster {cluster.name}: {', '.join(cluster.names)}"
        )
        print(markdown_table(rows))
        if best is not None:
            print(
                f"best: {best.method} ({best.step_time * 1e3:.2f} ms)"
                + (f" -> {args.out}" if args.out else "")
            )
        else:
            print("no method found a placement that fits in memory")
    return 130 if interrupted else 0


def run_calibrate(args: argparse.Namespace) -> int:
    """Measure on this CPU and print predicted vs measured."""
    import torch

    from moeplace.place.device.calibrate import calibrate
    from moeplace.utils import markdown_table, print_json_line, seed_everything

    seed_everything(args.seed)
    torch.set_num_threads(1)
    module, inputs = load_model(args.model, args.size, device="cpu")
    r = calibrate(module, inputs, repeats=args.repeats)
    if args.json:
        print_json_line(r)
    else:
        print(markdown_table([{k: v for k, v in r.items()}]))
    return 0
