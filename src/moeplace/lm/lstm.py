"""The paper's MoE-LSTM language model (Shazeer et al. 2017, section 5 and appendix C).

embedding -> LSTM -> MoE (all timesteps of the batch routed together) -> LSTM -> softmax, with
residual connections around every layer except the embedding and the softmax, and dropout on
each layer's output except the embedding's. With num_experts = 0 the MoE becomes a dense
feed-forward network of the same active compute (the paper's computationally matched baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from moeplace.lm.base import LanguageModel, make_ffn


@dataclass
class LSTMConfig:
    """Sizes of a (MoE-)LSTM language model; the paper uses d_model 512 and experts of 1024 hidden units."""

    vocab_size: int = 65
    block_size: int = 64            # training context (truncated back-propagation length)
    d_model: int = 128              # embedding size = LSTM units = MoE input/output size
    d_ff: int = 256                 # dense FFN hidden units; an MoE's active hidden units are k * d_expert
    dropout: float = 0.0
    activation: str = "relu"
    num_experts: int = 0            # 0 = dense FFN
    k: int = 2
    d_expert: int | None = None     # hidden units of one expert; None = d_ff // k (same active compute)
    moe_kwargs: dict = field(default_factory=dict)  # MoE options; num_groups (+ k_groups): hierarchical MoE
    softmax_samples: int = 0        # training output layer: sampled softmax over this many words (0 = full)
    moe_output_scale: float | None = None  # MoE output multiplier; None = k (as in the Transformer's Block)
    ffn_norm: bool = False          # LayerNorm on the FFN/MoE input (pre-norm, as the Transformer's ln2)
    family: str = "lstm"


class LSTMLM(LanguageModel):
    """Embedding, LSTM, MoE (or dense FFN), LSTM, softmax, each middle layer residual."""

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.softmax_samples = cfg.softmax_samples
        d = cfg.d_model
        self.embedding = nn.Embedding(cfg.vocab_size, d)
        self.lstm1 = nn.LSTM(d, d, batch_first=True)
        d_hidden = (cfg.d_expert or max(1, cfg.d_ff // cfg.k)) if cfg.num_experts > 0 else cfg.d_ff
        self.ffn = make_ffn(d, d_hidden, cfg.num_experts, cfg.k, cfg.activation, True, cfg.moe_kwargs)
        # Gates over the k experts sum to 1: scaling by k makes k experts of d_ff / k units return what the
        # dense FFN of d_ff units returns (the sum of its slices), as TransformerConfig.moe_output_scale does.
        self.ffn_scale = 1.0
        if cfg.num_experts > 0:
            self.ffn_scale = float(cfg.k if cfg.moe_output_scale is None else cfg.moe_output_scale)
        # Optional pre-norm: the router's logits x·Wg then have the scale of Wg, not of the residual stream
        # (RMS 0.02 at the start, under the router's noise std 0.69). Off by default: on the word-level Bible
        # it made the router decisive but the models overfit sooner (docs/benchmarks.md).
        self.ffn_norm = nn.LayerNorm(d) if cfg.ffn_norm else nn.Identity()
        self.lstm2 = nn.LSTM(d, d, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=True)
        self.init_weights()
        for lstm in (self.lstm1, self.lstm2):  # PyTorch's own LSTM init, forget-gate bias 1
            for name, p in lstm.named_parameters():
                if name.startswith("bias_ih"):
                    nn.init.zeros_(p)
                    p.data[d: 2 * d] = 1.0
                elif name.startswith("bias_hh"):
                    nn.init.zeros_(p)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T, d_model] after the second LSTM's residual."""
        x = self.embedding(idx)
        x = x + self.drop(self.lstm1(x)[0])
        h = self.ffn(self.ffn_norm(x))  # the MoE sees every timestep of the batch at once: [B, T, d]
        x = x + self.drop(h * self.ffn_scale if self.ffn_scale != 1.0 else h)
        return x + self.drop(self.lstm2(x)[0])

    def embedding_params(self) -> int:
        """Token embedding parameters."""
        return self.embedding.weight.numel()

    def active_flops_per_token(self) -> int:
        """Forward FLOPs per token: two LSTM layers (4 gates, input + recurrent), the FFN/MoE, the softmax."""
        d = self.cfg.d_model
        lstm = 2 * 4 * (d * d + d * d)
        return 2 * lstm + int(self.ffn.active_flops_per_token()) + 2 * d * self.cfg.vocab_size
