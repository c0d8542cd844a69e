"""A decoder-only Transformer whose feed-forward network is an MoE layer in every (or every other) block.

With num_experts = 0 it is the dense GPT baseline (nanoGPT's architecture: pre-norm blocks,
causal self-attention, tied input/output embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from moeplace.lm.base import LanguageModel, make_ffn


@dataclass
class TransformerConfig:
    """Sizes of a (MoE) Transformer language model."""

    vocab_size: int = 65
    block_size: int = 64            # context length
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    d_ff: int = 512                 # dense FFN hidden units; an MoE's active hidden units are k * d_expert
    dropout: float = 0.0
    bias: bool = True
    activation: str = "gelu"
    num_experts: int = 0            # 0 = dense FFN everywhere
    k: int = 2                      # experts per token
    d_expert: int | None = None     # hidden units of one expert; None = d_ff // k (same active compute)
    moe_every: int = 1              # MoE in every block (1) or every other block (2), counted from the last
    moe_kwargs: dict = field(default_factory=dict)  # for moeplace.moe.MoE (router, capacity_factor, ...)
    moe_output_scale: float | None = None  # MoE output multiplier; None = k (see Block)
    pos_emb: str = "learned"        # "learned" absolute position embeddings (GPT-2) or "rope" (rotary)
    softmax_samples: int = 0        # training output layer: sampled softmax over this many words (0 = full)
    family: str = "transformer"


def rotary_tables(block_size: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [block_size, head_dim / 2] of the rotary position embedding (Su et al., RoFormer)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[..., i], x[..., i + D/2]) of x [B, H, T, D] by position-dependent angles."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused QKV projection (optionally rotary positions)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd {cfg.n_embd} must be divisible by n_head {cfg.n_head}")
        if cfg.pos_emb not in ("learned", "rope"):
            raise ValueError(f"pos_emb must be 'learned' or 'rope', not {cfg.pos_emb!r}")
        if cfg.pos_emb == "rope" and (cfg.n_embd // cfg.n_head) % 2:
            raise ValueError(f"rotary positions need an even head size, not n_embd {cfg.n_embd} / "
                             f"n_head {cfg.n_head} = {cfg.n_embd // cfg.n_head}")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.rope = cfg.pos_emb == "rope"
        if self.rope:
            cos, sin = rotary_tables(cfg.block_size, cfg.n_embd // cfg.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.rope:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-norm block: x + attn(ln(x)), then x + s·ffn(ln(x)); ffn dense (s = 1) or MoE (s = k)."""

    def __init__(self, cfg: TransformerConfig, use_moe: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        # The router's gates over the k kept experts sum to 1, so an MoE of k experts of d_ff / k units
        # returns the *mean* of k half-width FFNs: half (1/k) of what the dense FFN of the same active
        # width returns (the sum of its k slices). Multiplying by k makes the two match (test_models.py:
        # an MoE whose experts are slices of a dense FFN, with equal gates, equals that FFN); without it
        # the small MoE Transformers trained 0.2 nats worse than dense (docs/benchmarks.md).
        self.ffn_scale = 1.0
        if use_moe:
            d_hidden = cfg.d_expert or max(1, cfg.d_ff // cfg.k)
            self.ffn = make_ffn(cfg.n_embd, d_hidden, cfg.num_experts, cfg.k, cfg.activation, cfg.bias,
                                cfg.moe_kwargs)
            self.ffn_scale = float(cfg.k if cfg.moe_output_scale is None else cfg.moe_output_scale)
        else:
            self.ffn = make_ffn(cfg.n_embd, cfg.d_ff, 0, 1, cfg.activation, cfg.bias, None)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        h = self.ffn(self.ln2(x))
        if self.ffn_scale != 1.0:
            h = h * self.ffn_scale
        return x + self.drop(h)


class TransformerLM(LanguageModel):
    """GPT-style decoder; blocks i with (n_layer - 1 - i) % moe_every == 0 get an MoE FFN."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.softmax_samples = cfg.softmax_samples
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos_emb == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        every = max(1, cfg.moe_every)
        self.blocks = nn.ModuleList(
            Block(cfg, use_moe=cfg.num_experts > 0 and (cfg.n_layer - 1 - i) % every == 0)
            for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embedding
        self.init_weights()
        for name, p in self.named_parameters():  # GPT-2: scaled init of the residual projections
            if name.endswith(("attn.proj.weight", "ffn.proj.weight", "ffn.experts.w2")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final normalised hidden states [B, T, n_embd]."""
        T = idx.size(1)
        if self.block_size < T:
            raise ValueError(f"sequence length {T} exceeds the context {self.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def embedding_params(self) -> int:
        """Token + position embedding parameters."""
        return self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)

    def active_flops_per_token(self) -> int:
        """Forward FLOPs per token: active matmuls (2 per multiply-add) plus causal attention scores."""
        c = self.cfg
        d = c.n_embd
        flops = 0
        for block in self.blocks:
            flops += 2 * (3 * d * d + d * d)              # qkv + output projection
            flops += 2 * d * (c.block_size + 1)           # QK^T and AV over the mean causal context
            flops += int(block.ffn.active_flops_per_token())
        return flops + 2 * d * c.vocab_size               # output projection
