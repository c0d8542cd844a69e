"""The MoE layer: route, sort assignments by expert, run each expert on its contiguous segment, combine.

No one-hot [tokens, experts, capacity] tensors: dispatch memory is linear in the number of tokens.
With a static capacity (a capacity factor, or expert choice) on CUDA the layer uses the slot layout of
`moe.padded` instead: one batched matmul per expert matrix and no host synchronisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from moeplace.errors import NonFiniteError
from moeplace.moe.dispatch import Dispatch, combine, expert_capacity, gather_tokens, sort_by_expert
from moeplace.moe.experts import ACTIVATIONS, Experts
from moeplace.moe.ffn import FeedForward
from moeplace.moe.padded import SlotDispatch, padded_moe, slot_by_expert
from moeplace.moe.routing import (
    ROUTERS,
    ExpertChoiceRouter,
    Router,
    Routing,
    coefficient_of_variation,
    count_per_expert,
)

DISPATCHES = ("auto", "sorted", "padded")


class MoEModule(nn.Module):
    """Common behaviour of MoE layers: input checks, `aux_loss`, `stats`; found by `aux_loss(model)`."""

    d_model: int

    def __init__(self) -> None:
        super().__init__()
        self.aux_loss: Tensor = torch.zeros(())
        self._stats: dict[str, Tensor] = {}
        self.check_finite = True

    def _check_input(self, x: Tensor) -> None:
        if not torch.is_floating_point(x):
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if x.dim() < 1 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape [..., d_model={self.d_model}], got {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError(f"x has no tokens (shape {tuple(x.shape)})")
        # One fast reduction; the full element-wise check only when the sum is not finite (or overflowed).
        if self.check_finite and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            raise NonFiniteError("x contains NaN or infinite values")

    def _record(self, routing: Routing, dispatch: Dispatch | SlotDispatch,
                importance: Tensor | None = None) -> None:
        routed = dispatch.routed_per_expert.float()
        if routing.capacity_applies:
            dropped = dispatch.num_dropped.float() / max(routing.token_index.numel(), 1)
        else:  # expert choice: the share of tokens that no expert took
            taken = torch.zeros(routing.num_tokens, dtype=torch.bool, device=routed.device)
            taken[routing.token_index] = True
            dropped = 1.0 - taken.float().mean()
        self._stats = {
            "tokens_per_expert": dispatch.tokens_per_expert.detach(),
            "cv_importance": coefficient_of_variation(
                routing.importance if importance is None else importance).detach(),
            "cv_load": coefficient_of_variation(routed),
            "max_over_mean_load": routed.max() / routed.mean().clamp_min(1e-10),
            "dropped_fraction": torch.as_tensor(dropped),
        }

    @property
    def stats(self) -> dict[str, Any]:
        """Statistics of the last forward as Python values (empty before the first forward)."""
        s = self._stats
        if not s:
            return {}
        return {"tokens_per_expert": s["tokens_per_expert"].tolist(),
                **{k: float(v) for k, v in s.items() if k != "tokens_per_expert"}}


class MoE(MoEModule):
    """Sparsely-gated Mixture-of-Experts: [..., d_model] -> [..., d_model], k of E experts per token.

    router: "noisy_topk" (Shazeer et al. 2017), "softmax_topk", "switch", "expert_choice", "bias_balanced",
    or a Router instance. capacity_factor=None is dropless; otherwise each expert computes at most
    ceil(cf · T·k / E) assignments and the overflow is dropped (its share of the output is zero).
    num_shared_experts adds always-on experts; expert_granularity=m splits every expert into m experts of
    hidden d_hidden/m and activates k·m of them (DeepSeekMoE fine-grained experts).
    dispatch: "sorted" (contiguous per-expert segments, grouped GEMM or per-expert loop), "padded" (the
    slot layout of `moe.padded`; dropless token choice then gets C = T slots per expert), or "auto":
    sorted on CPU (measured faster there); on CUDA padded, except dropless with the fused grouped GEMM
    (bfloat16 on Hopper/Blackwell), which stays sorted. See `_slots_per_expert` for C.
    """

    def __init__(self, d_model: int, d_hidden: int, num_experts: int, k: int,
                 router: str | Router = "noisy_topk", capacity_factor: float | None = None,
                 activation: str = "relu", num_shared_experts: int = 0,
                 expert_granularity: int = 1, z_loss_weight: float = 0.0, bias: bool = True,
                 check_finite: bool = True, dispatch: str = "auto", **router_options: Any) -> None:
        super().__init__()
        for name, v in (("d_model", d_model), ("d_hidden", d_hidden), ("num_experts", num_experts), ("k", k),
                        ("expert_granularity", expert_granularity)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if num_shared_experts < 0:
            raise ValueError(f"num_shared_experts must be >= 0, got {num_shared_experts}")
        if k > num_experts:
            raise ValueError(f"k must be <= num_experts, got k={k} > num_experts={num_experts}")
        if d_hidden % expert_granularity:
            raise ValueError(f"expert_granularity={expert_granularity} must divide d_hidden={d_hidden}")
        if capacity_factor is not None and not capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0 or None, got {capacity_factor}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if dispatch not in DISPATCHES:
            raise ValueError(f"dispatch must be one of {list(DISPATCHES)}, got {dispatch!r}")
        self.dispatch = dispatch
        m = expert_granularity
        self.d_model, self.d_hidden = d_model, d_hidden // m
        self.num_experts, self.k = num_experts * m, k * m
        self.capacity_factor, self.check_finite = capacity_factor, check_finite
        if isinstance(router, Router):
            self.router = router
        elif router in ROUTERS:
            if router == "expert_choice" and capacity_factor is not None:
                router_options.setdefault("capacity_factor", capacity_factor)
            self.router = ROUTERS[router](d_model, self.num_experts, self.k, z_loss_weight=z_loss_weight,
                                          **router_options)
        else:
            raise ValueError(f"router must be one of {sorted(ROUTERS)} or a Router, got {router!r}")
        self.experts = Experts(self.num_experts, d_model, self.d_hidden, activation, bias)
        self.num_shared_experts = num_shared_experts
        self.shared = (FeedForward(d_model, num_shared_experts * self.d_hidden, activation, bias)
                       if num_shared_experts else None)

    def forward(self, x: Tensor) -> Tensor:
        """Route, dispatch sorted by expert, compute, combine with the gates; sets aux_loss and stats."""
        self._check_input(x)
        shape = x.shape
        x = x.reshape(-1, self.d_model)
        routing = self.router(x)
        capacity = None
        if self.capacity_factor is not None and routing.capacity_applies:
            capacity = expert_capacity(self.capacity_factor, routing.expert_index.numel(), self.num_experts)
        slots = self._slots_per_expert(x, routing, capacity)
        if slots is not None:
            d = slot_by_expert(routing, self.num_experts, slots)
            out = padded_moe(x, routing, d, self.experts)
        else:
            d = sort_by_expert(routing, self.num_experts, capacity)
            y = self.experts(gather_tokens(x, routing, d), d.tokens_per_expert)
            out = combine(y, routing, d)
        if self.shared is not None:
            out = out + self.shared(x)
        self.aux_loss = routing.aux_loss
        self.last_routing, self.last_dispatch = routing, d
        self._record(routing, d)
        return out.reshape(shape)

    def _slots_per_expert(self, x: Tensor, routing: Routing, capacity: int | None) -> int | None:
        """Slots per expert C when this forward takes the padded path (see `dispatch`), else None.

        Static C: the capacity, or expert choice's C. Forced "padded" without one: T slots (top-k routes
        a token to an expert at most once). "auto" on CUDA without one, where the fused grouped GEMM does
        not apply (float32, older GPUs): the largest load rounded up to 16, read back once per forward
        instead of the per-expert loop's read-back and E launches per matmul.
        """
        if self.dispatch == "sorted" or type(self.experts) is not Experts:  # e.g. expert parallelism
            return None
        if isinstance(self.router, ExpertChoiceRouter):
            static = routing.expert_index.numel() // self.num_experts  # every expert takes exactly C
        else:
            static = capacity
        if static is not None:
            return static if self.dispatch == "padded" or x.is_cuda else None
        if self.dispatch == "padded":
            return routing.num_tokens if routing.ranks is not None else routing.expert_index.numel()
        if x.is_cuda and not self.experts._use_grouped_mm(x):
            largest = int(count_per_expert(routing.expert_index, self.num_experts).max())  # one host read
            return max(16, -(-largest // 16) * 16)
        return None

    def active_flops_per_token(self) -> int:
        """Forward FLOPs per token: gating + k experts + shared experts (2 per multiply-add)."""
        per_expert = self.experts.flops_per_token()
        return self.router.flops_per_token() + (self.k + self.num_shared_experts) * per_expert

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_hidden={self.d_hidden}, num_experts={self.num_experts}, "
                f"k={self.k}, capacity_factor={self.capacity_factor}, shared={self.num_shared_experts}")


def aux_loss(model: nn.Module) -> Tensor:
    """Sum of the auxiliary losses of every MoE layer in `model` from its last forward (add to the loss)."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MoEModule)]
    if not losses:
        return torch.zeros(())
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss.to(total.device)
    return total


def moe_stats(model: nn.Module) -> list[dict[str, Any]]:
    """The stats of every MoE layer in `model`, in module order, each with its qualified name."""
    return [{"name": name, **m.stats} for name, m in model.named_modules() if isinstance(m, MoEModule)]
