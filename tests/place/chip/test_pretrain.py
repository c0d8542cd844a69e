"""`place chip pretrain`: the run folder, exact resume after Ctrl-C, the design order, refused runs."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from moeplace.cli import main
from moeplace.place.chip.corpus import generate_corpus
from moeplace.place.chip.pretrain import design_order
from moeplace.runs import read_jsonl


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two tiny generated designs (3 to 6 hard macros)."""
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, 2, seed=3, min_macros=3, max_macros=6, show_progress=False)
    return out


def _pretrain(corpus, out, *extra: str) -> int:
    return main(["place", "chip", "pretrain", "--corpus", str(corpus), "--no-builtin", "--out", str(out),
                 "--envs", "2", "--hidden", "16", "--channels", "4", "--fd-iterations", "2", "--seed", "5",
                 "--budget", "10m", *extra])


def test_design_order_visits_every_design_once_per_pass() -> None:
    for count in (1, 3, 7):
        for p in range(3):
            seen = [design_order(11, p * count + k, count) for k in range(count)]
            assert sorted(seen) == list(range(count))


def test_run_folder_holds_policy_checkpoint_metrics_curve(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert _pretrain(corpus, out, "--updates", "3", "--json") == 0
    for name in ("policy.safetensors", "policy.json", "checkpoint.safetensors", "checkpoint.json",
                 "learning_curve.png"):
        assert (out / name).is_file(), name
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    # each update trains on one design, and the first pass visits both
    assert {r["design"] for r in records[:2]} == {f"{corpus.name}/design_0000", f"{corpus.name}/design_0001"}
    # first visit of a design: its scale is that rollout's mean cost, so the normalised cost is exactly 1
    assert records[0]["normalised_cost"] == pytest.approx(1.0)
    text = capsys.readouterr().out
    if importlib.util.find_spec("tensorboard") is not None:  # the optional extra: scalars in tb/
        assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    else:
        assert "TensorBoard scalars skipped" in text
    figures = json.loads(text.strip().splitlines()[-1])
    assert figures["updates"] == 3 and figures["episodes"] == 6  # 2 envs x 3 updates, one episode each
    assert set(figures["time"]) == {"rollout_s", "update_s", "checkpoint_s"}


def test_interrupted_and_resumed_run_equals_uninterrupted(corpus, tmp_path, ctrl_c_in_rollout) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert _pretrain(corpus, straight, "--updates", "4") == 0

    restore = ctrl_c_in_rollout(3)  # Ctrl-C in the third update's rollout
    assert _pretrain(corpus, broken, "--updates", "4") == 130
    assert [r["step"] for r in read_jsonl(broken / "metrics.jsonl")] == [1, 2]
    restore()
    assert _pretrain(corpus, broken, "--updates", "4", "--resume") == 0

    a = load_file(str(straight / "checkpoint.safetensors"))
    b = load_file(str(broken / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # weights, Adam moments and the minibatch generator's state
        if k.startswith(("policy.", "optimizer.", "generator")):
            assert torch.equal(a[k], b[k]), k
    ra, rb = read_jsonl(straight / "metrics.jsonl"), read_jsonl(broken / "metrics.jsonl")
    assert [(r["step"], r["design"], r["mean_cost"]) for r in ra] == \
        [(r["step"], r["design"], r["mean_cost"]) for r in rb]


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_second_run_into_a_run_folder_is_refused(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert _pretrain(corpus, out, "--updates", "1") == 0
    capsys.readouterr()
    assert _pretrain(corpus, out, "--updates", "1") == 2
    assert "--resume" in _last_error(capsys)
    assert _pretrain(corpus, out, "--updates", "2", "--overwrite") == 0


def test_resume_with_another_corpus_or_settings_is_refused(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert _pretrain(corpus, out, "--updates", "1") == 0
    other = tmp_path / "other"
    generate_corpus(other, 3, seed=4, min_macros=3, max_macros=6, show_progress=False)
    capsys.readouterr()
    assert _pretrain(other, out, "--updates", "2", "--resume") == 2
    assert "designs differ" in _last_error(capsys)
    code = main(["place", "chip", "pretrain", "--corpus", str(corpus), "--no-builtin", "--out", str(out),
                 "--envs", "3", "--hidden", "16", "--channels", "4", "--fd-iterations", "2", "--seed", "5",
                 "--updates", "2", "--resume"])
    assert code == 2 and "other settings" in _last_error(capsys)
    assert _pretrain(corpus, tmp_path / "fresh", "--resume") == 2
    assert "nothing to continue" in _last_error(capsys)
