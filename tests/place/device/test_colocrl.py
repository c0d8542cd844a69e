"""The 2017 seq2seq REINFORCE placer: sampler maths, cached simulations, reproducible budgets, optimum."""

import itertools
import json

import numpy as np
import pytest
import torch

from moeplace.place.device import colocrl as colocrl_module
from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.colocrl import (
    CachedCost,
    Seq2SeqPlacer,
    WindowMoves,
    anneal,
    final_descent,
    interleave,
    kicks,
    polish,
    sil_targets,
    train_colocrl,
)
from moeplace.place.device.graph import OpGraph
from moeplace.place.device.problem import DevicePlacementProblem


def branchy_problem() -> DevicePlacementProblem:
    """8 ops (a stem, three branches of unequal work, a join) on a fast GPU, a slow GPU and a CPU."""
    G = 1e9
    work = np.array([1, 4, 4, 3, 3, 2, 2, 1.0]) * G
    edges = np.array([[0, 0, 0, 1, 3, 5, 2, 4, 6], [1, 3, 5, 2, 4, 6, 7, 7, 7]])
    n = len(work)
    g = OpGraph(
        names=[f"o{i}" for i in range(n)], kinds=["x"] * n, fwd_flops=work, bwd_flops=2 * work,
        out_bytes=np.full(n, 0.2 * G), param_bytes=np.zeros(n), trivial=np.zeros(n, bool), edges=edges,
        anchor=np.full(n, -1), scope=[""] * n, layer=[""] * n, grouping="op",
    )
    c = load_cluster({
        "devices": [{"name": "fast", "flops": 4 * G, "memory": 1e12},
                    {"name": "slow", "flops": 2 * G, "memory": 1e12},
                    {"name": "cpu", "kind": "cpu", "flops": G, "memory": 1e12}],
        "links": [{"between": "all", "bandwidth": 2 * G, "latency": 0.01}],
    })
    return DevicePlacementProblem(g, c)


def test_batched_sampler_log_probs_equal_the_teacher_forced_score():
    torch.manual_seed(0)
    pol = Seq2SeqPlacer(feat_dim=5, num_devices=4, hidden=16)
    feats = torch.randn(7, 5)
    actions, logp = pol.sample_with_logp(feats, 50, generator=torch.Generator().manual_seed(1))
    ref, _ = pol.score(feats, actions)  # the fused nn.LSTM path, independent of the step-by-step maths
    torch.testing.assert_close(logp, ref.detach(), atol=1e-4, rtol=1e-4)
    greedy, glogp = pol.sample_with_logp(feats, 1, greedy=True)
    torch.testing.assert_close(glogp, pol.score(feats, greedy)[0].detach(), atol=1e-4, rtol=1e-4)


def test_cached_cost_simulates_each_distinct_placement_once():
    prob = branchy_problem()
    cost = CachedCost(prob)
    rng = np.random.default_rng(0)
    placements = rng.integers(0, 3, (200, prob.num_nodes))
    got = [cost(p) for p in placements]
    assert cost.counter[0] == len({p.tobytes() for p in placements})
    assert got == [DevicePlacementProblem(prob.graph, prob.cluster).cost(p) for p in placements]


def test_iteration_budget_is_reproducible_for_a_seed():
    prob = branchy_problem()
    runs = [train_colocrl(prob, seed=3, batch=8, max_iters=15, show_progress=False) for _ in range(2)]
    assert np.array_equal(runs[0]["placement"], runs[1]["placement"])
    assert runs[0]["cost"] == runs[1]["cost"]
    assert runs[0]["evaluations"] == runs[1]["evaluations"] and runs[0]["iterations"] == 15
    assert runs[0]["curve"] == runs[1]["curve"]


def test_iteration_budget_result_does_not_depend_on_the_clock(monkeypatch):
    """With max_iters the entropy schedule follows iterations: a clock that jumps to 40% of the time cap
    at once (a slow machine) must give the same placements as the real clock."""
    prob = branchy_problem()
    kw = dict(seed=5, batch=8, max_iters=12, budget_s=100.0, show_progress=False)
    real = train_colocrl(prob, **kw)
    calls = [0]

    def jumpy_clock() -> float:
        calls[0] += 1
        return 0.0 if calls[0] <= 2 else 40.0  # start, run start; then 40% of the 100-s cap

    monkeypatch.setattr(colocrl_module.time, "perf_counter", jumpy_clock)
    slow = train_colocrl(prob, **kw)
    assert slow["iterations"] == 12
    assert slow["curve"] == real["curve"] and slow["cost"] == real["cost"]
    for a, b in zip(slow["policy"].parameters(), real["policy"].parameters()):
        assert torch.equal(a, b)


def test_reinforce_from_a_heuristic_start_reaches_the_brute_force_optimum():
    prob = branchy_problem()
    costs = {p: prob.cost(np.array(p)) for p in itertools.product(range(3), repeat=prob.num_nodes)}
    best = min(costs.values())
    start = np.zeros(prob.num_nodes, np.int64)  # everything on the fast GPU (the single-device heuristic)
    assert costs[tuple(start)] > best * 1.2
    r = train_colocrl(prob, seed=0, batch=32, max_iters=150, init=start, imitation_steps=500, sil_coef=0.0,
                      polish_calls=0, final_anneal=0, show_progress=False)  # the paper's plain REINFORCE
    assert r["cost"] == pytest.approx(best)
    assert r["evaluations"] < len(costs)  # found without enumerating every placement


def test_cli_rl_iterations_repeat_exactly_and_reject_zero(capsys):
    from moeplace.cli import main

    argv = ["place", "device", "--model", "rnnlm", "--size", "tiny", "--cluster", "hetero", "--method",
            "heft,rl", "--rl-imitation", "--rl-iters", "6", "--budget", "10m", "--seed", "2",
            "--rl-final-calls", "20000", "--json"]
    runs = []
    for _ in range(2):
        assert main(argv) == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        runs.append({r["method"]: r for r in res["results"]}["rl"])
    assert runs[0]["step_ms"] == runs[1]["step_ms"]
    assert main([a if a != "6" else "0" for a in argv]) == 2
    assert "--rl-iters" in capsys.readouterr().err
    assert main([a if a != "20000" else "-1" for a in argv]) == 2
    assert "--rl-final-calls" in capsys.readouterr().err
    assert main(argv + ["--rl-anneal", "-1"]) == 2
    assert "--rl-anneal" in capsys.readouterr().err


def test_cli_rl_plain_samples_only_while_the_default_also_polishes(capsys):
    from moeplace.cli import main

    argv = ["place", "device", "--model", "rnnlm", "--size", "tiny", "--cluster", "hetero", "--method", "rl",
            "--rl-iters", "4", "--budget", "10m", "--rl-final-calls", "20000", "--rl-anneal", "0", "--json"]
    evals = {}
    for extra in ([], ["--rl-plain"]):
        assert main(argv + extra) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        evals[bool(extra)] = out["results"][0]["evals"]
    assert evals[True] <= 4 * 32  # plain REINFORCE: at most the distinct sampled placements
    assert evals[False] > evals[True]  # the greedy descent from each batch's best adds new placements
    # samples, per-batch descents, --rl-final-calls look-ups (--rl-anneal 0: no annealing evaluations)
    assert evals[False] <= 4 * 32 + 4 * 500 + 20_000


def test_runs_past_imitate_runs_start_from_scratch():
    prob = branchy_problem()
    start = np.zeros(prob.num_nodes, np.int64)
    kw = dict(seed=4, batch=8, max_iters=6, final_polish_calls=0, show_progress=False)  # the runs alone
    scratch = train_colocrl(prob, **kw)
    skipped = train_colocrl(prob, init=start, imitation_steps=500, imitate_runs=0, **kw)
    imitated = train_colocrl(prob, init=start, imitation_steps=500, **kw)
    assert skipped["curve"] == scratch["curve"]
    assert imitated["curve"] != scratch["curve"]


def test_polish_stops_at_a_single_move_local_optimum():
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)  # independent cost, no cache
    rng = np.random.default_rng(0)
    for _ in range(5):
        start = rng.integers(0, 3, prob.num_nodes)
        got, cost = polish(start, ref.cost(start), CachedCost(prob), 3, rng, max_calls=10_000)
        assert cost == ref.cost(got) <= ref.cost(start)
        for g, d in itertools.product(range(prob.num_nodes), range(3)):  # brute force: no move improves
            moved = got.copy()
            moved[g] = d
            assert ref.cost(moved) >= cost


def _swapped(p: np.ndarray, a: int, b: int) -> np.ndarray:
    q = p.copy()
    q[a], q[b] = p[b], p[a]
    return q


def test_polish_with_swaps_stops_where_no_move_and_no_swap_improves():
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    rng = np.random.default_rng(1)
    swap_helped = 0
    for _ in range(8):
        start = rng.integers(0, 3, prob.num_nodes)
        plain, plain_cost = polish(start, ref.cost(start), CachedCost(prob), 3, np.random.default_rng(2),
                                   max_calls=10_000)
        got, cost = polish(start, ref.cost(start), CachedCost(prob), 3, np.random.default_rng(2),
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


def test_rl_answer_is_a_local_optimum_after_the_final_descent():
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)

    def improving_moves(p, c):
        moves = [(g, d) for g, d in itertools.product(range(prob.num_nodes), range(3))
                 if ref.cost(np.where(np.arange(prob.num_nodes) == g, d, p)) < c]
        swaps = [(a, b) for a, b in itertools.combinations(range(prob.num_nodes), 2)
                 if ref.cost(_swapped(p, a, b)) < c]
        return moves + swaps

    kw = dict(seed=1, batch=4, max_iters=1, sil_coef=0.0, polish_calls=0, show_progress=False)
    raw = train_colocrl(prob, final_polish_calls=0, **kw)  # one batch of 4 samples: its best
    assert improving_moves(raw["placement"], raw["cost"])  # ... can still be improved by one move
    done = train_colocrl(prob, **kw)
    assert done["cost"] == ref.cost(done["placement"]) < raw["cost"]
    assert improving_moves(done["placement"], done["cost"]) == []


def symmetric_problem() -> DevicePlacementProblem:
    """9 ops of a random DAG with heavy transfers on three identical GPUs: moves and swaps get stuck."""
    G = 1e9
    r = np.random.default_rng(0)
    n = 9
    work = r.uniform(1, 4, n) * G
    edges = sorted({(int(j), i) for i in range(1, n) for j in r.integers(max(0, i - 3), i, 2)})
    g = OpGraph(
        names=[f"o{i}" for i in range(n)], kinds=["x"] * n, fwd_flops=work, bwd_flops=2 * work,
        out_bytes=r.uniform(0.2, 1.5, n) * G, param_bytes=np.zeros(n), trivial=np.zeros(n, bool),
        edges=np.array(edges).T, anchor=np.full(n, -1), scope=[""] * n, layer=[""] * n, grouping="op",
    )
    c = load_cluster({
        "devices": [{"name": f"gpu{i}", "flops": 4 * G, "memory": 1e12} for i in range(3)],
        "links": [{"between": "all", "bandwidth": 2 * G, "latency": 0.01}],
    })
    return DevicePlacementProblem(g, c)


def test_final_descent_from_several_starts_escapes_the_first_starts_basin():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    optimum = min(ref.cost(np.array(p)) for p in itertools.product(range(3), repeat=prob.num_nodes))
    rng = np.random.default_rng(0)
    starts = [(ref.cost(s), s) for s in rng.integers(0, 3, (30, prob.num_nodes))]
    alone = [final_descent([s], CachedCost(prob), 3, seed=0, max_calls=10**6) for s in starts]
    stuck = [i for i, (_, c, _, _) in enumerate(alone) if c > optimum * (1 + 1e-9)]
    assert stuck and len(stuck) < len(starts)  # some starts' basins hold the optimum, some do not
    first = stuck[0]
    order = [starts[first]] + [s for i, s in enumerate(starts) if i != first]
    p, c, done, _ = final_descent(order, CachedCost(prob), 3, seed=0, max_calls=10**6)
    assert c == pytest.approx(optimum) and ref.cost(p) == c
    assert done == len(starts)
    assert alone[first][1] > optimum * (1 + 1e-9)  # the stuck start alone stays above it


def test_final_descent_shares_its_calls_and_starts_nothing_after_the_deadline():
    prob = symmetric_problem()
    rng = np.random.default_rng(1)
    starts = [(prob.cost(s), s) for s in rng.integers(0, 3, (10, prob.num_nodes))]
    cost = CachedCost(prob)
    p, c, done, _ = final_descent(starts, cost, 3, seed=0, max_calls=200)
    assert cost.lookups <= 200 and 1 <= done < len(starts)
    assert c <= min(c0 for c0, _ in starts[:done])
    _, _, done, _ = final_descent(starts, CachedCost(prob), 3, seed=0, max_calls=10**6, deadline=0.0)
    assert done == 1  # the first start is always descended


def _polish_with_ctrl_c_at(n: int):
    """`polish` that raises KeyboardInterrupt (a Ctrl-C) on its n-th call instead of descending."""
    calls = []

    def polish_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return polish(*args, **kwargs)

    return polish_then_ctrl_c


def test_ctrl_c_during_the_final_descent_keeps_the_optima_already_reached(monkeypatch):
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    rng = np.random.default_rng(2)
    starts = [(ref.cost(s), s) for s in rng.integers(0, 3, (4, prob.num_nodes))]
    monkeypatch.setattr(colocrl_module, "polish", _polish_with_ctrl_c_at(3))
    p, c, done, interrupted = final_descent(starts, CachedCost(prob), 3, seed=0, max_calls=10**6)
    assert interrupted and done == 2
    assert c == ref.cost(p) <= min(c0 for c0, _ in starts[:2])


def test_rl_final_descent_from_several_starts_is_never_worse_than_from_the_best_alone():
    prob = symmetric_problem()
    kw = dict(seed=3, batch=8, max_iters=4, restarts=2, polish_calls=0, final_kick_size=0,
              show_progress=False)
    one = train_colocrl(prob, final_starts=1, **kw)  # each run's best alone: the old final descent
    many = train_colocrl(prob, final_starts=8, **kw)
    assert one["final_descents"] <= 2 < many["final_descents"] <= 16
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    assert many["cost"] == ref.cost(many["placement"]) <= one["cost"]


def test_interleave_takes_each_runs_best_in_turn_without_repeats():
    a, b, c, d = (np.array([i]) for i in range(4))
    runs = [[(5.0, b), (3.0, a)], [(1.0, c), (4.0, d), (9.0, a)], []]
    got = interleave(runs)
    assert [(cost, int(p[0])) for cost, p in got] == [(1.0, 2), (3.0, 0), (4.0, 3), (5.0, 1)]


def test_polish_respects_its_call_budget():
    prob = branchy_problem()
    cost = CachedCost(prob)
    start = np.zeros(prob.num_nodes, np.int64)
    polish(start, prob.cost(start), cost, 3, np.random.default_rng(0), max_calls=5)
    assert cost.counter[0] <= 5


def test_self_imitation_targets_are_the_placements_beating_the_batch_mean():
    elite = [(1.0, np.array([0, 1])), (4.0, np.array([1, 1])), (9.0, np.array([2, 0])),
             (16.0, np.array([0, 0]))]
    reward = np.array([-2.0, -3.0, -4.0])  # mean -3, population std sqrt(2/3)
    actions, w = sil_targets(elite, reward)
    assert actions.tolist() == [[0, 1], [1, 1]]  # rewards -1 and -2 beat -3; -3 and -4 do not
    np.testing.assert_allclose(w.numpy(), np.array([2.0, 1.0]) / np.sqrt(2 / 3), rtol=1e-6)
    assert sil_targets(elite[2:], reward) is None


def test_a_self_imitation_step_raises_the_targets_log_probability():
    torch.manual_seed(0)
    pol = Seq2SeqPlacer(feat_dim=5, num_devices=3, hidden=16)
    feats = torch.randn(6, 5)
    actions, w = sil_targets([(1.0, np.array([2, 0, 1, 1, 0, 2])), (2.0, np.array([0, 0, 1, 2, 2, 1]))],
                             np.array([-1.5, -2.0]))
    before = pol.score(feats, actions)[0].detach()
    opt = torch.optim.SGD(pol.parameters(), lr=0.05)
    (-(w * pol.score(feats, actions)[0]).sum()).backward()
    opt.step()
    assert (pol.score(feats, actions)[0].detach() > before).all()


def _stuck_local_optimum(prob, ref, optimum):
    """A local optimum for moves and swaps above the brute-force optimum (descent from random starts)."""
    rng = np.random.default_rng(0)
    for s in rng.integers(0, 3, (30, prob.num_nodes)):
        p, c = polish(s, ref.cost(s), CachedCost(prob), 3, np.random.default_rng(0), 10**6, swaps=True)
        if c > optimum * (1 + 1e-9):
            return p, c
    raise AssertionError("every descent reached the optimum")


def test_kicks_walk_from_a_stuck_local_optimum_to_the_optimum():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    optimum = min(ref.cost(np.array(p)) for p in itertools.product(range(3), repeat=prob.num_nodes))
    start, start_cost = _stuck_local_optimum(prob, ref, optimum)
    assert polish(start, start_cost, CachedCost(prob), 3, np.random.default_rng(1), 10**6, swaps=True)[1] \
        == start_cost  # the descent alone cannot leave it
    cost = CachedCost(prob)
    p, c, n, interrupted = kicks(start, start_cost, cost, 3, seed=0, max_calls=20_000, size=3)
    assert c == pytest.approx(optimum) and ref.cost(p) == c and not interrupted
    assert n >= 1 and cost.lookups <= 20_000


def test_kicks_keep_to_their_budget_and_deadline_and_never_get_worse():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    rng = np.random.default_rng(4)
    for start in rng.integers(0, 3, (5, prob.num_nodes)):
        cost = CachedCost(prob)
        p, c, n, _ = kicks(start, ref.cost(start), cost, 3, seed=1, max_calls=300, size=2)
        assert cost.lookups <= 300 and n >= 1
        assert c == ref.cost(p) <= ref.cost(start)
    p, c, n, _ = kicks(start, ref.cost(start), CachedCost(prob), 3, seed=1, max_calls=10**6, deadline=0.0)
    assert n == 0 and (p == start).all() and c == ref.cost(start)


def test_ctrl_c_during_the_kicks_keeps_the_best_optimum_reached(monkeypatch):
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    start = np.random.default_rng(5).integers(0, 3, prob.num_nodes)
    monkeypatch.setattr(colocrl_module, "polish", _polish_with_ctrl_c_at(4))
    p, c, n, interrupted = kicks(start, ref.cost(start), CachedCost(prob), 3, seed=0, max_calls=10**6)
    assert interrupted and n == 3
    assert c == ref.cost(p) <= ref.cost(start)


@pytest.mark.parametrize("option, on, count", [("final_kick_size", 3, "final_kicks"),
                                                ("final_anneal", 100, "final_anneal_evals")])
def test_each_part_of_the_final_stage_never_makes_the_rl_answer_worse(option, on, count):
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    kw = dict(seed=2, batch=4, max_iters=2, restarts=2, polish_calls=0, show_progress=False,
              final_polish_calls=3_000, final_kick_size=0, final_anneal=0)
    plain = train_colocrl(prob, **kw)
    part = train_colocrl(prob, **{**kw, option: on})
    assert plain[count] == 0 < part[count]
    assert plain["cost_before_final"] == part["cost_before_final"]  # same seed: the same training
    assert part["cost"] == ref.cost(part["placement"]) <= plain["cost"] <= plain["cost_before_final"]
    if option == "final_anneal":  # its evaluations: `on` per group per scale, all counted as simulator calls
        assert part[count] == on * prob.num_nodes * 2  # the default scales: a cool and a hot annealing
        assert part["evaluations"] >= plain["evaluations"] + part[count]


def test_a_second_annealing_scale_keeps_the_first_ones_result_or_better():
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    kw = dict(seed=3, batch=4, max_iters=2, restarts=2, polish_calls=0, show_progress=False,
              final_polish_calls=3_000, final_kick_size=0, final_anneal=200)
    one = train_colocrl(prob, **kw, final_anneal_scales=(1 / 3,))
    two = train_colocrl(prob, **kw, final_anneal_scales=(1 / 3, 3.0))
    assert two["final_anneal_evals"] == 2 * one["final_anneal_evals"] == 2 * 200 * prob.num_nodes
    assert two["cost"] == ref.cost(two["placement"]) <= one["cost"]  # the first annealing is the same run


def test_a_wall_time_budget_alone_keeps_time_for_the_final_kicks():
    prob = branchy_problem()
    train_colocrl(prob, max_iters=1, batch=4, show_progress=False)  # warm-up: torch's first calls are slow
    r = train_colocrl(prob, budget_s=2.0, seed=0, batch=4, show_progress=False)
    assert r["iterations"] > 0 and r["final_descents"] >= 1 and r["final_kicks"] > 0
    assert r["cost"] <= r["cost_before_final"]
    with pytest.raises(ValueError, match="final_share"):
        train_colocrl(prob, budget_s=1.0, final_share=1.0, show_progress=False)


def test_annealing_walks_from_a_stuck_local_optimum_to_the_optimum():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    optimum = min(ref.cost(np.array(p)) for p in itertools.product(range(3), repeat=prob.num_nodes))
    start, start_cost = _stuck_local_optimum(prob, ref, optimum)
    cost = CachedCost(prob)
    p, c, evals, interrupted = anneal(prob, start, start_cost, cost, seed=0, evals=3_000, scale=1 / 3,
                                      max_calls=10**6)
    assert c == pytest.approx(optimum) and ref.cost(p) == c and not interrupted
    assert evals == 3_000 and cost.counter[0] >= evals  # the annealing's simulations are counted


def test_annealing_never_returns_worse_than_its_start_and_respects_the_deadline():
    prob = symmetric_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    rng = np.random.default_rng(7)
    for start in rng.integers(0, 3, (4, prob.num_nodes)):
        p, c, evals, _ = anneal(prob, start, ref.cost(start), CachedCost(prob), seed=1, evals=200, scale=1.0,
                                max_calls=50)
        assert evals == 200 and c == ref.cost(p) <= ref.cost(start)
    p, c, evals, _ = anneal(prob, start, ref.cost(start), CachedCost(prob), seed=1, evals=10**6, scale=1.0,
                            max_calls=10**6, deadline=0.0)
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
    p, c, evals, interrupted = anneal(prob, start, ref.cost(start), CachedCost(prob), seed=0, evals=10**4,
                                      scale=1.0, max_calls=10**6)
    assert interrupted and evals == 499
    assert c == ref.cost(p) <= ref.cost(start)


def test_window_moves_put_a_run_of_consecutive_groups_on_one_device():
    prob = symmetric_problem()
    n = prob.num_nodes
    moves = WindowMoves(prob, share=1.0, longest=4)
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
    generic = WindowMoves(prob, share=0.0)  # the placement core's relocate / swap moves only
    changes = [int((q != start).sum()) for q in (generic.propose_move(start, rng) for _ in range(100))
               if q is not None]
    assert set(changes) == {1, 2}
    assert moves.cost(start) == prob.cost(start) and generic.num_nodes == n and generic.num_slots == 3
