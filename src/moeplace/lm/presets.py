"""Named training set-ups: the default MoE demo, nanoGPT's CPU recipe, and the paper's MoE-LSTM."""

from __future__ import annotations

import dataclasses

from moeplace.lm.config import TrainConfig
from moeplace.lm.lstm import LSTMConfig
from moeplace.lm.transformer import TransformerConfig

# The paper's noisy top-k router and balancing losses (importance and load, weight 0.1 each; section 4).
PAPER_MOE = {"router": "noisy_topk", "w_importance": 0.1, "w_load": 0.1}
# Word level: train with a sampled softmax over 1,024 words (lm/softmax.py); unused for smaller vocabularies.
SOFTMAX_SAMPLES = 1024
# GShard/Mixtral softmax top-k gating with a balance loss 0.1·E·sum_i f_i·P_i: in the small Transformers here
# it trained faster per step and per token than noisy top-k (docs/benchmarks.md) and keeps CV(load) < 0.1.
SOFTMAX_MOE = {"router": "softmax_topk", "aux_loss_weight": 0.1}


def nanogpt_cpu(vocab_size: int) -> TrainConfig:
    """nanoGPT's published CPU recipe for Tiny Shakespeare (train_shakespeare_char.py, CPU overrides)."""
    model = TransformerConfig(vocab_size=vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128,
                              d_ff=512, dropout=0.0, bias=False, activation="gelu")
    return TrainConfig(model=model, batch_size=12, lr=1e-3, min_lr=1e-4, warmup=100 / 2000, max_steps=2000,
                       weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, eval_interval=0)


def demo(vocab_size: int) -> TrainConfig:
    """The default `moeplace lm train`: a sparse MoE Transformer tuned for ~165 s on 2 CPU cores."""
    # 2 blocks (the MoE in the second): at equal wall time on one core it beat 3 and 4 blocks, whose
    # steps cost 1.7x and 2.2x as much (docs/benchmarks.md).
    model = TransformerConfig(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=128,
                              d_ff=512, dropout=0.0, bias=False, activation="gelu", pos_emb="rope",
                              num_experts=8, k=2, moe_every=2, moe_kwargs=dict(SOFTMAX_MOE),
                              moe_output_scale=1.0, softmax_samples=SOFTMAX_SAMPLES)
    return TrainConfig(model=model, batch_size=16, lr=3e-3, min_lr=3e-4, warmup=0.03, max_steps=100_000,
                       time_budget=155.0, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0,
                       eval_interval=500, eval_tokens=8192)


def moe_lstm(vocab_size: int) -> TrainConfig:
    """The paper's flat MoE-LSTM at small scale (section 5.1, appendix C): embedding -> LSTM -> MoE -> LSTM ->
    softmax, d_model 128 and experts of 256 ReLU units (the paper's 512 and 1,024, halved twice), 16 experts,
    k = 4, noisy top-k gating with importance and load losses 0.1 each, sampled softmax at word level."""
    model = LSTMConfig(vocab_size=vocab_size, block_size=64, d_model=128, d_ff=1024, num_experts=16, k=4,
                       d_expert=256, moe_kwargs=dict(PAPER_MOE), softmax_samples=SOFTMAX_SAMPLES)
    return TrainConfig(model=model, batch_size=32, lr=3e-3, min_lr=3e-4, warmup=0.03, max_steps=2000,
                       eval_interval=500, eval_tokens=8192)


def moe_lstm_hierarchical(vocab_size: int) -> TrainConfig:
    """The paper's two-level hierarchical MoE-LSTM (appendix B) at small scale: 8 groups of 8 experts, 2
    groups and 2 experts in each per token (k = 4 in all), noisy top-k at both levels; else `moe-lstm`."""
    cfg = moe_lstm(vocab_size)
    model = dataclasses.replace(cfg.model, num_experts=64,
                                moe_kwargs={**PAPER_MOE, "num_groups": 8, "k_groups": 2})
    return dataclasses.replace(cfg, model=model)


PRESETS = {"demo": demo, "nanogpt": nanogpt_cpu, "moe-lstm": moe_lstm, "moe-lstm-h": moe_lstm_hierarchical}
