"""Local search for any PlacementProblem: descent by moves and swaps, multi-start descent, iterated
local search (kicks), annealing with window moves, and the stage that chains them (`local_search`).

Every function looks costs up through `CachedCost` (a deterministic cost is computed once per
distinct placement) and moves nodes to any slot: the protocol's cost already gives an infeasible
placement a finite penalty, so an illegal move is simply never an improvement. Budgets are cost
look-ups (reproducible for a seed) with an optional wall-clock deadline; Ctrl-C ends a search
with the best placement it has reached.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from moeplace.place.core import PlacementProblem
from moeplace.place.search import SearchResult, generic_move, simulated_annealing

Scored = tuple[float, np.ndarray]  # (cost, placement)


class CachedCost:
    """The problem's cost with repeated placements looked up (the cost must be deterministic).

    `lookups` counts calls; `counter[0]` counts real cost calls (a list, so several caches can share it).
    """

    def __init__(self, problem: PlacementProblem, counter: list[int] | None = None) -> None:
        self.problem, self.table, self.lookups = problem, {}, 0
        self.counter = counter if counter is not None else [0]

    def __call__(self, placement: np.ndarray) -> float:
        self.lookups += 1
        key = np.asarray(placement, dtype=np.int16).tobytes()
        c = self.table.get(key)
        if c is None:
            c = self.table[key] = float(self.problem.cost(placement))
            self.counter[0] += 1
        return c


def descend(placement: np.ndarray, cost: float, cost_fn: CachedCost, num_slots: int,
            rng: np.random.Generator, max_calls: int, swaps: bool = False) -> tuple[np.ndarray, float]:
    """Greedy first-improvement descent: move one node to another slot while that lowers the cost,
    until a full pass over the nodes finds nothing or `max_calls` costs were looked up.

    With `swaps`, a pass without a gain is followed by a pass over every pair of nodes on different
    slots (random order) that exchanges their slots; a gain there returns to single moves. The
    result is then a local optimum for both moves (annealing's two moves), unless the calls run out.
    """
    best, best_cost, calls = placement.copy(), cost, 0
    improved = True
    while improved and calls < max_calls:
        improved = False
        for g in rng.permutation(len(best)):
            for d in rng.permutation(num_slots):
                if d == best[g] or calls >= max_calls:
                    continue
                trial = best.copy()
                trial[g] = d
                c = cost_fn(trial)
                calls += 1
                if c < best_cost:
                    best, best_cost, improved = trial, c, True
                    break
        if improved or not swaps:
            continue
        a_idx, b_idx = np.triu_indices(len(best), 1)
        differ = best[a_idx] != best[b_idx]
        a_idx, b_idx = a_idx[differ], b_idx[differ]
        for i in rng.permutation(len(a_idx)):
            if calls >= max_calls:
                break
            a, b = a_idx[i], b_idx[i]
            trial = best.copy()
            trial[a], trial[b] = best[b], best[a]
            c = cost_fn(trial)
            calls += 1
            if c < best_cost:
                best, best_cost, improved = trial, c, True
                break
    return best, best_cost


def interleave(runs: list[list[Scored]]) -> list[Scored]:
    """Each run's (cost, placement) list cheapest first, taken in turn: the best of every run, then
    every run's second best, ...; the runs ordered by their best cost; repeated placements dropped."""
    ranked = sorted((sorted(r, key=lambda cp: cp[0]) for r in runs if r), key=lambda r: r[0][0])
    out, seen = [], set()
    for i in range(max((len(r) for r in ranked), default=0)):
        for r in ranked:
            if i < len(r) and r[i][1].tobytes() not in seen:
                seen.add(r[i][1].tobytes())
                out.append(r[i])
    return out


def multi_start_descent(starts: list[Scored], cost_fn: CachedCost, num_slots: int, seed: int,
                        max_calls: int, deadline: float = math.inf
                        ) -> tuple[np.ndarray | None, float, int, bool]:
    """Descend (moves and swaps) from each (cost, placement) of `starts` in order while `max_calls`
    look-ups remain and, after the first start, before `deadline` (perf_counter); the best local
    optimum reached (None, inf if none was), its cost, how many starts were descended, and whether
    Ctrl-C ended it (the optima reached until then are kept).

    One start's descent ends in the basin it began in; good placements from different runs often
    lie in different basins, so several starts find better optima than the best start alone.
    """
    rng = np.random.default_rng(seed)
    best, best_cost, left, done, interrupted = None, math.inf, max_calls, 0, False
    try:
        for cost, placement in starts:
            if left <= 0 or (done > 0 and time.perf_counter() >= deadline):
                break
            before = cost_fn.lookups
            p, c = descend(placement, cost, cost_fn, num_slots, rng, left, swaps=True)
            left -= cost_fn.lookups - before
            done += 1
            if c < best_cost:
                best, best_cost = p, c
    except KeyboardInterrupt:
        interrupted = True
    return best, best_cost, done, interrupted


def iterated_local_search(placement: np.ndarray, cost: float, cost_fn: CachedCost, num_slots: int,
                          seed: int, max_calls: int, size: int = 5, deadline: float = math.inf
                          ) -> tuple[np.ndarray, float, int, bool]:
    """Iterated local search (Lourenco, Martin and Stutzle, 2003) from a local optimum: move `size`
    random nodes to random slots (a kick), descend by moves and swaps, keep the new optimum if it
    is no worse; until `max_calls` look-ups are used or `deadline` (perf_counter) passes.
    Returns the best placement, its cost, the number of kicks, and whether Ctrl-C ended it.

    A descent alone stops at the first local optimum; kicks small enough to land in a nearby
    basin walk from optimum to optimum, without a temperature to tune.
    """
    rng = np.random.default_rng(seed)
    best, best_cost, n, interrupted = placement.copy(), cost, 0, False
    start_calls = cost_fn.lookups
    size = min(size, len(best))
    longest = 0.0  # the longest kick so far; a kick starts only if one that long fits before the deadline
    try:
        while ((left := max_calls - (cost_fn.lookups - start_calls)) > 0
               and (t := time.perf_counter()) + longest < deadline):
            trial = best.copy()
            nodes = rng.choice(len(trial), size, replace=False)
            trial[nodes] = rng.integers(num_slots, size=size)
            p, c = descend(trial, cost_fn(trial), cost_fn, num_slots, rng, left - 1, swaps=True)
            n += 1
            longest = max(longest, time.perf_counter() - t)
            if c <= best_cost:
                best, best_cost = p, c
    except KeyboardInterrupt:
        interrupted = True
    return best, best_cost, n, interrupted


class WindowMoves:
    """A problem seen through annealing: its cost, plus a move that puts a run of 2 to `longest`
    nodes consecutive in `order` (default: node order) on one random slot (with probability
    `share`; else the generic relocate/swap move).

    A branch of an Inception module or a stack of layers is such a run in topological order:
    moving it as one keeps the transfers at its ends only, where moving its nodes one by one first
    adds transfers in between, an uphill step annealing must be lucky to take.
    """

    def __init__(self, problem: PlacementProblem, order: np.ndarray | None = None, share: float = 0.2,
                 longest: int = 8) -> None:
        self.problem, self.share, self.longest = problem, share, longest
        self.order = np.arange(problem.num_nodes) if order is None else np.asarray(order)

    @property
    def num_nodes(self) -> int:
        """The problem's number of nodes."""
        return self.problem.num_nodes

    @property
    def num_slots(self) -> int:
        """The problem's number of slots."""
        return self.problem.num_slots

    def cost(self, placement: np.ndarray) -> float:
        """The problem's cost."""
        return self.problem.cost(placement)

    def legal_mask(self, placement: np.ndarray, node: int) -> np.ndarray:
        """The problem's legal slots."""
        return self.problem.legal_mask(placement, node)

    def propose_move(self, placement: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """A window move with probability `share`, else the generic move; None if nothing changes."""
        if rng.random() >= self.share:
            return generic_move(self.problem, placement, rng)
        start = int(rng.integers(len(self.order)))
        run = self.order[start:start + int(rng.integers(2, self.longest + 1))]
        new = placement.copy()
        new[run] = rng.integers(self.num_slots)
        return None if (new == placement).all() else new


def anneal_and_descend(problem: PlacementProblem, placement: np.ndarray, cost: float, cost_fn: CachedCost,
                       seed: int, evals: int, scale: float, max_calls: int, deadline: float = math.inf,
                       share: float = 0.5, order: np.ndarray | None = None
                       ) -> tuple[np.ndarray, float, int, bool]:
    """Simulated annealing (the placement core's, with `WindowMoves` over `order`) from a local optimum
    for `evals` evaluations (and, with a deadline, `share` of the time left), starting at `scale`
    times the mean |Δcost| of 200 probe moves; its best placement is then descended (moves and
    swaps, at most `max_calls` look-ups of `cost_fn`). Returns the better of that optimum and the
    start, its cost, the annealing's evaluations (also added to `cost_fn.counter`), and whether
    Ctrl-C ended it.

    Kicks of a few nodes fall back into a wide basin; annealing's long uphill walks leave it, and a
    cool start keeps the walk near good placements.
    """
    span = None if deadline == math.inf else (deadline - time.perf_counter()) * share
    if span is not None and span <= 0:
        return placement, cost, 0, False
    r = simulated_annealing(WindowMoves(problem, order), budget_s=span, max_evals=evals, seed=seed,
                            init=placement, t0_scale=scale, probes=200, progress=False)
    cost_fn.counter[0] += r.evaluations
    if r.cost >= cost:
        return placement, cost, r.evaluations, r.interrupted
    if r.interrupted:
        return r.placement, r.cost, r.evaluations, True
    try:
        p, c = descend(r.placement, r.cost, cost_fn, problem.num_slots, np.random.default_rng(seed),
                       max_calls, swaps=True)
    except KeyboardInterrupt:
        return r.placement, r.cost, r.evaluations, True
    return p, c, r.evaluations, False


@dataclass
class LocalSearchConfig:
    """The local-search stage's settings (`local_search`); `in_loop_calls` and `share` are read by
    the searches that run it after RL (`rl+ls`)."""

    calls: int = 400_000
    """Cost look-ups shared by the descents and the kicks (0: no stage at all)."""
    starts: int = 1
    """Best distinct placements of each run that the multi-start descent starts from."""
    anneal: int = 5000
    """Annealing evaluations per node of each annealing (0: none; a budget of its own)."""
    anneal_scales: tuple[float, ...] = (1 / 3, 1.0)
    """Start temperatures of the annealings, times the mean |Δcost| of 200 probe moves."""
    kick_size: int = 5
    """Nodes moved by each kick of the iterated local search (0: no kicks)."""
    in_loop_calls: int = 500
    """rl+ls: look-ups of the descent from each RL batch's best sample (expert iteration; 0: none)."""
    share: float = 0.25
    """rl+ls with a wall-time budget alone: the share of it kept for this stage."""

    def __post_init__(self) -> None:
        self.anneal_scales = tuple(float(s) for s in self.anneal_scales)


def local_search(problem: PlacementProblem, runs: list[list[Scored]], config: LocalSearchConfig,
                 seed: int = 0, deadline: float = math.inf, order: np.ndarray | None = None,
                 bar: Any = None) -> SearchResult | None:
    """From the good placements of one or more runs: a multi-start descent (each run's best in turn),
    then one `anneal_and_descend` per scale from the optimum reached (the best goes on), then
    iterated local search for the look-ups left, all stopping at `deadline`. The best placement
    reached (None when nothing was descended); `extra` counts descents, kicks and annealing evaluations.
    """
    start, counter = time.perf_counter(), [0]
    cost_fn = CachedCost(problem, counter)
    note = bar.set_postfix_str if bar is not None else (lambda _s: None)
    starts = interleave(runs)
    note(f"final descent from {len(starts)} placements")
    p, c, descents, interrupted = multi_start_descent(starts, cost_fn, problem.num_slots, seed,
                                                      config.calls, deadline)
    if p is None:
        return None
    kicked, annealed = 0, 0
    if config.anneal > 0 and not interrupted:
        optimum, optimum_cost = p, c  # every annealing starts here; the best result goes on
        n_anneals, evals = len(config.anneal_scales), config.anneal * len(optimum)
        for i, scale in enumerate(config.anneal_scales):
            note(f"annealing {i + 1}/{n_anneals} from {optimum_cost * 1e3:.3f} ms")
            left = config.calls - cost_fn.lookups
            share = 0.75 / (n_anneals - i)  # a quarter of the time stays for the kicks
            q, qc, n, interrupted = anneal_and_descend(problem, optimum, optimum_cost, cost_fn, seed + i,
                                                       evals, scale, left, deadline, share, order)
            annealed += n
            if qc < c:
                p, c = q, qc
            if interrupted:
                break
    left = config.calls - cost_fn.lookups
    if config.kick_size > 0 and left > 0 and not interrupted:
        note(f"kicks of {config.kick_size} nodes from {c * 1e3:.3f} ms")
        p, c, kicked, interrupted = iterated_local_search(p, c, cost_fn, problem.num_slots, seed, left,
                                                          config.kick_size, deadline)
    wall = time.perf_counter() - start
    return SearchResult(p, c, counter[0], wall, [(counter[0], wall, c)], interrupted,
                        extra={"descents": descents, "kicks": kicked, "anneal_evals": annealed})
