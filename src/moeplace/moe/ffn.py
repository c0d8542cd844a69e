"""The dense two-layer feed-forward network d -> h -> d: an MoE's shared experts and its dense counterpart."""

from __future__ import annotations

from torch import Tensor, nn

from moeplace.moe.experts import ACTIVATIONS


class FeedForward(nn.Module):
    """proj(act(fc(x))) with the experts' activation table; `bias=False` leaves out both biases."""

    def __init__(self, d_model: int, d_hidden: int, activation: str = "relu", bias: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.fc = nn.Linear(d_model, d_hidden, bias=bias)
        self.proj = nn.Linear(d_hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(ACTIVATIONS[self.activation](self.fc(x)))

    def active_flops_per_token(self) -> int:
        """Forward FLOPs per token (2 per multiply-add; biases and activation ignored)."""
        fc, proj = self.fc, self.proj
        return 2 * (fc.in_features * fc.out_features + proj.in_features * proj.out_features)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"
