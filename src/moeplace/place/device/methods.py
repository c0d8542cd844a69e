"""Run any placement method by name on a DevicePlacementProblem and report it the same way."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moeplace.errors import InputError
from moeplace.place.device.baselines import HEURISTICS
from moeplace.place.device.problem import DevicePlacementProblem

SEARCHES = ("sa", "rl", "ppo")
METHODS = (*HEURISTICS, *SEARCHES)


@dataclass
class MethodResult:
    """A method's placement, its simulated outcome and how long the search took."""

    method: str
    placement: np.ndarray  # group -> device index
    step_time: float  # seconds (simulated)
    valid: bool
    peak_memory: np.ndarray  # bytes per device
    search_s: float
    evaluations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class _BestTracker:
    """Wraps a problem; remembers the best complete placement any cost() call has seen (for PPO)."""

    def __init__(self, problem: DevicePlacementProblem) -> None:
        self._p, self.best, self.best_cost, self.calls = problem, None, float("inf"), 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)

    @property
    def num_nodes(self) -> int:
        return self._p.num_nodes

    @property
    def num_slots(self) -> int:
        return self._p.num_slots

    def cost(self, placement: np.ndarray) -> float:
        c = self._p.cost(placement)
        self.calls += 1
        if np.min(placement) >= 0 and c < self.best_cost:
            self.best, self.best_cost = np.asarray(placement).copy(), c
        return c


def run_ppo(problem: DevicePlacementProblem, budget_s: float, seed: int, init: np.ndarray | None) -> dict:
    """PPO (moeplace.rl) with the placement core's graph policy on PlacementEnv, for `budget_s` seconds."""
    from moeplace.place.env import PlacementEnv
    from moeplace.place.policy import PlacementPolicy
    from moeplace.rl import PPO

    tracker = _BestTracker(problem)
    if init is not None:
        tracker.cost(init)
    env = PlacementEnv(tracker)
    policy = PlacementPolicy(tracker, hidden=64, rounds=2)
    n = problem.num_nodes
    algo = PPO(
        policy,
        env,
        n_steps=max(n * 4, 64),
        n_minibatches=4,
        n_epochs=4,
        learning_rate=1e-3,
        ent_coef=0.01,
        seed=seed,
        gamma=1.0,
        gae_lambda=1.0,
        anneal_lr=False,
    )
    start = time.perf_counter()
    interrupted = False
    try:
        algo.learn(10**9, callback=lambda a, s: time.perf_counter() - start < budget_s, progress_bar=False)
    except KeyboardInterrupt:  # Ctrl-C: keep the best placement sampled so far
        interrupted = True
    return {"placement": tracker.best, "cost": tracker.best_cost, "evaluations": tracker.calls,
            "interrupted": interrupted}


def run_method(
    name: str,
    problem: DevicePlacementProblem,
    budget_s: float = 60.0,
    seed: int = 0,
    init: np.ndarray | None = None,
    rl_imitation: bool = False,
    rl_iters: int | None = None,
    rl_options: dict[str, Any] | None = None,
) -> MethodResult:
    """Run method `name` (see METHODS). `init` seeds SA (and RL/PPO when `rl_imitation`).

    RL runs `rl_iters` REINFORCE iterations in all when given (reproducible for a seed), with
    `budget_s` as a wall-time cap; `rl_options` are further train_colocrl arguments (batch, epochs, ...).
    """
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    evals = 0
    if name in HEURISTICS:
        fn = HEURISTICS[name]
        placement = fn(problem, seed=seed) if name == "metis" else fn(problem)
    elif name == "sa":
        from moeplace.place.search import simulated_annealing

        r = simulated_annealing(problem, budget_s=budget_s, seed=seed, init=init, progress=True)
        placement, evals = r.placement, r.evaluations
        extra["interrupted"] = bool(r.interrupted)
    elif name == "rl":
        from moeplace.place.device.colocrl import train_colocrl

        r = train_colocrl(problem, budget_s, seed=seed, init=init, imitation_steps=500 if rl_imitation else 0,
                          max_iters=rl_iters, **(rl_options or {}))
        placement, evals = r["placement"], r["evaluations"]
        extra = {"iterations": r["iterations"], "samples": r["samples"],
                 "final_descents": r["final_descents"], "final_kicks": r["final_kicks"],
                 "final_anneal_evals": r["final_anneal_evals"],
                 "cost_before_final": r["cost_before_final"], "interrupted": bool(r["interrupted"]),
                 "imitation": bool(rl_imitation and init is not None)}
    elif name == "ppo":
        r = run_ppo(problem, budget_s, seed, init if rl_imitation else None)
        placement, evals = r["placement"], r["evaluations"]
        extra["interrupted"] = bool(r["interrupted"])
    else:
        raise InputError(f"--method {name}: unknown method (choose from {', '.join(METHODS)}, all)")
    search_s = time.perf_counter() - start
    if placement is None:  # the budget ended before a single placement was sampled
        placement = init if init is not None else HEURISTICS["single"](problem)
        extra["no_sample"] = True
    res = problem.simulate(placement)
    return MethodResult(
        method=name,
        placement=np.asarray(placement, dtype=np.int64),
        step_time=res.step_time,
        valid=res.valid,
        peak_memory=res.peak_memory,
        search_s=search_s,
        evaluations=evals,
        extra=extra,
    )


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
