"""Run any placement method by name on a DevicePlacementProblem and report it the same way."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from moeplace.errors import InputError
from moeplace.place.device.baselines import HEURISTICS
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.rl_config import RLConfig
from moeplace.place.search import SearchResult

SEARCHES = ("sa", "rl", "rl+ls", "ppo", "transfer")
METHODS = (*HEURISTICS, *SEARCHES)


@dataclass(kw_only=True)
class MethodResult(SearchResult):
    """What every method returns: the search's result (placement, cost, evaluations, wall time,
    history, interrupted, extra) and the placement's simulated outcome."""

    method: str
    step_time: float  # seconds (simulated)
    valid: bool
    peak_memory: np.ndarray  # bytes per device

    @property
    def search_s(self) -> float:
        """Seconds the method took (the search's wall time)."""
        return self.wall_s


def evaluated(problem: DevicePlacementProblem, method: str, search: SearchResult) -> MethodResult:
    """`search`'s result with its placement simulated (a NaN cost is filled in from the simulation)."""
    res = problem.simulate(search.placement)
    fields = {k: getattr(search, k) for k in SearchResult.__dataclass_fields__}
    fields["placement"] = np.asarray(search.placement, dtype=np.int64)
    if math.isnan(fields["cost"]):
        fields["cost"] = float(problem.cost_of(res.step_time, res.peak_memory))
    return MethodResult(**fields, method=method, step_time=res.step_time, valid=res.valid,
                        peak_memory=res.peak_memory)


def _ppo(problem: DevicePlacementProblem, budget_s: float, seed: int) -> SearchResult:
    """PPO (moeplace.rl) with the placement core's graph policy, through `place.search.rl_search`."""
    import torch

    from moeplace.place.policy import PlacementPolicy
    from moeplace.place.search import rl_search

    torch.manual_seed(seed)
    policy = PlacementPolicy(problem, hidden=64, rounds=2)
    return rl_search(problem, policy=policy, budget_s=budget_s, seed=seed, progress=True,
                     n_steps=max(problem.num_nodes * 4, 64), learning_rate=1e-3, gae_lambda=1.0)


def run_method(
    name: str,
    problem: DevicePlacementProblem,
    budget_s: float = 60.0,
    seed: int = 0,
    init: np.ndarray | None = None,
    rl_config: RLConfig | None = None,
    policy: Any = None,
    finetune_s: float = 0.0,
    zero_shot_s: float | None = None,
) -> MethodResult:
    """Run method `name` (see METHODS) and simulate its placement. `init` (the best heuristic's
    placement) starts SA; rl, rl+ls and ppo use it only with `rl_config.imitation`.

    `rl`: the seq2seq policy trained by REINFORCE alone; `rl+ls`: the same plus local search (in the
    loop and at the end); `rl_config.iterations` makes them reproducible, `budget_s` is then a cap.
    `transfer`, and `rl` given a pre-trained `policy` (a TransferPlacer): its zero-shot placement, then
    `finetune_s` seconds of RL alone on this problem (`budget_s` is not used); `zero_shot_s`: the
    zero-shot sampling time (None: finetune.ZERO_SHOT_S; 0: one batch).
    """
    cfg = rl_config if rl_config is not None else RLConfig()
    start = time.perf_counter()
    if name in HEURISTICS:
        fn = HEURISTICS[name]
        placement = fn(problem, seed=seed) if name == "metis" else fn(problem)
        r = SearchResult(placement, math.nan, 0, 0.0)  # its cost comes from the simulation below
    elif name == "sa":
        from moeplace.place.search import simulated_annealing

        r = simulated_annealing(problem, budget_s=budget_s, seed=seed, init=init, progress=True)
    elif name == "transfer" or (name == "rl" and policy is not None):
        from moeplace.place.device.finetune import ZERO_SHOT_S, transfer_search
        from moeplace.place.device.transfer import load_policy, packaged_policy

        policy = policy if policy is not None else load_policy(packaged_policy())
        zs = ZERO_SHOT_S if zero_shot_s is None else zero_shot_s
        r = transfer_search(problem, policy, finetune_s=finetune_s, zero_shot_s=zs, seed=seed)
    elif name in ("rl", "rl+ls"):
        from moeplace.place.device.colocrl import seq2seq_search

        r = seq2seq_search(problem, cfg, with_local_search=name == "rl+ls", budget_s=budget_s, seed=seed,
                           init=init)
        r.extra["imitation"] = bool(cfg.imitation and init is not None)
    elif name == "ppo":
        r = _ppo(problem, budget_s, seed)
        if cfg.imitation and init is not None and problem.cost(init) < r.cost:  # the start stays a candidate
            r.placement, r.cost = np.asarray(init).copy(), float(problem.cost(init))
    else:
        raise InputError(f"--method {name}: unknown method (choose from {', '.join(METHODS)}, all)")
    r.wall_s = time.perf_counter() - start
    if r.placement is None:  # the budget ended before a single placement was sampled
        r.placement = init if init is not None else HEURISTICS["single"](problem)
        r.cost = float(problem.cost(r.placement))
        r.extra["no_sample"] = True
    return evaluated(problem, name, r)


def placement_to_json(problem: DevicePlacementProblem, placement: np.ndarray) -> dict[str, Any]:
    """{"ops": {op name: device name}, "groups": {...}} for a group placement."""
    names = problem.cluster.names
    op_dev = problem.op_device(placement)
    return {
        "format": "moeplace.device_placement/1",
        "cluster": problem.cluster.name,
        "model": problem.graph.meta.get("model", ""),
        "ops": {op: names[d] for op, d in zip(problem.graph.names, op_dev.tolist())},
        "groups": {
            grp: names[d] for grp, d in zip(problem.graph.group_names, np.asarray(placement).tolist())
        },
    }


def placement_from_json(
    problem: DevicePlacementProblem, data: dict[str, Any], source: str = "placement"
) -> np.ndarray:
    """Group placement from a placement JSON's "ops" map; InputError on unknown ops or devices."""
    ops = data.get("ops") if isinstance(data, dict) else None
    if not isinstance(ops, dict):
        raise InputError(f"{source}: missing field 'ops' (op name -> device name)")
    cluster, graph = problem.cluster, problem.graph
    index = {n: i for i, n in enumerate(graph.names)}
    placement = np.full(graph.num_groups, -1, np.int64)
    for op, dev in ops.items():
        if op not in index:
            raise InputError(f"{source}: unknown op '{op}'")
        if dev not in cluster.names:
            raise InputError(
                f"{source}: op '{op}' names unknown device '{dev}' "
                f"(cluster '{cluster.name}' has {', '.join(cluster.names)})"
            )
        g = graph.group[index[op]]
        d = cluster.names.index(dev)
        if placement[g] not in (-1, d):
            raise InputError(f"{source}: op '{op}' breaks co-location group '{graph.group_names[g]}'")
        placement[g] = d
    if (placement < 0).any():
        missing = graph.group_names[int(np.flatnonzero(placement < 0)[0])]
        raise InputError(f"{source}: no device given for group '{missing}'")
    return placement
