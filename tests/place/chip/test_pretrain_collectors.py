"""`place chip pretrain --collector process|ray`: worker processes and Ray actors roll out what
in-process workers with the same seeds do side by side, exact resume with worker processes, Ray
actors train, refused collector settings."""

from __future__ import annotations

import functools
import importlib.util
import json
import multiprocessing

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from moeplace.cli import main
from moeplace.place.chip.corpus import generate_corpus
from moeplace.place.chip.policy import ChipPolicy
from moeplace.place.chip.pretrain import (
    CorpusCollector,
    CorpusWorker,
    PretrainConfig,
    Pretrainer,
    corpus_named,
    design_order,
    remote_worker,
)
from moeplace.rl.collectors import make_collector
from moeplace.rl.rollout import Rollout
from moeplace.runs import read_jsonl

ARCH = (16, 3, 4)  # hidden, rounds, channels


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two tiny generated designs (3 to 6 hard macros)."""
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, 2, seed=3, min_macros=3, max_macros=6, show_progress=False)
    return out


def _problems_fn(corpus):
    return functools.partial(corpus_named, [str(corpus)], False, 2, "center")


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return dict(ChipPolicy(*ARCH).state_dict())


def _in_process(problems, d: int, update: int, weights) -> Rollout:
    """The reference: worker k as a CorpusWorker seeded 5 + k in this process, parts side by side."""
    parts = []
    for k in range(2):
        w = CorpusWorker(problems, ChipPolicy(*ARCH), 2, 5 + k)
        w.select(d, update)
        parts.append(w.collect(weights, problems[d].num_nodes))
    return Rollout.cat(parts)


def test_process_workers_roll_out_what_in_process_workers_do_side_by_side(corpus) -> None:
    problems_fn = _problems_fn(corpus)
    problems = [p for _, p in problems_fn()]
    d, update, weights = 1, 3, _weights()
    n_steps = problems[d].num_nodes
    want = _in_process(problems, d, update, weights)
    costs = [e["cost"] for e in want.ends]
    assert len(costs) == 4  # 2 workers x 2 envs, one whole episode each
    scale = sum(costs) / len(costs)  # the design's scale: its first rollout's mean cost, all workers

    local_fn = functools.partial(remote_worker, problems_fn, [p.num_nodes for p in problems], ARCH, 2)
    collector = CorpusCollector(make_collector("process", local_fn, workers=2, seed=5))
    try:
        assert collector.n_envs == 4
        collector.select(d, update)
        got = collector.collect(weights, n_steps)
    finally:
        collector.close()
    assert collector.scale[d] == pytest.approx(scale)
    for name in ("actions", "logprobs", "values", "valid", "dones"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    torch.testing.assert_close(got.rewards, want.rewards / scale)
    assert [e["cost"] for e in got.ends] == costs
    assert multiprocessing.active_children() == []  # close() stopped the workers


def _pretrain(corpus, out, *extra: str) -> int:
    return main(["place", "chip", "pretrain", "--corpus", str(corpus), "--no-builtin", "--out", str(out),
                 "--envs", "2", "--hidden", "16", "--channels", "4", "--fd-iterations", "2", "--seed", "5",
                 "--budget", "10m", *extra])


@pytest.mark.slow  # three runs, each starting two worker processes: ~30 s on a loaded 2-core machine
def test_process_collector_run_resumed_after_ctrl_c_equals_uninterrupted(corpus, tmp_path,
                                                                         ctrl_c_in_rollout) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    procs = ("--collector", "process", "--workers", "2")
    assert _pretrain(corpus, straight, "--updates", "3", *procs) == 0
    records = read_jsonl(straight / "metrics.jsonl")
    assert [r["episodes"] for r in records] == [4, 8, 12]  # each update: 2 workers x 2 envs
    assert records[0]["normalised_cost"] == pytest.approx(1.0)

    restore = ctrl_c_in_rollout(3)  # Ctrl-C in the third update's rollout
    assert _pretrain(corpus, broken, "--updates", "3", *procs) == 130
    assert multiprocessing.active_children() == []  # the workers were stopped on the way out
    restore()
    assert _pretrain(corpus, broken, "--updates", "3", "--resume", *procs) == 0

    a = load_file(str(straight / "checkpoint.safetensors"))
    b = load_file(str(broken / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith(("policy.", "optimizer.", "generator")):
            assert torch.equal(a[k], b[k]), k
    rb = read_jsonl(broken / "metrics.jsonl")
    assert [(r["design"], r["mean_cost"]) for r in records] == [(r["design"], r["mean_cost"]) for r in rb]


def test_ray_actors_roll_out_like_in_process_workers_and_the_update_trains(corpus, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    problems_fn = _problems_fn(corpus)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = PretrainConfig(seed=5, n_envs=2, hidden=16, channels=4, fd_iterations=2, workers=2)
        trainer = Pretrainer(problems_fn(), tmp_path, config, collector="ray", problems_fn=problems_fn)
        try:
            before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
            record = trainer.step()
        finally:
            trainer.close()
    finally:
        if started:
            ray.shutdown()
    assert record["episodes"] == 4  # 2 actors x 2 envs
    # the update trained on what two in-process workers seeded 5 and 6 roll out with those weights
    d = design_order(5, 0, 2)
    want = _in_process([p for _, p in problems_fn()], d, 0, before)
    got = trainer.algo.last_rollout
    for name in ("actions", "logprobs", "values", "valid"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert np.isfinite(record["mean_cost"]) and record["normalised_cost"] == pytest.approx(1.0)
    after = trainer.policy.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_collector_settings_are_one_line_errors(corpus, tmp_path, capsys, monkeypatch) -> None:
    assert _pretrain(corpus, tmp_path / "a", "--collector", "process", "--workers", "0") == 2
    assert "--workers" in _last_error(capsys)
    assert _pretrain(corpus, tmp_path / "b", "--workers", "2") == 2  # local: one worker
    assert "--collector process or ray" in _last_error(capsys)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "ray" else real(name, *a, **k))
    assert _pretrain(corpus, tmp_path / "c", "--collector", "ray") == 2
    assert "Ray is not installed" in _last_error(capsys)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("option, default, other, bad", [
    ("--risk-quantile", "0.25", "1", "0"),  # 1: every episode, another update
    ("--ent-coef", "0.01", "0.5", "-1"),  # another entropy bonus, another update
])
def test_ppo_option_reaches_ppo_and_a_bad_value_is_a_one_line_error(corpus, tmp_path, capsys, option, default,
                                                                   other, bad) -> None:
    def weights(name, *extra):
        assert _pretrain(corpus, tmp_path / name, "--updates", "2", *extra) == 0
        return load_file(str(tmp_path / name / "policy.safetensors"))

    unset, same, changed = weights("u"), weights("s", option, default), weights("c", option, other)
    assert all(torch.equal(unset[k], same[k]) for k in unset)  # the default is what an unset option gives
    assert any(not torch.equal(unset[k], changed[k]) for k in unset)
    assert _pretrain(corpus, tmp_path / "bad", option, bad) == 2
    assert option in _last_error(capsys)
    assert not (tmp_path / "bad").exists()


def test_prior_kl_anchors_pretraining_and_negative_is_a_one_line_error(corpus, tmp_path, capsys) -> None:
    def run(name, *extra):
        assert _pretrain(corpus, tmp_path / name, "--updates", "3", *extra) == 0
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return load_file(str(tmp_path / name / "policy.safetensors")), rows

    free, free_rows = run("free")
    held, held_rows = run("held", "--prior-kl", "1")
    assert all(r["ref_kl"] is None for r in free_rows)  # no reference: no term (NaN, written as null)
    assert all(r["ref_kl"] >= 0 for r in held_rows)  # a KL divergence, reported per update
    assert any(not torch.equal(free[k], held[k]) for k in free)  # the term changes the update
    assert _pretrain(corpus, tmp_path / "bad", "--prior-kl", "-0.5") == 2
    assert "--prior-kl" in _last_error(capsys)
    assert not (tmp_path / "bad").exists()
