"""Local search of the placement core (place/local_search.py) on small device problems with a
brute-force optimum: descents stop at local optima, multi-start descent, kicks and annealing leave
them, every budget, deadline and Ctrl-C is kept; and the chained stage on a non-device problem."""

import itertools

import numpy as np
import pytest

from moeplace.place import local_search as local_search_module
from moeplace.place.device.colocrl import topological_order
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.local_search import (
    CachedCost,
    LocalSearchConfig,
    WindowMoves,
    anneal_and_descend,
    descend,
    interleave,
    iterated_local_search,
    local_search,
    multi_start_descent,
)

from ..test_core import ToyGrid, brute_force
from .problems import branchy_problem, symmetric_problem


def test_cached_cost_simulates_each_distinct_placement_once():
    prob = branchy_problem()
    cost = CachedCost(prob)
    rng = np.random.default_rng(0)
    placements = rng.integers(0, 3, (200, prob.num_nodes))
    got = [cost(p) for p in placements]
    assert cost.counter[0] == len({p.tobytes() for p in placements})
    assert got == [DevicePlacementProblem(prob.graph, prob.cluster).cost(p) for p in placements]


def test_descent_stops_at_a_single_move_local_optimum():
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)  # independent cost, no cache
    rng = np.random.default_rng(0)
    for _ in range(5):
        start = rng.integers(0, 3, prob.num_nodes)
        got, cost = descend(start, ref.cost(start), CachedCost(prob), 3, rng, max_calls=10_000)
        assert cost == ref.cost(got) <= ref.cost(start)
        for g, d in itertools.product(range(prob.num_nodes), range(3)):  # brute force: no move improves
            moved = got.copy()
            moved[g] = d
            assert ref.cost(moved) >= cost


def _swapped(p: np.ndarray, a: int, b: int) -> np.ndarray:
    q = p.copy()
    q[a], q[b] = p[b], p[a]
    return q


def test_descent_with_swaps_stops_where_no_move_and_no_swap_improves():
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    rng = np.random.default_rng(1)
    swap_helped = 0
    for _ in range(8):
        start = rng.integers(0, 3, prob.num_nodes)
        plain, plain_cost = descend(start, ref.cost(start), CachedCost(prob), 3, np.random.default_rng(2),
                                   max_calls=10_000)
        got, cost = descend(start, ref.cost(start), CachedCost(prob), 3, np.random.default_rng(2),
                           max_calls=10_000, swaps=True)
        assert cost == ref.cost(got) <= plain_cost
        swap_helped += cost < plain_cost
        for g, d in itertools.product(range(prob.num_nodes), range(3)):  # brute force: no move improves
            moved = got.copy()
            moved[g] = d
            assert ref.cost(moved) >= cost
        for a, b in itertools.combinations(range(prob.num_nodes), 2):  # ... and no swap
            assert ref.cost(_swapped(got, a, b)) >= cost
    assert swap_helped > 0  # some single-move optima were improved by a swap


def test_descent_respects_its_call_budget():
    prob = branchy_problem()
    cost = CachedCost(prob)
    start = np.zeros(prob.num_nodes, np.int64)
    descend(start, prob.cost(start), cost, 3, np.random.default_rng(0), max_calls=5)
    assert cost.counter[0] <= 5


def test_multi_start_descent_from_several_starts_escapes_the_first_starts_basin():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    optimum = min(ref.cost(np.array(p)) for p in itertools.product(range(3), repeat=prob.num_nodes))
    rng = np.random.default_rng(0)
    starts = [(ref.cost(s), s) for s in rng.integers(0, 3, (30, prob.num_nodes))]
    alone = [multi_start_descent([s], CachedCost(prob), 3, seed=0, max_calls=10**6) for s in starts]
    stuck = [i for i, (_, c, _, _) in enumerate(alone) if c > optimum * (1 + 1e-9)]
    assert stuck and len(stuck) < len(starts)  # some starts' basins hold the optimum, some do not
    first = stuck[0]
    order = [starts[first]] + [s for i, s in enumerate(starts) if i != first]
    p, c, done, _ = multi_start_descent(order, CachedCost(prob), 3, seed=0, max_calls=10**6)
    assert c == pytest.approx(optimum) and ref.cost(p) == c
    assert done == len(starts)
    assert alone[first][1] > optimum * (1 + 1e-9)  # the stuck start alone stays above it


def test_multi_start_descent_shares_its_calls_and_starts_nothing_after_the_deadline():
    prob = symmetric_problem()
    rng = np.random.default_rng(1)
    starts = [(prob.cost(s), s) for s in rng.integers(0, 3, (10, prob.num_nodes))]
    cost = CachedCost(prob)
    p, c, done, _ = multi_start_descent(starts, cost, 3, seed=0, max_calls=200)
    assert cost.lookups <= 200 and 1 <= done < len(starts)
    assert c <= min(c0 for c0, _ in starts[:done])
    _, _, done, _ = multi_start_descent(starts, CachedCost(prob), 3, seed=0, max_calls=10**6, deadline=0.0)
    assert done == 1  # the first start is always descended


def _descend_with_ctrl_c_at(n: int):
    """`descend` that raises KeyboardInterrupt (a Ctrl-C) on its n-th call instead of descending."""
    calls = []

    def descend_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return descend(*args, **kwargs)

    return descend_then_ctrl_c


def test_ctrl_c_during_the_multi_start_descent_keeps_the_optima_already_reached(monkeypatch):
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    rng = np.random.default_rng(2)
    starts = [(ref.cost(s), s) for s in rng.integers(0, 3, (4, prob.num_nodes))]
    monkeypatch.setattr(local_search_module, "descend", _descend_with_ctrl_c_at(3))
    p, c, done, interrupted = multi_start_descent(starts, CachedCost(prob), 3, seed=0, max_calls=10**6)
    assert interrupted and done == 2
    assert c == ref.cost(p) <= min(c0 for c0, _ in starts[:2])


def test_interleave_takes_each_runs_best_in_turn_without_repeats():
    a, b, c, d = (np.array([i]) for i in range(4))
    runs = [[(5.0, b), (3.0, a)], [(1.0, c), (4.0, d), (9.0, a)], []]
    got = interleave(runs)
    assert [(cost, int(p[0])) for cost, p in got] == [(1.0, 2), (3.0, 0), (4.0, 3), (5.0, 1)]


def _stuck_local_optimum(prob, ref, optimum):
    """A local optimum for moves and swaps above the brute-force optimum (descent from random starts)."""
    rng = np.random.default_rng(0)
    for s in rng.integers(0, 3, (30, prob.num_nodes)):
        p, c = descend(s, ref.cost(s), CachedCost(prob), 3, np.random.default_rng(0), 10**6, swaps=True)
        if c > optimum * (1 + 1e-9):
            return p, c
    raise AssertionError("every descent reached the optimum")


def test_iterated_local_search_walk_from_a_stuck_local_optimum_to_the_optimum():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    optimum = min(ref.cost(np.array(p)) for p in itertools.product(range(3), repeat=prob.num_nodes))
    start, start_cost = _stuck_local_optimum(prob, ref, optimum)
    assert descend(start, start_cost, CachedCost(prob), 3, np.random.default_rng(1), 10**6, swaps=True)[1] \
        == start_cost  # the descent alone cannot leave it
    cost = CachedCost(prob)
    p, c, n, interrupted = iterated_local_search(start, start_cost, cost, 3, seed=0, max_calls=20_000, size=3)
    assert c == pytest.approx(optimum) and ref.cost(p) == c and not interrupted
    assert n >= 1 and cost.lookups <= 20_000


def test_iterated_local_search_keep_to_their_budget_and_deadline_and_never_get_worse():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    rng = np.random.default_rng(4)
    for start in rng.integers(0, 3, (5, prob.num_nodes)):
        cost = CachedCost(prob)
        p, c, n, _ = iterated_local_search(start, ref.cost(start), cost, 3, seed=1, max_calls=300, size=2)
        assert cost.lookups <= 300 and n >= 1
        assert c == ref.cost(p) <= ref.cost(start)
    p, c, n, _ = iterated_local_search(start, ref.cost(start), CachedCost(prob), 3, seed=1, max_calls=10**6,
                                       deadline=0.0)
    assert n == 0 and (p == start).all() and c == ref.cost(start)


def test_ctrl_c_during_the_iterated_local_search_keeps_the_best_optimum_reached(monkeypatch):
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    start = np.random.default_rng(5).integers(0, 3, prob.num_nodes)
    monkeypatch.setattr(local_search_module, "descend", _descend_with_ctrl_c_at(4))
    p, c, n, interrupted = iterated_local_search(start, ref.cost(start), CachedCost(prob), 3, seed=0,
                                                 max_calls=10**6)
    assert interrupted and n == 3
    assert c == ref.cost(p) <= ref.cost(start)


def test_annealing_walks_from_a_stuck_local_optimum_to_the_optimum():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    optimum = min(ref.cost(np.array(p)) for p in itertools.product(range(3), repeat=prob.num_nodes))
    start, start_cost = _stuck_local_optimum(prob, ref, optimum)
    cost = CachedCost(prob)
    p, c, evals, interrupted = anneal_and_descend(prob, start, start_cost, cost, seed=0, evals=3_000,
                                                  scale=1 / 3, max_calls=10**6, order=topological_order(prob))
    assert c == pytest.approx(optimum) and ref.cost(p) == c and not interrupted
    assert evals == 3_000 and cost.counter[0] >= evals  # the annealing's simulations are counted


def test_annealing_never_returns_worse_than_its_start_and_respects_the_deadline():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    rng = np.random.default_rng(7)
    for start in rng.integers(0, 3, (4, prob.num_nodes)):
        p, c, evals, _ = anneal_and_descend(prob, start, ref.cost(start), CachedCost(prob), seed=1, evals=200,
                                            scale=1.0, max_calls=50)
        assert evals == 200 and c == ref.cost(p) <= ref.cost(start)
    p, c, evals, _ = anneal_and_descend(prob, start, ref.cost(start), CachedCost(prob), seed=1, evals=10**6,
                                        scale=1.0, max_calls=10**6, deadline=0.0)
    assert evals == 0 and (p == start).all() and c == ref.cost(start)


def test_ctrl_c_during_the_annealing_keeps_the_better_of_its_best_and_the_start(monkeypatch):
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    start = np.random.default_rng(5).integers(0, 3, prob.num_nodes)
    calls = [0]
    real_cost = prob.cost

    def cost_then_ctrl_c(placement):
        calls[0] += 1
        if calls[0] == 500:
            raise KeyboardInterrupt
        return real_cost(placement)

    monkeypatch.setattr(prob, "cost", cost_then_ctrl_c)
    p, c, evals, interrupted = anneal_and_descend(prob, start, ref.cost(start), CachedCost(prob), seed=0,
                                                  evals=10**4, scale=1.0, max_calls=10**6)
    assert interrupted and evals == 499
    assert c == ref.cost(p) <= ref.cost(start)


def test_window_moves_put_a_run_of_consecutive_groups_on_one_device():
    prob = symmetric_problem()
    n = prob.num_nodes
    moves = WindowMoves(prob, topological_order(prob), share=1.0, longest=4)
    first = [min(i for i in range(prob.graph.num_ops) if prob.graph.group[i] == gr) for gr in range(n)]
    topo = sorted(range(n), key=lambda gr: first[gr])  # groups by first op, written out independently
    rng = np.random.default_rng(0)
    start = rng.integers(0, 3, n)
    seen = set()
    for _ in range(300):
        new = moves.propose_move(start, rng)
        if new is None:
            continue
        changed = [topo.index(gr) for gr in np.flatnonzero(new != start)]
        lo, hi = min(changed), max(changed)
        assert hi - lo < 4  # inside one window of at most 4 consecutive groups
        assert len({int(new[topo[i]]) for i in range(lo, hi + 1)}) == 1  # all on the same device
        seen.add(hi - lo + 1)
    assert max(seen) >= 3  # runs longer than a pair do occur
    generic = WindowMoves(prob, topological_order(prob), share=0.0)  # the core's relocate / swap moves only
    changes = [int((q != start).sum()) for q in (generic.propose_move(start, rng) for _ in range(100))
               if q is not None]
    assert set(changes) == {1, 2}
    assert moves.cost(start) == prob.cost(start) and generic.num_nodes == n and generic.num_slots == 3


def test_local_search_stage_reaches_the_brute_force_optimum_of_a_non_device_problem():
    """The chained stage (descents, annealing, kicks) on the placement core's toy grid problem: one node
    per cell (collisions cost a penalty), so any PlacementProblem can use it, not only devices."""
    prob = ToyGrid(rows=3, cols=3, n=5, seed=1)
    optimum = brute_force(prob)
    rng = np.random.default_rng(0)
    starts = [rng.permutation(prob.num_slots)[:prob.n] for _ in range(3)]
    runs = [[(prob.cost(s), s)] for s in starts]
    assert min(c for (c, _), in runs) > optimum
    cfg = LocalSearchConfig(calls=20_000, anneal=1_000, kick_size=2)
    r = local_search(prob, runs, cfg, seed=0)
    assert r.cost == pytest.approx(optimum) and prob.cost(r.placement) == r.cost
    assert len(set(r.placement.tolist())) == prob.n  # a legal placement: no two nodes on one cell
    assert r.extra["descents"] == 3 and r.extra["anneal_evals"] == 2 * 1_000 * prob.n
    assert r.evaluations >= r.extra["anneal_evals"]
    none = local_search(prob, runs, LocalSearchConfig(calls=0), seed=0)
    assert none is None  # no look-ups: nothing descended
