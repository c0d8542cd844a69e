"""`lm train` under torchrun's environment: N processes train exactly like one; failures stop cleanly."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import launch  # noqa: E402
from _lm_worker import run as run_tiny  # noqa: E402

from moeplace.lm.distributed import SHARDED_DIR  # noqa: E402
from moeplace.moe.sharded import read_index  # noqa: E402

HERE = Path(__file__).resolve().parent
LM_WORKER = str(HERE / "_lm_worker.py")
TEXT = Path(__file__).resolve().parents[2] / "src" / "moeplace" / "data" / "tinyshakespeare" / "input.txt"


@pytest.fixture()
def corpus_file(tmp_path) -> Path:
    """A 12 kB slice of Tiny Shakespeare (train/valid split made by load_corpus)."""
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT.read_text()[:12000])
    return path


def test_two_processes_train_like_one_and_checkpoints_reshard(tmp_path, corpus_file):
    """2 ranks give the 1-process losses step by step; runs resume 1 -> 2 and 2 -> 1 processes exactly."""
    torch.set_num_threads(1)
    one = run_tiny(tmp_path / "one", corpus_file, max_steps=6, stop_at=4)  # 1 process, steps 1-4
    shutil.copytree(tmp_path / "one", tmp_path / "one_to_two")
    # 2 processes: a fresh run (steps 1-4), then the 1-process run resumed (steps 5-6)
    jobs = [f"{tmp_path / 'two'}:6:4", f"{tmp_path / 'one_to_two'}:6:0:resume"]
    launch.run([LM_WORKER, str(corpus_file), *jobs], 2)
    two = json.loads((tmp_path / "two" / "result-2.json").read_text())
    one_to_two = json.loads((tmp_path / "one_to_two" / "result-2.json").read_text())
    index = read_index(tmp_path / "two" / SHARDED_DIR)
    assert index["world_size"] == 2 and index["experts"]  # every MoE layer's experts were split in two
    # `lm eval` / `lm sample` path: the 2 shards load as one whole model, equal to the 1-process model
    train_mod = importlib.import_module(os.environ.get("MOEPLACE_TRAIN_MODULE", "moeplace.lm.train"))
    from moeplace.lm.data import load_corpus

    valid = load_corpus(corpus_file, "char", tmp_path / "cache").valid
    whole, state = train_mod.load_for_inference(tmp_path / "two")
    single, _ = train_mod.load_for_inference(tmp_path / "one")
    assert state["step"] == 4 and whole.num_params() == single.num_params()
    want = train_mod.evaluate(single, valid, 16)
    assert train_mod.evaluate(whole, valid, 16) == pytest.approx(want, rel=1e-5)
    # 1 process again: its own run resumed (the reference for steps 5-6), and the 2-process run resumed
    ref = run_tiny(tmp_path / "one", corpus_file, max_steps=6, resume=True)
    two_to_one = run_tiny(tmp_path / "two", corpus_file, max_steps=6, resume=True)

    def same(a: list[float], b: list[float]) -> None:
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-5)

    assert (one["step"], two["step"], ref["step"], one_to_two["step"], two_to_one["step"]) == (4, 4, 6, 6, 6)
    same(two["losses"], one["losses"])
    same(one_to_two["losses"], ref["losses"])
    same(two_to_one["losses"], ref["losses"])
    assert one_to_two["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)
    assert two_to_one["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)


def _cli(out: Path, corpus_file: Path, timeout_s: int) -> list[str]:
    return ["-m", "moeplace", "lm", "train", "--corpus", str(corpus_file), "--out", str(out),
            "--cache-dir", str(out.parent / "cache"), "--block-size", "16", "--n-layer", "1", "--n-head", "2",
            "--d-model", "16", "--d-ff", "32", "--num-experts", "4", "--k", "2", "--batch-size", "4",
            "--max-steps", "1000000", "--time-budget", "0", "--eval-interval", "0", "--sample-tokens", "0",
            "--dist-timeout", str(timeout_s)]


def _wait_for(path: Path, procs: list[subprocess.Popen], limit: float = 180) -> None:
    """Wait until `path` exists (training is under way) while every process is alive."""
    end = time.monotonic() + limit
    while not path.exists():
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("failure", ["killed", pytest.param("hung", marks=pytest.mark.slow)])
def test_peer_failure_stops_the_other_rank_with_a_clear_error(tmp_path, corpus_file, failure):
    """A rank killed (or frozen) mid-training makes rank 0 exit non-zero with one clear line, not hang."""
    procs = launch.start(_cli(tmp_path / "run", corpus_file, timeout_s=10), 2, cwd=tmp_path)
    try:
        _wait_for(tmp_path / "run" / "metrics.jsonl", procs)
        os.kill(procs[1].pid, signal.SIGKILL if failure == "killed" else signal.SIGSTOP)
        # bounded: the process-group timeout (10 s) plus start-up slack; the test only asks that it ends
        _, err = procs[0].communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert procs[0].returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("moeplace: error: rank 0 of 2: stopped during training: another rank died"), last
    assert "Traceback" not in err


def test_torchrun_lm_train_then_eval_on_one_process(tmp_path, corpus_file, capsys):
    """`torchrun --nproc_per_node 2 -m moeplace lm train` works; rank 0 alone prints; `lm eval` reads it."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            *_cli(out, corpus_file, timeout_s=60)]
    argv[argv.index("1000000")] = "3"
    done = subprocess.run([*argv, "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", MOEPLACE_NO_PROGRESS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    json_lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1  # rank 1 prints nothing
    figures = json.loads(json_lines[0])
    assert figures["step"] == 3
    assert read_index(out / SHARDED_DIR)["world_size"] == 2
    from moeplace.cli import main

    assert main(["lm", "eval", str(out), "--max-tokens", "256", "--cache-dir", str(tmp_path / "cache"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
