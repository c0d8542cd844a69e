"""What every language model here shares: loss, parameter and FLOP counts, sampling, the dense FFN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def activation_module(name: str) -> nn.Module:
    """The activation called `name` (relu, gelu, silu)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, not {name!r}")
    return _ACTIVATIONS[name]()


class FeedForward(nn.Module):
    """A dense two-layer feed-forward network d -> h -> d: the dense counterpart of one MoE layer."""

    def __init__(self, d_model: int, d_hidden: int, activation: str = "relu", bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(d_model, d_hidden, bias=bias)
        self.act = activation_module(activation)
        self.proj = nn.Linear(d_hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))

    def active_flops_per_token(self) -> int:
        """Forward FLOPs per token (2 per multiply-add)."""
        fc, proj = self.fc, self.proj
        return 2 * (fc.in_features * fc.out_features + proj.in_features * proj.out_features)


def make_ffn(d_model: int, d_hidden: int, num_experts: int, k: int, activation: str, bias: bool,
             moe_kwargs: dict | None) -> nn.Module:
    """A dense FFN (num_experts == 0) or an MoE layer whose experts each have d_hidden units."""
    if num_experts <= 0:
        return FeedForward(d_model, d_hidden, activation, bias)
    from moeplace.moe import MoE

    return MoE(d_model, d_hidden, num_experts, k, activation=activation, bias=bias, **(moe_kwargs or {}))


def is_moe(module: nn.Module) -> bool:
    """True for an MoE layer (what aux_loss and moe_stats look for)."""
    from moeplace.moe import MoEModule

    return isinstance(module, MoEModule)


class LanguageModel(nn.Module):
    """Base class: subclasses define `hidden(idx) -> [B, T, d]`, `lm_head` and `block_size`."""

    block_size: int
    lm_head: nn.Linear

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Final hidden states [B, T, d] for token ids idx [B, T]."""
        raise NotImplementedError

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, V] and, when targets are given, the mean cross-entropy (without aux losses)."""
        logits = self.lm_head(self.hidden(idx))
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
