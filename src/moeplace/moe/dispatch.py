"""Sorting (token, expert) assignments by expert, capacity drops, and the gather/combine row moves.

Row moves are custom autograd functions whose backward is a gather too (each sorted row comes from exactly
one assignment), which avoids the serial scatter-add that autograd's generic index backward would run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from moeplace.moe.routing import Routing, count_per_expert


@dataclass
class Dispatch:
    """Assignments kept after capacity, sorted by expert (stable: router priority order within an expert)."""

    order: Tensor  # [N] positions into the Routing's assignment list, grouped by expert
    inverse: Tensor  # [A] sorted row of each assignment, or N where it was dropped
    token_index: Tensor  # [N] token of each sorted row
    gate: Tensor  # [N] gate of each sorted row
    tokens_per_expert: Tensor  # [E] int64 rows each expert computes (after drops)
    routed_per_expert: Tensor  # [E] int64 assignments routed to each expert (before drops)
    kept: Tensor  # [A] bool over the Routing's assignments: False where dropped for capacity
    num_dropped: Tensor  # scalar int64


def expert_capacity(capacity_factor: float, num_assignments: int, num_experts: int) -> int:
    """Slots per expert: ceil(capacity_factor · assignments / E)."""
    return math.ceil(capacity_factor * num_assignments / num_experts)


def sort_by_expert(routing: Routing, num_experts: int, capacity: int | None = None) -> Dispatch:
    """Group assignments by expert; with a capacity, keep each expert's first `capacity` in router order.

    Router order is rank-major for token-choice routers (every token's first choice before any second
    choice, then by token position), so overflow drops the lowest-priority assignments first.
    """
    expert = routing.expert_index
    A = expert.numel()
    sorted_expert, order = torch.sort(expert, stable=True)
    routed = count_per_expert(expert, num_experts)
    kept = torch.ones(A, dtype=torch.bool, device=expert.device)
    if capacity is not None:
        starts = torch.cumsum(routed, 0) - routed
        position = torch.arange(A, device=expert.device) - starts[sorted_expert]
        keep_sorted = position < capacity
        kept[order[~keep_sorted]] = False
        order = order[keep_sorted]
        per_expert = routed.clamp(max=capacity)
    else:
        per_expert = routed
    N = order.numel()
    inverse = torch.full((A,), N, dtype=torch.long, device=expert.device)
    inverse[order] = torch.arange(N, device=expert.device)
    return Dispatch(order, inverse, routing.token_index[order], routing.gate[order], per_expert, routed, kept,
                    A - per_expert.sum())


def _pad_row(x: Tensor, num_assignments: int) -> Tensor:
    """x with one zero row appended (the target of dropped assignments); x itself when none was dropped.

    Fewer sorted rows than assignments means some were dropped (a shape test: no device sync, no copy).
    """
    if x.shape[0] == num_assignments:
        return x
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


class GatherTokens(torch.autograd.Function):
    """x [T, d] -> x[token_index] [N, d] for rank-major [k, T] assignments; backward: k gathers, summed."""

    @staticmethod
    def forward(ctx, x: Tensor, token_index: Tensor, inverse: Tensor, ranks: int) -> Tensor:
        """Copy each kept assignment's token row into its sorted position."""
        ctx.save_for_backward(inverse)
        ctx.ranks = ranks
        return x.index_select(0, token_index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        """grad_x[t] = sum over ranks r of grad[inverse[r·T + t]] (zero for dropped assignments)."""
        (inverse,) = ctx.saved_tensors
        g = _pad_row(grad.contiguous(), inverse.numel()).index_select(0, inverse)
        return g.view(ctx.ranks, -1, grad.shape[1]).sum(0), None, None, None


class UnsortRows(torch.autograd.Function):
    """y_sorted [N, d] -> y per assignment [A, d] in router order (zero rows where dropped)."""

    @staticmethod
    def forward(ctx, y_sorted: Tensor, inverse: Tensor, order: Tensor) -> Tensor:
        """Gather each assignment's row from its sorted position."""
        ctx.save_for_backward(order)
        return _pad_row(y_sorted, inverse.numel()).index_select(0, inverse)

    @staticmethod
    def backward(ctx, grad: Tensor):
        """Each sorted row came from exactly one assignment: gather its gradient back."""
        (order,) = ctx.saved_tensors
        return grad.index_select(0, order), None, None


def gather_tokens(x: Tensor, routing: Routing, dispatch: Dispatch) -> Tensor:
    """Rows of x for the kept assignments, sorted by expert: [N, d]."""
    if routing.ranks is not None:
        return GatherTokens.apply(x, dispatch.token_index, dispatch.inverse, routing.ranks)
    return x.index_select(0, dispatch.token_index)


def combine(y_sorted: Tensor, routing: Routing, dispatch: Dispatch) -> Tensor:
    """out[t] = sum over t's kept assignments of gate · expert output: [T, d]."""
    T, d = routing.num_tokens, y_sorted.shape[1]
    if routing.ranks is not None:
        y = UnsortRows.apply(y_sorted, dispatch.inverse, dispatch.order).view(routing.ranks, T, d)
        gate = routing.gate.to(y.dtype).view(routing.ranks, T, 1)
        return (y * gate).sum(0)
    weighted = y_sorted * dispatch.gate.to(y_sorted.dtype)[:, None]
    return y_sorted.new_zeros(T, d).index_add_(0, dispatch.token_index, weighted)
