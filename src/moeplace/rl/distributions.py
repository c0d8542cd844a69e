"""A categorical distribution over actions with a legality mask: illegal actions get probability zero.

Placement policies choose among thousands of slots of which only some are legal at each step, so
masking is part of the distribution (not of the environment): sampling never returns an illegal
action, log-probabilities are normalised over the legal actions only, and the entropy is the
entropy over the legal actions.
"""

from __future__ import annotations

import torch

from moeplace.errors import NonFiniteError


class MaskedCategorical:
    """Categorical distribution from logits `[B, A]` and an optional bool mask `[B, A]` (True = legal)."""

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if logits.dim() != 2:
            raise ValueError(f"logits: expected shape [B, A], got {tuple(logits.shape)}")
        logits = logits.float()
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.bool, device=logits.device)
            if mask.shape != logits.shape:
                raise ValueError(f"mask: shape {tuple(mask.shape)} does not match logits "
                                 f"{tuple(logits.shape)}")
            if not bool(mask.any(dim=-1).all()):
                raise ValueError("mask: some row has no legal action")
            # A large negative finite number (not -inf) keeps gradients and products finite.
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        self.mask = mask
        self.logits = logits - logits.logsumexp(dim=-1, keepdim=True)  # normalised log-probs
        self.probs = self.logits.exp()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one action per row `[B]` (int64); never an illegal one. NonFiniteError when the logits
        hold NaN (a diverged policy): no action can be drawn from them."""
        if not bool(torch.isfinite(self.probs).all()):
            raise NonFiniteError("the policy's action probabilities are NaN")
        return torch.multinomial(self.probs, 1, generator=generator).squeeze(-1)

    @property
    def mode(self) -> torch.Tensor:
        """The most probable legal action per row `[B]` (the greedy action)."""
        return self.logits.argmax(dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability `[B]` of the given actions `[B]`."""
        return self.logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        """Entropy `[B]` over the legal actions (illegal ones contribute exactly zero)."""
        plogp = self.probs * self.logits
        if self.mask is not None:
            plogp = torch.where(self.mask, plogp, torch.zeros_like(plogp))
        return -plogp.sum(dim=-1)

    def kl(self, other: MaskedCategorical) -> torch.Tensor:
        """KL(self || other) `[B]` = sum_a p(a) (log p(a) - log q(a)) over self's legal actions."""
        terms = self.probs * (self.logits - other.logits)
        if self.mask is not None:
            terms = torch.where(self.mask, terms, torch.zeros_like(terms))
        return terms.sum(dim=-1)
