"""Training loop: LR schedule, learning, exact resume after an interruption, checkpoint contents."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from moeplace.checkpoint import load_checkpoint
from moeplace.lm.data import load_corpus
from moeplace.lm.train import TrainConfig, lr_at, train
from moeplace.lm.transformer import TransformerConfig


def tiny_cfg(vocab_size: int, **kw) -> TrainConfig:
    model = TransformerConfig(vocab_size=vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32, d_ff=64,
                              num_experts=4, k=2, moe_kwargs={"router": "noisy_topk"})
    base = dict(model=model, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=0.1, max_steps=12, eval_interval=4,
                eval_tokens=256, log_interval=1, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_warmup_and_cosine():
    cfg = TrainConfig(model=TransformerConfig(), lr=1.0, min_lr=0.1, warmup=0.1)
    assert lr_at(0.0, cfg) == 0.0
    assert lr_at(0.05, cfg) == pytest.approx(0.5)
    assert lr_at(0.1, cfg) == pytest.approx(1.0)
    assert lr_at(0.55, cfg) == pytest.approx(0.1 + 0.5 * 0.9)  # cosine midpoint
    assert lr_at(1.0, cfg) == pytest.approx(0.1)


def test_training_reduces_loss(text_file, tmp_path):
    c = load_corpus(text_file, "char", tmp_path / "cache")
    cfg = tiny_cfg(c.vocab_size, max_steps=40, eval_interval=0)
    res = train(cfg, c, tmp_path / "run", show_progress=False)
    assert res["val_loss"] < math.log(c.vocab_size) - 0.5
    assert res["step"] == 40 and res["tokens"] == 40 * 8 * 16


def test_interrupted_and_resumed_run_equals_uninterrupted(text_file, tmp_path):
    c = load_corpus(text_file, "char", tmp_path / "cache")
    cfg = tiny_cfg(c.vocab_size)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=0.1))  # RNG must be restored
    full: list[float] = []
    ref = train(cfg, c, tmp_path / "full", callback=lambda s, r: full.append(r["loss"]), show_progress=False)

    part: list[float] = []

    def stop_at_5(step, record):
        part.append(record["loss"])
        if step == 5:
            raise KeyboardInterrupt

    first = train(cfg, c, tmp_path / "part", callback=stop_at_5, show_progress=False)
    assert first["interrupted"] and first["step"] == 5
    state = load_checkpoint(tmp_path / "part" / "ckpt.safetensors")
    assert state["step"] == 5 and state["data_position"] == {"seed": 7, "step": 5}
    res = train(cfg, c, tmp_path / "part", resume=True, callback=lambda s, r: part.append(r["loss"]),
                show_progress=False)
    assert len(full) == len(part) == 12
    assert part == full  # bit-for-bit the same losses
    assert res["val_loss"] == ref["val_loss"]
    logged = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == list(range(1, 13))


def test_time_budget_stops_run(text_file, tmp_path):
    c = load_corpus(text_file, "char", tmp_path / "cache")
    res = train(tiny_cfg(c.vocab_size, max_steps=10**6, time_budget=1.0, eval_interval=0), c, tmp_path / "t",
                show_progress=False)
    assert 0 < res["step"] < 10**6 and not res["interrupted"]
