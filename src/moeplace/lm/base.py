"""What every language model here shares: loss, parameter and FLOP counts, sampling, the dense FFN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moeplace.lm.softmax import sampled_softmax_loss
from moeplace.moe.ffn import FeedForward

__all__ = ["FeedForward", "LanguageModel", "is_moe", "make_ffn"]


def make_ffn(d_model: int, d_hidden: int, num_experts: int, k: int, activation: str, bias: bool,
             moe_kwargs: dict | None) -> nn.Module:
    """A dense FFN (num_experts == 0) or an MoE layer whose experts each have d_hidden units.

    moe_kwargs with `num_groups` (and optionally `k_groups`, default 2) builds the paper's two-level
    hierarchical MoE instead: num_groups groups of num_experts / num_groups experts, k_groups groups and
    k / k_groups experts in each per token (so k experts in all), noisy top-k gating at both levels.
    """
    if num_experts <= 0:
        return FeedForward(d_model, d_hidden, activation, bias)
    from moeplace.moe import HierarchicalMoE, MoE

    kw = dict(moe_kwargs or {})
    groups = kw.pop("num_groups", None)
    if groups is None:
        return MoE(d_model, d_hidden, num_experts, k, activation=activation, bias=bias, **kw)
    k_groups = kw.pop("k_groups", 2)
    if kw.pop("router", "noisy_topk") != "noisy_topk":
        raise ValueError("the hierarchical MoE (num_groups) uses the paper's noisy_topk router only")
    if not isinstance(groups, int) or groups < 1 or num_experts % groups:
        raise ValueError(f"num_groups={groups!r} must divide num_experts={num_experts}")
    if not isinstance(k_groups, int) or k_groups < 1 or k % k_groups:
        raise ValueError(f"k_groups={k_groups!r} must divide k={k}")
    return HierarchicalMoE(d_model, d_hidden, groups, num_experts // groups, k_groups, k // k_groups,
                           activation=activation, bias=bias, **kw)


def is_moe(module: nn.Module) -> bool:
    """True for an MoE layer (what aux_loss and moe_stats look for)."""
    from moeplace.moe import MoEModule

    return isinstance(module, MoEModule)


class LanguageModel(nn.Module):
    """Base class: subclasses define `hidden(idx) -> [B, T, d]`, `lm_head` and `block_size`."""

    block_size: int
    lm_head: nn.Linear
    softmax_samples: int = 0  # > 0 and < vocab: sampled softmax in training (lm/softmax.py)
    proposal: torch.Tensor | None = None  # its sampling distribution over the vocabulary (None: uniform)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Final hidden states [B, T, d] for token ids idx [B, T]."""
        raise NotImplementedError

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits [B, T, V] and, when targets are given, the mean cross-entropy (without aux losses).

        In training with targets and `softmax_samples` below the vocabulary size, the loss is the sampled
        softmax's and the logits are None (they are never computed); in eval mode it is always exact.
        """
        h = self.hidden(idx)
        vocab = self.lm_head.out_features
        if targets is not None and self.training and 0 < self.softmax_samples < vocab:
            q = self.proposal if self.proposal is not None else h.new_full((vocab,), 1.0 / vocab)
            loss = sampled_softmax_loss(h.reshape(-1, h.size(-1)), self.lm_head.weight, self.lm_head.bias,
                                        targets.reshape(-1), q.to(h.device), self.softmax_samples)
            return None, loss
        logits = self.lm_head(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self, exclude_embedding: bool = False) -> int:
        """Number of parameters (tied weights counted once)."""
        seen: set[int] = set()
        n = 0
        for p in self.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        if exclude_embedding:
            n -= self.embedding_params()
        return n

    def embedding_params(self) -> int:  # pragma: no cover - overridden
        """Parameters of the token (and position) embeddings."""
        return 0

    def init_weights(self, std: float = 0.02) -> None:
        """Normal(0, std) linear/embedding weights and zero biases; MoE experts get the same init as the
        dense FFN they replace (so dense and MoE models start alike); routers keep their own init."""
        skip: set[int] = set()
        for m in self.modules():
            if is_moe(m):
                skip.update(id(s) for s in m.modules())
                for name in ("w1", "w2"):
                    nn.init.normal_(getattr(m.experts, name), mean=0.0, std=std)
                for name in ("b1", "b2"):
                    if getattr(m.experts, name, None) is not None:
                        nn.init.zeros_(getattr(m.experts, name))
        for m in self.modules():
            if id(m) in skip:
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample max_new_tokens continuations of idx [B, T] (context cropped to block_size)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {temperature}")
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            ctx = idx[:, -self.block_size:]
            logits, _ = self(ctx)
            logits = logits[:, -1, :]
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.size(-1):
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        self.train(was_training)
        return idx
