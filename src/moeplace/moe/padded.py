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
    position = torch.arange(A, device=dev) - bounds[sorted_expert]  # rank in its expert's queue
    slot_sorted = torch.where(position < C, sorted_expert * C + position, E * C)  # E·C: the trash slot
    slot = torch.empty_like(slot_sorted).scatter_(0, order, slot_sorted)
    # slot -> assignment; dropped assignments all write the trash entry E·C, which is cut off
    source = torch.full((E * C + 1,), A, dtype=torch.long, device=dev)
    source = source.scatter_(0, slot_sorted, order)[: E * C]
    routed = bounds.diff()
    per_expert = routed.clamp(max=C)
    return SlotDispatch(slot, source, C, per_expert, routed, slot < E * C, A - per_expert.sum())


def _with_zero_row(x: Tensor) -> Tensor:
    """x [n, d] with a zero row appended: the row that empty slots and dropped assignments read."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


class PermuteRows(torch.autograd.Function):
    """out = [src; 0][forward_index]; backward: grad_src = [grad; 0][backward_index] (a gather too).

    For a partial one-to-one map between rows (slots -> assignments): both directions are gathers, so
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


class TokensToSlots(torch.autograd.Function):
    """x [T, d] -> [x; 0][token_of_slot] [E·C, d]; backward: each assignment's slot gradient summed per
    token, k gathers for rank-major [k, T] assignments (no scatter-add), an index_add otherwise."""

    @staticmethod
    def forward(ctx, x: Tensor, token_of_slot: Tensor, slot: Tensor, token_index: Tensor,
                ranks: int | None) -> Tensor:
        """Copy each slot's token row (empty slots read the zero row)."""
        ctx.save_for_backward(slot, token_index)
        ctx.ranks, ctx.num_tokens = ranks, x.shape[0]
        return _with_zero_row(x).index_select(0, token_of_slot)

    @staticmethod
    def backward(ctx, grad: Tensor):
        """grad_x[t] = sum over t's kept assignments a of grad[slot[a]] (dropped ones read a zero row)."""
        slot, token_index = ctx.saved_tensors
        per_assignment = _with_zero_row(grad.contiguous()).index_select(0, slot)
        if ctx.ranks is not None:
            grad_x = per_assignment.view(ctx.ranks, ctx.num_tokens, -1).sum(0)
        else:
            grad_x = grad.new_zeros(ctx.num_tokens, grad.shape[1]).index_add_(0, token_index, per_assignment)
        return grad_x, None, None, None, None


def padded_moe(x: Tensor, routing: Routing, dispatch: SlotDispatch, experts: Experts) -> Tensor:
    """out[t] = sum over t's kept assignments of gate · expert(x[t]), through the slot layout: [T, d]."""
    E, C, d = experts.num_experts, dispatch.capacity, x.shape[1]
    T = routing.num_tokens
    no_token = torch.full((1,), T, dtype=torch.long, device=x.device)  # empty slots read row T (zeros)
    token_of_slot = torch.cat([routing.token_index, no_token]).index_select(0, dispatch.source)
    xe = TokensToSlots.apply(x, token_of_slot, dispatch.slot, routing.token_index, routing.ranks)
    ye = padded_expert_ffn(experts, xe.view(E, C, d)).view(E * C, d)
    y = PermuteRows.apply(ye, dispatch.slot, dispatch.source)  # [A, d], zero rows where dropped
    gate = routing.gate.to(y.dtype)
    if routing.ranks is not None:  # rank-major [k, T]: assignment a is token a % T
        return (y.view(routing.ranks, T, d) * gate.view(routing.ranks, T, 1)).sum(0)
    return y.new_zeros(T, d).index_add_(0, routing.token_index, y * gate[:, None])
