"""Static-shape dispatch: every expert gets `capacity` slots, computed as one batched matmul per matrix.

Each kept assignment goes to a slot `expert · C + position` of an [E · C] layout (position = its rank in
its expert's queue, router order); the overflow goes to a trash slot that is never computed. The tokens
are gathered into [E, C, d], each expert matrix is one `baddbmm` over [E, C, ·] (float32, bfloat16 or
any dtype, any device), and each assignment reads its output row back. All shapes depend only on
(T, k, E, C), never on the routing: no host synchronisation, no data-dependent shapes, so the whole
layer traces under `torch.compile(fullgraph=True)` and CUDA graphs.

Empty slots are zero rows: they cost FLOPs (C · E rows against the kept assignments), the price of
static shapes; a capacity factor of 1.25 computes at most 1.25× the routed rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from moeplace.moe.experts import ACTIVATIONS, Experts
from moeplace.moe.routing import Routing


@dataclass
class SlotDispatch:
    """Where each assignment sits in the [E · C] slot layout (the padded counterpart of `Dispatch`)."""

    slot: Tensor  # [A] int64 slot of each assignment, E·C (the trash slot) where dropped
    source: Tensor  # [E·C] int64 assignment held by each slot, A (a zero row) where empty
    capacity: int  # C, slots per expert
    tokens_per_expert: Tensor  # [E] int64 rows each expert computes (after drops)
    routed_per_expert: Tensor  # [E] int64 assignments routed to each expert (before drops)
    kept: Tensor  # [A] bool: False where dropped for capacity
    num_dropped: Tensor  # scalar int64


def slot_by_expert(routing: Routing, num_experts: int, capacity: int) -> SlotDispatch:
    """Give each assignment its slot: the first `capacity` of each expert's queue in router order are kept.

    The same drops as `sort_by_expert(routing, E, capacity)` (first choices before second choices, then
    token order), found with one stable sort and no boolean indexing.
    """
    expert = routing.expert_index
    A, E, C = expert.numel(), num_experts, capacity
    dev = expert.device
    sorted_expert, order = torch.sort(expert, stable=True)
    bounds = torch.searchsorted(sorted_expert, torch.arange(E + 1, device=dev))  # expert e: [b_e, b_e+1)
    routed = bounds.diff()
    position_sorted = torch.arange(A, device=dev) - bounds[sorted_expert]
    position = torch.empty_like(position_sorted).scatter_(0, order, position_sorted)
    kept = position < C
    slot = torch.where(kept, expert * C + position, torch.full_like(expert, E * C))
    # slot -> assignment; dropped assignments all write the trash entry E·C, which is cut off
    source = torch.full((E * C + 1,), A, dtype=torch.long, device=dev)
    source = source.scatter(0, slot, torch.arange(A, device=dev))[: E * C]
    per_expert = routed.clamp(max=C)
    return SlotDispatch(slot, source, C, per_expert, routed, kept, A - per_expert.sum())


def _with_zero_row(x: Tensor) -> Tensor:
    """x [n, d] with a zero row appended: the row that empty slots and dropped assignments read."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


class PermuteRows(torch.autograd.Function):
    """out = [src; 0][forward_index]; backward: grad_src = [grad; 0][backward_index] (a gather too).

    For a partial one-to-one map between rows (slots <-> assignments): both directions are gathers, so
    backward needs no scatter-add.
    """

    @staticmethod
    def forward(ctx, src: Tensor, forward_index: Tensor, backward_index: Tensor) -> Tensor:
        """Gather rows of src (index src.shape[0] reads a zero row)."""
        ctx.save_for_backward(backward_index)
        return _with_zero_row(src).index_select(0, forward_index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        """Each source row went to at most one output row: gather its gradient back."""
        (backward_index,) = ctx.saved_tensors
        return _with_zero_row(grad.contiguous()).index_select(0, backward_index), None, None


def padded_expert_ffn(experts: Experts, xe: Tensor) -> Tensor:
    """All experts on their slots at once: [E, C, d] -> [E, C, d], one baddbmm per matrix."""
    ex = experts
    h = torch.bmm(xe, ex.w1) if ex.b1 is None else torch.baddbmm(ex.b1[:, None], xe, ex.w1)
    h = ACTIVATIONS[ex.activation](h)
    return torch.bmm(h, ex.w2) if ex.b2 is None else torch.baddbmm(ex.b2[:, None], h, ex.w2)


def padded_moe(x: Tensor, routing: Routing, dispatch: SlotDispatch, experts: Experts) -> Tensor:
    """out[t] = sum over t's kept assignments of gate · expert(x[t]), through the slot layout: [T, d]."""
    E, C, d = experts.num_experts, dispatch.capacity, x.shape[1]
    if routing.ranks is not None:  # rank-major [k, T]: assignment a is token a % T
        rows = x.repeat(routing.ranks, 1)
    else:
        rows = x.index_select(0, routing.token_index)
    xe = PermuteRows.apply(rows, dispatch.source, dispatch.slot).view(E, C, d)
    ye = padded_expert_ffn(experts, xe).view(E * C, d)
    y = PermuteRows.apply(ye, dispatch.slot, dispatch.source)  # [A, d], zero rows where dropped
    gate = routing.gate.to(y.dtype)
    if routing.ranks is not None:
        return (y.view(routing.ranks, -1, d) * gate.view(routing.ranks, -1, 1)).sum(0)
    return y.new_zeros(routing.num_tokens, d).index_add_(0, routing.token_index, y * gate[:, None])
