"""The `moeplace lm` commands end to end, and their one-line errors with exit code 2."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from moeplace.cli import main

TINY = ["--family", "transformer", "--preset", "nanogpt", "--n-layer", "1", "--d-model", "16",
        "--n-head", "2", "--d-ff", "32", "--num-experts", "4", "--k", "2", "--block-size", "16",
        "--batch-size", "4",
        "--max-steps", "6", "--time-budget", "0", "--eval-interval", "3", "--eval-tokens", "128"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_eval_sample_roundtrip(text_file, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, _ = run(["lm", "train", "--corpus", str(text_file), "--out", str(out_dir),
                        "--sample-tokens", "20", "--json", *TINY], capsys)
    assert code == 0
    assert "val loss" in out and "perplexity" in out and "sample:" in out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["step"] == 6 and figures["val_ppl"] == pytest.approx(2.718281828 ** figures["val_loss"])
    assert (out_dir / "ckpt.safetensors").is_file() and (out_dir / "ckpt.json").is_file()
    code, out, _ = run(["lm", "eval", str(out_dir), "--corpus", str(text_file), "--json"], capsys)
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1])["loss"] == pytest.approx(figures["val_loss"], rel=1e-6)
    code, out, _ = run(["lm", "sample", str(out_dir), "--prompt", "First", "--max-new-tokens", "10",
                        "--top-k", "5"], capsys)
    assert code == 0 and out.startswith("First") and len(out.rstrip("\n")) == 15


def test_resume_continues_to_more_steps(text_file, tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert run(["lm", "train", "--corpus", str(text_file), "--out", str(out_dir), "--sample-tokens", "0",
                *TINY], capsys)[0] == 0
    code, out, _ = run(["lm", "train", "--corpus", str(text_file), "--out", str(out_dir),
                        "--sample-tokens", "0", "--resume", *TINY[:-8], "--max-steps", "9",
                        "--time-budget", "0"], capsys)
    assert code == 0 and "step 9 " in out


def _error(argv, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("moeplace: error:") and "Traceback" not in err
    return err


def test_user_errors_are_one_line_exit_2(text_file, tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert "not found" in _error(["lm", "train", "--corpus", str(tmp_path / "missing.txt"), *TINY], capsys)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "empty" in _error(["lm", "train", "--corpus", str(empty), *TINY], capsys)
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be " * 3)
    assert "context" in _error(["lm", "train", "--corpus", str(short), "--out", str(out_dir), *TINY], capsys)
    # a checkpoint that does not fit the model
    assert run(["lm", "train", "--corpus", str(text_file), "--out", str(out_dir), "--sample-tokens", "0",
                *TINY], capsys)[0] == 0
    err = _error(["lm", "train", "--corpus", str(text_file), "--out", str(out_dir), "--resume", *TINY,
                  "--d-model", "32"], capsys)
    assert "does not fit" in err
    # a corrupt checkpoint
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    assert "corrupt" in _error(["lm", "eval", str(bad)], capsys)
    assert "not found" in _error(["lm", "sample", str(tmp_path / "none.safetensors")], capsys)
    assert "expected cpu or cuda" in _error(["lm", "train", "--corpus", str(text_file), "--device", "tpu",
                                             *TINY], capsys)
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _error(["lm", "train", "--corpus", str(text_file), "--device",
                                                  "cuda", *TINY], capsys)


def test_compare_writes_table_csv_and_plots(text_file, tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    code, out, _ = run(["lm", "compare", "--corpus", str(text_file), "--experts", "0,4", "--d-model", "16",
                        "--d-expert", "16", "--n-layer", "1", "--block-size", "16", "--batch-size", "4",
                        "--steps", "6", "--eval-interval", "3", "--eval-tokens", "128", "--out", str(out_dir),
                        "--json"], capsys)
    assert code == 0
    rows = list(csv.DictReader((out_dir / "compare.csv").open()))
    assert [r["experts"] for r in rows] == ["0", "4"]
    assert int(rows[1]["params"]) > int(rows[0]["params"])
    assert {"params", "flops_per_token", "val_loss", "tokens_per_s"} <= set(rows[0])
    for name in ("compare.md", "val_loss_vs_step.png", "loss_vs_experts.png"):
        assert (out_dir / name).stat().st_size > 0
    assert len(json.loads(out.strip().splitlines()[-1])["rows"]) == 2


def test_no_arguments_give_the_demo_preset_and_flags_override():
    from moeplace.cli import build_parser
    from moeplace.cli.lm import build_config
    from moeplace.lm.presets import demo

    cfg = build_config(build_parser().parse_args(["lm", "train"]), 66)
    assert cfg == demo(66) and cfg.time_budget == 155.0 and cfg.model.num_experts > 0
    parse = build_parser().parse_args
    args = parse(["lm", "train", "--time-budget", "3m", "--num-experts", "16", "--lr", "1e-3"])
    cfg = build_config(args, 66)
    assert cfg.time_budget == 180.0 and cfg.model.num_experts == 16 and cfg.lr == 1e-3
    assert build_config(parse(["lm", "train", "--time-budget", "0"]), 66).time_budget is None


def test_router_flag_replaces_the_presets_router_options():
    """--router noisy_topk on the demo preset (softmax top-k with aux_loss_weight) must build a model."""
    from moeplace.cli import build_parser
    from moeplace.cli.lm import build_config
    from moeplace.lm.models import build_model

    args = build_parser().parse_args(["lm", "train", "--router", "noisy_topk", "--pos-emb", "learned"])
    cfg = build_config(args, 66)
    assert cfg.model.moe_kwargs == {"router": "noisy_topk"} and cfg.model.pos_emb == "learned"
    model = build_model(cfg.model)
    assert type(model.blocks[-1].ffn.router).__name__ == "NoisyTopKRouter"
