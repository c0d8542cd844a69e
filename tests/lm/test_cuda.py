"""`moeplace lm train --device cuda` (marker `cuda`: `make test-cuda` on a machine with a GPU)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from moeplace.cli import main

from .test_cli import TINY

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _train(corpus, out, device, steps, capsys):
    argv = ["lm", "train", "--corpus", str(corpus), "--out", str(out), "--sample-tokens", "20", "--json",
            "--device", device, *TINY[:-8], "--max-steps", str(steps), "--time-budget", "0",
            "--eval-interval", "0"]
    assert main(argv) == 0
    out_text = capsys.readouterr().out
    return json.loads(out_text.strip().splitlines()[-1]), out_text


def test_first_step_on_cuda_equals_cpu_and_training_learns(text_file, tmp_path, capsys):
    assert not torch.backends.cuda.matmul.allow_tf32  # torch's default: exact float32 matmuls
    cpu, _ = _train(text_file, tmp_path / "cpu", "cpu", 1, capsys)
    gpu, _ = _train(text_file, tmp_path / "gpu1", "cuda", 1, capsys)
    # same init, same batch; CUDA's attention and reductions sum in another order (3e-4 seen on an H200)
    assert gpu["train_loss"] == pytest.approx(cpu["train_loss"], rel=1e-3)
    longer, text = _train(text_file, tmp_path / "gpu", "cuda", 60, capsys)
    assert "sample:" in text
    assert longer["val_loss"] < cpu["val_loss"] - 0.1 and longer["val_loss"] < math.log(40)
    # the checkpoint written from the GPU loads and evaluates on the CPU to the reported loss
    assert main(["lm", "eval", str(tmp_path / "gpu"), "--corpus", str(text_file), "--json"]) == 0
    loss = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"]
    assert loss == pytest.approx(longer["val_loss"], rel=1e-4)
