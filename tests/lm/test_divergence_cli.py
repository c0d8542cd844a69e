"""`lm train` never loses or corrupts a run: divergence stops it (exit 3), run folders are not reused."""

from __future__ import annotations

import json

from moeplace.cli import main

TINY = ["--family", "transformer", "--preset", "nanogpt", "--n-layer", "1", "--d-model", "16",
        "--n-head", "2", "--d-ff", "32", "--num-experts", "4", "--k", "2", "--block-size", "16",
        "--batch-size", "4", "--max-steps", "6", "--time-budget", "0", "--eval-interval", "3",
        "--eval-tokens", "128", "--sample-tokens", "0"]


def train(corpus, out, *extra):
    return main(["lm", "train", "--corpus", str(corpus), "--out", str(out), *TINY, *extra])


def test_huge_learning_rate_stops_with_one_line_error_and_no_checkpoint(text_file, tmp_path, capsys):
    for experts in ("4", "0"):  # MoE (NaN met inside the MoE layer) and dense (NaN loss)
        out = tmp_path / f"run{experts}"
        assert train(text_file, out, "--lr", "1e9", "--num-experts", experts, "--json") == 3
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert err.count("\n") == 0 and err.startswith("moeplace: error: step ")
        assert "training diverged" in err and "learning rate (1e+09)" in err and "--lr" in err
        assert "no checkpoint was written" in err
        assert "NaN" not in captured.out and "{" not in captured.out  # no JSON line with bare NaN
        assert not (out / "ckpt.safetensors").exists()
        if (out / "metrics.jsonl").exists():  # what was logged (every 10 steps) is valid JSON
            for line in (out / "metrics.jsonl").read_text().splitlines():
                assert "NaN" not in line and json.loads(line)["step"] >= 1


def test_divergence_after_resume_keeps_the_last_good_checkpoint_and_metrics(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(text_file, out) == 0
    ckpt, metrics = (out / "ckpt.safetensors").read_bytes(), (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert train(text_file, out, "--resume", "--max-steps", "12", "--lr", "1e9") == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"last good checkpoint kept: {out / 'ckpt.safetensors'} (step 6)" in err
    assert (out / "ckpt.safetensors").read_bytes() == ckpt
    good = [json.loads(line) for line in metrics.splitlines() if not json.loads(line).get("final")]
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][:len(good)] == good


def test_a_new_run_never_reuses_another_runs_folder(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(text_file, out) == 0
    ckpt, metrics = (out / "ckpt.safetensors").read_bytes(), (out / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert train(text_file, out, "--seed", "3") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds another run" in err and "--resume" in err and "--overwrite" in err
    assert (out / "ckpt.safetensors").read_bytes() == ckpt and (out / "metrics.jsonl").read_bytes() == metrics
    assert train(text_file, out, "--resume", "--overwrite") == 2
    assert train(text_file, out, "--seed", "3", "--overwrite", "--json") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 6
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6  # one run's records, not two


def test_compare_refuses_to_rerun_into_its_folder_without_overwrite(text_file, tmp_path, capsys):
    sizes = ["--d-model", "8", "--d-expert", "8", "--n-layer", "1", "--block-size", "8", "--batch-size", "2",
             "--steps", "2", "--eval-interval", "1", "--eval-tokens", "32"]
    argv = ["lm", "compare", "--corpus", str(text_file), "--out", str(tmp_path / "cmp"), "--experts", "0,2",
            "--k", "1", *sizes]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert "holds another run" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    k3 = ["lm", "compare", "--corpus", str(text_file), "--out", str(tmp_path / "k3"), "--experts", "0,2"]
    assert main([*k3, "--k", "3", *sizes]) == 2  # an MoE with fewer experts than k
    assert "--k 3" in capsys.readouterr().err
