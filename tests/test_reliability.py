"""Shared reliability mechanisms: argument validators, valid JSON, run folders, divergence checks."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from moeplace.checkpoint import load_checkpoint, save_checkpoint
from moeplace.cli import main
from moeplace.cli.args import (
    duration,
    duration_or_off,
    fraction_below_one,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    probability,
)
from moeplace.errors import CheckpointError, DivergenceError, InputError, NonFiniteError
from moeplace.numerics import check_finite, clip_and_check, diverges_at, grad_norm
from moeplace.runs import append_jsonl, claim_run_dir, read_jsonl, truncate_jsonl
from moeplace.utils import json_dumps, print_json_line


def _strict(text: str):
    """json.loads that refuses NaN/Infinity (what other JSON readers do)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


# -- validators ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("parse", "good", "bad"), [
    (positive_int, ["1", "12"], ["0", "-3", "1.5", "x"]),
    (nonneg_int, ["0", "7"], ["-1", "2.0"]),
    (positive_float, ["1e-3", "2"], ["0", "-1", "nan", "inf", "x"]),
    (nonneg_float, ["0", "0.5"], ["-0.1", "nan", "-inf"]),
    (probability, ["0", "0.3", "1"], ["1.5", "-0.1", "nan"]),
    (fraction_below_one, ["0", "0.99"], ["1", "2"]),
    (duration, ["90", "1.5"], ["0", "-1", "5d", "x"]),
    (duration_or_off, ["0", "30"], ["-1", "x"]),
])
def test_validators_accept_their_range_and_refuse_the_rest(parse, good, bad):
    for text in good:
        assert parse(text) == float(text)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@pytest.mark.parametrize(("argv", "flag"), [
    (["lm", "train", "--max-steps", "-3"], "--max-steps"),
    (["lm", "train", "--lr", "-1"], "--lr"),
    (["lm", "train", "--lr", "nan"], "--lr"),
    (["lm", "train", "--dropout", "1.5"], "--dropout"),
    (["lm", "train", "--batch-size", "0"], "--batch-size"),
    (["lm", "sample", "run", "--top-k", "0"], "--top-k"),
    (["lm", "compare", "--steps", "0"], "--steps"),
    (["rl", "gridworld", "--walls", "1"], "--walls"),
    (["rl", "train", "--env", "CartPole-v1", "--n-envs", "0"], "--n-envs"),
    (["place", "device", "--budget", "0s"], "--budget"),
    (["place", "chip", "--budget", "5d"], "--budget"),
    (["lm", "train", "--time-budget", "3x"], "--time-budget"),
    (["place", "device", "--finetune-budget", "soon"], "--finetune-budget"),
    (["place", "device", "pretrain", "--updates", "0", "--out", "r"], "--updates"),
    (["place", "device", "pretrain", "--budget", "0", "--out", "r"], "--budget"),
    (["place", "device-calibrate", "--repeats", "0"], "--repeats"),
    (["place", "chip", "--columns", "0"], "--columns"),
    (["place", "chip", "--seed", "-1"], "--seed"),
])
def test_bad_numbers_are_one_line_errors_at_parse_time(argv, flag, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert flag in err[-1] and err[-1].startswith("moeplace") and "Traceback" not in "\n".join(err)


def test_k_above_experts_is_refused_before_training(capsys, tmp_path):
    assert main(["lm", "train", "--num-experts", "4", "--k", "8", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--k 8" in err and "--num-experts 4" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_divergence_error_exits_3(monkeypatch, capsys):
    import moeplace.cli.rl as rl_cli

    def diverge(args):
        raise DivergenceError("step 5: loss is nan - training diverged")

    monkeypatch.setattr(rl_cli, "cmd_train", diverge)
    assert main(["rl", "train", "--env", "CartPole-v1"]) == 3
    assert capsys.readouterr().err.strip() == "moeplace: error: step 5: loss is nan - training diverged"


# -- JSON ----------------------------------------------------------------------------------------------

def test_json_lines_are_valid_json_with_null_for_non_finite(capsys):
    print_json_line({"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32("nan"),
                     "d": np.array([1.0, -np.inf]), "e": {"f": np.int64(3)}})
    out = _strict(capsys.readouterr().out)
    assert out == {"a": None, "b": [None, 1.5], "c": None, "d": [1.0, None], "e": {"f": 3}}
    json.dumps(json.loads(json_dumps({"x": math.nan})), allow_nan=False)  # round-trips strictly


def test_checkpoint_sidecar_is_valid_json_and_metadata_round_trips(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(2), "best": math.inf})
    assert _strict((tmp_path / "c.json").read_text())["__dict__"][1] == ["best", None]
    assert load_checkpoint(path)["best"] == math.inf  # the checkpoint itself keeps the value


def test_non_finite_checkpoint_is_refused_and_the_old_one_kept(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(3)})
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="'w'"):
        save_checkpoint(path, {"w": torch.tensor([1.0, float("nan"), 2.0])})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]  # no temporaries


# -- run folders and metrics ---------------------------------------------------------------------------

def test_claim_run_dir_refuses_another_run_unless_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    claim_run_dir(run, ["ckpt.safetensors", "metrics.jsonl"])  # absent folder: fine
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    claim_run_dir(run, ["ckpt.safetensors", "metrics.jsonl"])  # unrelated files: fine
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(InputError, match="holds another run"):
        claim_run_dir(run, ["ckpt.safetensors", "metrics.jsonl"])
    claim_run_dir(run, ["metrics.jsonl"], resume=True)
    assert (run / "metrics.jsonl").exists()
    with pytest.raises(InputError, match="--resume and --overwrite"):
        claim_run_dir(run, ["metrics.jsonl"], resume=True, overwrite=True)
    claim_run_dir(run, ["metrics.jsonl"], overwrite=True)
    assert not (run / "metrics.jsonl").exists() and (run / "notes.txt").read_text() == "mine"


def test_metrics_are_appended_whole_and_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for s in (1, 2, 3):
        append_jsonl(path, {"step": s, "loss": float("nan") if s == 2 else 1.0 / s})
    with path.open("a") as f:
        f.write('{"step": 4, "lo')  # a crash in the middle of a write
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]
    assert read_jsonl(path)[1]["loss"] is None
    truncate_jsonl(path, 2)
    assert path.read_text().splitlines() == ['{"step": 1, "loss": 1.0}', '{"step": 2, "loss": null}']


# -- divergence checks ---------------------------------------------------------------------------------

def test_check_finite_names_the_step_the_value_and_the_learning_rate():
    check_finite("step 3", 1e-3, loss=torch.tensor(2.0), gradient_norm=5.0, skipped=None)
    with pytest.raises(DivergenceError) as e:
        check_finite("step 7", 1e9, "--lr", loss=torch.tensor(float("nan")))
    msg = str(e.value)
    assert msg.startswith("step 7: loss is nan") and "learning rate (1e+09)" in msg and "--lr" in msg


def test_clip_and_check_returns_the_norm_before_clipping_and_refuses_nan():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    assert float(grad_norm([a, b])) == pytest.approx(5.0)
    assert clip_and_check([a, b], 1.0, "step 1") == pytest.approx(5.0)  # 3-4-5 by hand
    assert a.grad.tolist() == pytest.approx([0.6, 0.0], rel=1e-5)
    assert float(b.grad) == pytest.approx(0.8, rel=1e-5)
    assert clip_and_check([a, b], None, "step 2") == pytest.approx(1.0, rel=1e-5)
    b.grad = torch.tensor([float("inf")])
    with pytest.raises(DivergenceError, match="step 3: gradient norm is inf"):
        clip_and_check([a, b], None, "step 3", 0.5)


def test_diverges_at_turns_a_layer_nan_into_a_divergence_error():
    from moeplace.moe import MoE

    layer = MoE(8, 16, num_experts=4, k=2)
    with pytest.raises(NonFiniteError):  # the layer's own check, still a ValueError for library users
        layer(torch.full((2, 8), float("nan")))
    with pytest.raises(DivergenceError, match="step 4: x contains NaN"), diverges_at("step 4", 0.1):
        layer(torch.full((2, 8), float("nan")))
