"""The 2017 seq2seq placer as `rl` (REINFORCE alone) and `rl+ls` (with local search): sampler maths,
cached simulations, reproducible budgets, brute-force optima, the final stage, config files, the CLI."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch

from moeplace.cli import main
from moeplace.errors import InputError
from moeplace.place import local_search as local_search_module
from moeplace.place.device import colocrl as colocrl_module
from moeplace.place.device.colocrl import seq2seq_search
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.rl_config import PRESETS, config_from_dict, load_rl_config
from moeplace.place.device.seq2seq import Seq2SeqPlacer
from moeplace.place.local_search import LocalSearchConfig
from moeplace.rl.reinforce import SequenceREINFORCEConfig, sil_targets

from .problems import branchy_problem, symmetric_problem

_REINFORCE = {f.name for f in dataclasses.fields(SequenceREINFORCEConfig)}
_LOCAL = {f.name for f in dataclasses.fields(LocalSearchConfig)}


def search(prob, ls=True, seed=0, init=None, budget_s=None, callback=None, **settings):
    """seq2seq_search with the config's keys given flat (each goes to its section by name)."""
    cfg = {"reinforce": {}, "local_search": {}}
    for k, v in settings.items():
        section = "reinforce" if k in _REINFORCE else "local_search" if k in _LOCAL else None
        if section:
            cfg[section][k] = v
        else:
            cfg[k] = v
    return seq2seq_search(prob, config_from_dict(cfg), with_local_search=ls, budget_s=budget_s, seed=seed,
                          init=init, show_progress=False, callback=callback)


def test_batched_sampler_log_probs_equal_the_teacher_forced_score():
    torch.manual_seed(0)
    pol = Seq2SeqPlacer(feat_dim=5, num_devices=4, hidden=16)
    feats = torch.randn(7, 5)
    actions, logp = pol.sample_with_logp(feats, 50, generator=torch.Generator().manual_seed(1))
    ref, _ = pol.score(feats, actions)  # the fused nn.LSTM path, independent of the step-by-step maths
    torch.testing.assert_close(logp, ref.detach(), atol=1e-4, rtol=1e-4)
    greedy, glogp = pol.sample_with_logp(feats, 1, greedy=True)
    torch.testing.assert_close(glogp, pol.score(feats, greedy)[0].detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ls", [False, True])
def test_iteration_budget_is_reproducible_for_a_seed(ls):
    prob = branchy_problem()
    runs = [search(prob, ls, seed=3, batch=8, iterations=15, calls=3_000, anneal=100) for _ in range(2)]
    assert np.array_equal(runs[0].placement, runs[1].placement)
    assert runs[0].cost == runs[1].cost
    assert runs[0].evaluations == runs[1].evaluations and runs[0].extra["iterations"] == 15
    assert runs[0].extra["curve"] == runs[1].extra["curve"]


def test_iteration_budget_result_does_not_depend_on_the_clock(monkeypatch):
    """With iterations the entropy schedule follows iterations: a clock that jumps to 40% of the time cap
    at once (a slow machine) must give the same placements as the real clock."""
    prob = branchy_problem()
    kw = dict(seed=5, batch=8, iterations=12, budget_s=100.0, calls=3_000, anneal=100)
    real = search(prob, **kw)
    calls = [0]

    def jumpy_clock() -> float:
        calls[0] += 1
        return 0.0 if calls[0] <= 2 else 40.0  # start, run start; then 40% of the 100-s cap

    monkeypatch.setattr(colocrl_module.time, "perf_counter", jumpy_clock)
    slow = search(prob, **kw)
    assert slow.extra["iterations"] == 12
    assert slow.extra["curve"] == real.extra["curve"] and slow.cost == real.cost
    for a, b in zip(slow.policy.parameters(), real.policy.parameters()):
        assert torch.equal(a, b)


def test_reinforce_from_a_heuristic_start_reaches_the_brute_force_optimum():
    prob = branchy_problem()
    costs = {p: prob.cost(np.array(p)) for p in itertools.product(range(3), repeat=prob.num_nodes)}
    best = min(costs.values())
    start = np.zeros(prob.num_nodes, np.int64)  # everything on the fast GPU (the single-device heuristic)
    assert costs[tuple(start)] > best * 1.2
    r = search(prob, ls=False, seed=0, batch=32, iterations=150, init=start, imitation=True,
               sil_coef=0.0)  # `rl` with the paper's plain REINFORCE
    assert r.cost == pytest.approx(best)
    assert r.evaluations < len(costs)  # found without enumerating every placement


def test_rl_alone_never_runs_local_search(monkeypatch):
    """`rl` is policy gradient alone: no descent in the loop, no final stage; its evaluations are the
    distinct sampled placements only."""
    def forbidden(*args, **kwargs):
        raise AssertionError("local search called by rl")

    monkeypatch.setattr(colocrl_module, "descend", forbidden)
    monkeypatch.setattr(colocrl_module, "local_search", forbidden)
    prob = branchy_problem()
    r = search(prob, ls=False, seed=1, batch=8, iterations=6, budget_s=60.0)
    assert r.evaluations <= 6 * 8 and r.extra["final_descents"] == 0
    assert r.cost == prob.cost(r.placement)
    with pytest.raises(AssertionError, match="local search called"):
        search(prob, ls=True, seed=1, batch=8, iterations=6)


def test_runs_past_imitate_runs_start_from_scratch():
    prob = branchy_problem()
    start = np.zeros(prob.num_nodes, np.int64)
    kw = dict(seed=4, batch=8, iterations=6, calls=0)  # the runs alone
    scratch = search(prob, **kw)
    skipped = search(prob, init=start, imitation=True, imitate_runs=0, **kw)
    imitated = search(prob, init=start, imitation=True, **kw)
    assert skipped.extra["curve"] == scratch.extra["curve"]
    assert imitated.extra["curve"] != scratch.extra["curve"]


def _swapped(p: np.ndarray, a: int, b: int) -> np.ndarray:
    q = p.copy()
    q[a], q[b] = p[b], p[a]
    return q


def test_rl_ls_answer_is_a_local_optimum_after_the_final_descent():
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)

    def improving_moves(p, c):
        moves = [(g, d) for g, d in itertools.product(range(prob.num_nodes), range(3))
                 if ref.cost(np.where(np.arange(prob.num_nodes) == g, d, p)) < c]
        swaps = [(a, b) for a, b in itertools.combinations(range(prob.num_nodes), 2)
                 if ref.cost(_swapped(p, a, b)) < c]
        return moves + swaps

    kw = dict(seed=1, batch=4, iterations=1, sil_coef=0.0, in_loop_calls=0)
    raw = search(prob, ls=False, **kw)  # one batch of 4 samples: its best
    assert improving_moves(raw.placement, raw.cost)  # ... can still be improved by one move
    done = search(prob, **kw)
    assert done.cost == ref.cost(done.placement) < raw.cost
    assert improving_moves(done.placement, done.cost) == []


def test_rl_ls_final_descent_from_several_starts_is_never_worse_than_from_the_best_alone():
    prob = symmetric_problem()
    kw = dict(seed=3, batch=8, iterations=4, restarts=2, in_loop_calls=0, kick_size=0)
    one = search(prob, starts=1, **kw)  # each run's best alone
    many = search(prob, starts=8, **kw)
    assert one.extra["final_descents"] <= 2 < many.extra["final_descents"] <= 16
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    assert many.cost == ref.cost(many.placement) <= one.cost


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


@pytest.mark.parametrize("option, on, count", [("kick_size", 3, "final_kicks"),
                                                ("anneal", 100, "final_anneal_evals")])
def test_each_part_of_the_final_stage_never_makes_the_rl_ls_answer_worse(option, on, count):
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    kw = dict(seed=2, batch=4, iterations=2, restarts=2, in_loop_calls=0, calls=3_000, kick_size=0, anneal=0)
    plain = search(prob, **kw)
    part = search(prob, **{**kw, option: on})
    assert plain.extra[count] == 0 < part.extra[count]
    assert plain.extra["cost_before_final"] == part.extra["cost_before_final"]  # same seed: same training
    assert part.cost == ref.cost(part.placement) <= plain.cost <= plain.extra["cost_before_final"]
    if option == "anneal":  # its evaluations: `on` per group per scale, all counted as simulator calls
        assert part.extra[count] == on * prob.num_nodes * 2  # the default scales: a cool and a hot annealing
        assert part.evaluations >= plain.evaluations + part.extra[count]


def test_a_second_annealing_scale_keeps_the_first_ones_result_or_better():
    prob = branchy_problem()
    ref = DevicePlacementProblem(prob.graph, prob.cluster)
    kw = dict(seed=3, batch=4, iterations=2, restarts=2, in_loop_calls=0, calls=3_000, kick_size=0,
              anneal=200)
    one = search(prob, **kw, anneal_scales=[1 / 3])
    two = search(prob, **kw, anneal_scales=[1 / 3, 3.0])
    assert two.extra["final_anneal_evals"] == 2 * one.extra["final_anneal_evals"] == 2 * 200 * prob.num_nodes
    assert two.cost == ref.cost(two.placement) <= one.cost  # the first annealing is the same run


def test_a_wall_time_budget_alone_keeps_time_for_the_final_kicks():
    prob = branchy_problem()
    search(prob, iterations=1, batch=4)  # warm-up: torch's first calls are slow
    r = search(prob, budget_s=2.0, seed=0, batch=4)
    assert r.extra["iterations"] > 0 and r.extra["final_descents"] >= 1 and r.extra["final_kicks"] > 0
    assert r.cost <= r.extra["cost_before_final"]
    with pytest.raises(InputError, match="local_search.share"):
        search(prob, budget_s=1.0, share=1.0)


def test_config_files_presets_and_their_errors(tmp_path):
    assert load_rl_config(None) == config_from_dict({})
    paper = load_rl_config("paper")
    assert paper.reinforce.sil_coef == 0 and paper.local_search.in_loop_calls == 0
    bench = load_rl_config("benchmark")
    assert (bench.iterations, bench.restarts, bench.imitation, bench.imitate_runs) == (1000, 2, True, 1)
    f = tmp_path / "rl.json"
    f.write_text(json.dumps({"preset": "benchmark", "restarts": 3, "reinforce": {"batch": 8},
                             "local_search": {"calls": 100}}))
    cfg = load_rl_config(str(f))
    assert (cfg.iterations, cfg.restarts, cfg.reinforce.batch, cfg.local_search.calls) == (1000, 3, 8, 100)
    assert cfg.local_search.anneal == LocalSearchConfig().anneal  # untouched keys keep the preset's
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # to_dict round-trips
    for bad, message in [({"iterations": 0}, "iterations must be an integer >= 1"),
                         ({"reinforce": {"bach": 8}}, "unknown key reinforce.bach"),
                         ({"local_search": {"calls": -1}}, "local_search.calls must be"),
                         ({"preset": "fast"}, "unknown preset 'fast'"),
                         ({"imitation": "yes"}, "imitation must be true or false"),
                         ({"reinforce": {"reward": "log"}}, "reinforce.reward")]:
        f.write_text(json.dumps(bad))
        with pytest.raises(InputError, match=message):
            load_rl_config(str(f))
    f.write_text("{not json")
    with pytest.raises(InputError, match="not JSON"):
        load_rl_config(str(f))
    with pytest.raises(InputError, match="cannot read"):
        load_rl_config(str(tmp_path / "missing.json"))
    assert set(PRESETS) == {"default", "paper", "benchmark"}


def test_cli_rl_config_repeats_exactly_and_bad_configs_exit_2(tmp_path, capsys):
    f = tmp_path / "rl.json"
    settings = {"iterations": 6, "imitation": True, "local_search": {"calls": 20000, "anneal": 50}}
    f.write_text(json.dumps(settings))
    argv = ["place", "device", "--model", "rnnlm", "--size", "tiny", "--cluster", "hetero", "--method",
            "heft,rl,rl+ls", "--rl-config", str(f), "--budget", "10m", "--seed", "2", "--json"]
    runs = []
    for _ in range(2):
        assert main(argv) == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        runs.append({r["method"]: r for r in res["results"]})
    assert set(runs[0]) == {"heft", "rl", "rl+ls"}
    for m in ("rl", "rl+ls"):
        assert runs[0][m]["step_ms"] == runs[1][m]["step_ms"]
    f.write_text(json.dumps({"iterations": 0}))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--rl-config {f}: iterations must be" in err and len(err.strip().splitlines()) == 1
    assert main([a if a != str(f) else "nope" for a in argv]) == 2
    assert "--rl-config nope" in capsys.readouterr().err


def test_cli_rl_samples_only_while_rl_ls_also_searches(tmp_path, capsys):
    f = tmp_path / "rl.json"
    f.write_text(json.dumps({"iterations": 4, "local_search": {"calls": 20000, "anneal": 0}}))
    argv = ["place", "device", "--model", "rnnlm", "--size", "tiny", "--cluster", "hetero", "--method",
            "rl,rl+ls", "--rl-config", str(f), "--budget", "10m", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    evals = {r["method"]: r["evals"] for r in rows}
    assert evals["rl"] <= 4 * 32  # REINFORCE alone: at most the distinct sampled placements
    assert evals["rl+ls"] > evals["rl"]  # the descent from each batch's best and the final stage add more
    # samples, per-batch descents, the final stage's look-ups (anneal 0: no annealing evaluations)
    assert evals["rl+ls"] <= 4 * 32 + 4 * 500 + 20_000


def test_the_driver_uses_the_placement_cores_local_search():
    """The local-search module the driver calls is the placement core's (one implementation)."""
    assert colocrl_module.local_search is local_search_module.local_search
    assert colocrl_module.descend is local_search_module.descend
