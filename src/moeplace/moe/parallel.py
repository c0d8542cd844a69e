"""Expert parallelism over torch.distributed: each rank holds a contiguous block of E/world experts.

Applied to a built model, in place (torchtitan style; the model code knows nothing of it):

    apply_expert_parallel(model)          # every MoE layer's `experts` -> ExpertParallel
    loss = model(x_local, y_local)[1]     # this rank's rows; tokens travel to their experts' ranks
    loss.backward()
    sync_gradients(model)                 # data-parallel mean of the other grads, experts / world
    clip_grad_norm_(model, 1.0); opt.step()

Tokens are exchanged with `all_to_all_single` (split sizes first, then the payload), the same code
on gloo (CPU) and NCCL (CUDA). `save_sharded` / `load_sharded` write and read a checkpoint as one
shard per rank plus a JSON index, loadable at any world size (experts are re-cut on load): they
live in `moeplace.moe.sharded`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.func import functional_call

ProcessGroup = dist.ProcessGroup | None


def world_and_rank(group: ProcessGroup = None) -> tuple[int, int]:
    """(world size, rank) of `group`; (1, 0) when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


class _AllToAll(torch.autograd.Function):
    """all_to_all_single whose backward sends the gradients back along the reverse route."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, output_splits: list[int], input_splits: list[int],
                group: ProcessGroup) -> torch.Tensor:
        ctx.output_splits, ctx.input_splits, ctx.group = output_splits, input_splits, group
        x = x.contiguous()
        out = x.new_empty((sum(output_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x, output_splits, input_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_out = grad_out.contiguous()
        grad_in = grad_out.new_empty((sum(ctx.input_splits), *grad_out.shape[1:]))
        dist.all_to_all_single(grad_in, grad_out, ctx.input_splits, ctx.output_splits, group=ctx.group)
        return grad_in, None, None, None


def all_to_all(x: torch.Tensor, output_splits: list[int], input_splits: list[int],
               group: ProcessGroup = None) -> torch.Tensor:
    """Send rows input_splits[j] of x to rank j, receive output_splits[j] rows from rank j (autograd)."""
    return _AllToAll.apply(x, list(output_splits), list(input_splits), group)


def _num_experts(experts: nn.Module) -> int:
    """Number of experts of a stacked expert bank (first dimension of its w1)."""
    w1 = getattr(experts, "w1", None)
    if not isinstance(w1, torch.Tensor) or w1.dim() != 3:
        raise ValueError(f"experts must hold stacked weights w1 [E, d, h]; got {type(experts).__name__}")
    return int(w1.shape[0])


class ExpertParallel(nn.Module):
    """This rank's experts [expert_start, expert_end) of a bank of E; forward exchanges tokens.

    Same contract as the bank it replaces: `(x_sorted [N, d], tokens_per_expert [E]) -> [N, d]`
    on this rank's tokens sorted by (global) expert. Parameter names are those of the bank, with
    the expert dimension cut to E / world, so state-dict keys stay the same at any world size.
    """

    def __init__(self, experts: nn.Module, group: ProcessGroup = None):
        super().__init__()
        world, rank = world_and_rank(group)
        num_experts = _num_experts(experts)
        if num_experts % world:
            raise ValueError(f"num_experts={num_experts} is not divisible by the world size {world}")
        self.group, self.world_size, self.rank = group, world, rank
        self.num_experts = num_experts
        self.num_local_experts = num_experts // world
        self.expert_start = rank * self.num_local_experts
        self.expert_end = self.expert_start + self.num_local_experts
        # The local bank: a copy of the bank's module with every expert-stacked tensor sliced
        # (the memo makes the copy share the full tensors instead of duplicating them first).
        # Held outside the module tree; its forward runs on this module's parameters.
        local = copy.deepcopy(experts, memo={id(p): p for p in experts.parameters()})
        for name, p in list(local.named_parameters(recurse=False)):
            shard = p.detach()[self.expert_start:self.expert_end].clone() if p.shape[:1] == (
                num_experts,) else p.detach().clone()
            param = nn.Parameter(shard, requires_grad=p.requires_grad)
            setattr(local, name, param)
            self.register_parameter(name, param)
        if any(True for _ in local.children()) or any(True for _ in local.buffers()):
            raise ValueError("ExpertParallel supports banks of plain stacked parameters only")
        if hasattr(local, "num_experts"):
            local.num_experts = self.num_local_experts
        self.__dict__["_local"] = local
        self.tokens_received = 0  # rows this rank's experts computed in the last forward

    def __getattr__(self, name: str) -> Any:
        # Anything else (d_model, activation, flops_per_token, ...) comes from the wrapped bank.
        try:
            return super().__getattr__(name)
        except AttributeError:
            local = self.__dict__.get("_local")
            if local is None:
                raise
            return getattr(local, name)

    def extra_repr(self) -> str:
        return (f"experts {self.expert_start}..{self.expert_end - 1} of {self.num_experts} "
                f"(rank {self.rank} of {self.world_size})")

    def forward(self, x: torch.Tensor, tokens_per_expert: torch.Tensor) -> torch.Tensor:
        params = dict(self.named_parameters())
        if self.world_size == 1:
            self.tokens_received = int(x.shape[0])
            return functional_call(self._local, params, (x, tokens_per_expert))
        world, n_local = self.world_size, self.num_local_experts
        counts = tokens_per_expert.to(torch.int64).reshape(world, n_local).contiguous()
        # 1) split sizes: row s of recv_counts = tokens rank s sends to each of my local experts.
        recv_counts = torch.empty_like(counts)
        dist.all_to_all_single(recv_counts, counts, group=self.group)
        sizes = torch.stack([counts.sum(1), recv_counts.sum(1)]).tolist()
        send_splits, recv_splits = sizes[0], sizes[1]
        self.tokens_received = sum(recv_splits)
        # 2) payload: tokens arrive grouped by source rank, then by local expert.
        x_recv = all_to_all(x, recv_splits, send_splits, self.group)
        # 3) regroup by local expert (stable: each source's order is kept), compute, undo.
        local_ids = torch.arange(n_local, device=x.device).repeat(world)
        local_ids = torch.repeat_interleave(local_ids, recv_counts.flatten())
        order = torch.argsort(local_ids, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        y_local = functional_call(self._local, params, (x_recv[order], recv_counts.sum(0)))
        # 4) results go back along the reverse route.
        return all_to_all(y_local[inverse], send_splits, recv_splits, self.group)


def _expert_banks(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """(qualified name, parent, bank) for every `experts` child holding stacked weights."""
    for name, module in model.named_modules():
        bank = module._modules.get("experts") if isinstance(module, nn.Module) else None
        if bank is None:
            continue
        if isinstance(bank, ExpertParallel) or getattr(bank, "w1", None) is not None and bank.w1.dim() == 3:
            yield (f"{name}.experts" if name else "experts"), module, bank


def apply_expert_parallel(model: nn.Module, group: ProcessGroup = None) -> list[str]:
    """In place: replace every MoE layer's `experts` by this rank's ExpertParallel block.

    `model` may be a whole model or one MoE layer. Every rank must build the same model first
    (same seed); each then keeps its own contiguous block of the experts. Returns the names of
    the replaced banks.
    """
    replaced = []
    for qualname, parent, bank in list(_expert_banks(model)):
        if isinstance(bank, ExpertParallel):
            continue
        parent.experts = ExpertParallel(bank, group)
        replaced.append(qualname)
    if not replaced:
        raise ValueError("model has no MoE layer with a stacked `experts` bank to parallelise")
    return replaced


def expert_shards(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """{parameter name: (num_experts, expert_start, expert_end)} of every expert-stacked parameter."""
    out = {}
    for qualname, _, bank in _expert_banks(model):
        if isinstance(bank, ExpertParallel):
            e, a, b = bank.num_experts, bank.expert_start, bank.expert_end
        else:
            e = _num_experts(bank)
            a, b = 0, e
        for pname, p in bank.named_parameters(recurse=False):
            if p.shape[:1] == (b - a,):
                out[f"{qualname}.{pname}"] = (e, a, b)
    return out


def expert_param_names(model: nn.Module) -> set[str]:
    """Names of the parameters that hold experts (sharded along dimension 0 under parallelism)."""
    return set(expert_shards(model))


def _split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(data-parallel parameters, expert parameters), each once, in a fixed order."""
    experts = expert_param_names(model)
    dense, sharded, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (sharded if name in experts else dense).append(p)
    return dense, sharded


@torch.no_grad()
def sync_gradients(model: nn.Module, group: ProcessGroup = None) -> None:
    """After backward: average data-parallel grads over ranks and divide expert grads by world.

    Each rank's loss is the mean over its own rows; expert grads already hold the sum over all
    ranks' tokens (the exchange's backward brought them home), so both end up equal to the
    grads of the single-process mean loss over the global batch. A grad that is None on some
    ranks but not others (an expert block that got no tokens) becomes zeros, as it would be in
    one process.
    """
    world, _ = world_and_rank(group)
    if world == 1:
        return
    dense, sharded = _split_params(model)
    params = dense + sharded
    device = params[0].device
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX, group=group)
    for p, flag in zip(params, has_grad.tolist()):
        if flag and p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in dense if p.grad is not None]
    if grads:
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, group=group)
        flat.div_(world)
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)
    for p in sharded:
        if p.grad is not None:
            p.grad.div_(world)


@torch.no_grad()
def clip_grad_norm_(model: nn.Module, max_norm: float, group: ProcessGroup = None) -> torch.Tensor:
    """Clip all grads by their global 2-norm (expert shards summed over ranks); return that norm."""
    dense, sharded = _split_params(model)
    dense_g = [p.grad for p in dense if p.grad is not None]
    sharded_g = [p.grad for p in sharded if p.grad is not None]
    device = (dense + sharded)[0].device
    zero = torch.zeros((), device=device)
    dense_sq = sum((g.float().pow(2).sum() for g in dense_g), zero)
    sharded_sq = sum((g.float().pow(2).sum() for g in sharded_g), zero.clone())
    world, _ = world_and_rank(group)
    if world > 1:
        dist.all_reduce(sharded_sq, group=group)
    total = (dense_sq + sharded_sq).sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in dense_g + sharded_g:
        g.mul_(coef.to(g.dtype))
    return total


@torch.no_grad()
def broadcast_parameters(model: nn.Module, group: ProcessGroup = None, src: int = 0) -> None:
    """Copy the data-parallel parameters and all buffers from rank `src` to every rank."""
    world, _ = world_and_rank(group)
    if world == 1:
        return
    experts = expert_param_names(model)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if name not in experts:
            dist.broadcast(t.data, src=src, group=group)
