"""Independent references for the MoE tests: per-expert FFNs and gate matrices written out by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expert_outputs(layer, x: torch.Tensor) -> torch.Tensor:
    """[E, T, d]: every expert run on every token, one expert at a time (ReLU FFN with biases)."""
    ex = layer.experts
    outs = []
    for e in range(ex.num_experts):
        h = F.relu(x @ ex.w1[e] + ex.b1[e])
        outs.append(h @ ex.w2[e] + ex.b2[e])
    return torch.stack(outs)


def dense_moe(layer, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """sum_i G(x)_i · E_i(x) with every expert run on every token; gates [T, E]."""
    return torch.einsum("te,etd->td", gates, expert_outputs(layer, x))


def keep_top_k_softmax(h: torch.Tensor, k: int) -> torch.Tensor:
    """The paper's Softmax(KeepTopK(h, k)): -inf outside the top k, then softmax over experts."""
    kth = h.sort(dim=-1, descending=True).values[:, k - 1 : k]
    return torch.softmax(torch.where(h >= kth, h, torch.full_like(h, float("-inf"))), dim=-1)


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean [T, E] mask of each row's k largest scores."""
    kth = scores.sort(dim=-1, descending=True).values[:, k - 1 : k]
    return scores >= kth
