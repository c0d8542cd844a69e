"""HierarchicalMoE: two-level noisy top-k gating over a groups of b experts (Shazeer et al. 2017, appendix B).

y = sum_i G_primary(x)_i · sum_j G_i(x)_j · E_{i,j}(x). The secondary gates of a group are computed only
for the tokens the primary gate sends there (a grouped matmul over the group-sorted tokens). The balance
loss is w_importance·CV(Importance_H)^2 + w_load·CV(Load_H)^2 over all a·b experts, with
Importance_H(X)_{i,j} = sum_x G_primary(x)_i · G_i(x)_j and
Load_H(X)_{i,j} = Load_primary(X)_i · Load_i(X^(i))_j / |X^(i)|, X^(i) the tokens sent to group i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moeplace.moe.dispatch import UnsortRows, combine, expert_capacity, gather_tokens, sort_by_expert
from moeplace.moe.experts import Experts, grouped_linear
from moeplace.moe.layer import MoEModule
from moeplace.moe.routing import (
    NoisyTopKRouter,
    Routing,
    _promote,
    cv_squared,
    from_topk,
    smooth_load,
    z_loss,
)


class HierarchicalMoE(MoEModule):
    """Two-level MoE: a primary noisy top-k gate picks k_groups of num_groups groups, each group's own noisy
    top-k gate picks k_experts of its experts_per_group experts; [..., d_model] -> [..., d_model].
    """

    def __init__(self, d_model: int, d_hidden: int, num_groups: int, experts_per_group: int, k_groups: int,
                 k_experts: int, w_importance: float = 0.1, w_load: float = 0.1, noisy: bool = True,
                 capacity_factor: float | None = None, activation: str = "relu", bias: bool = True,
                 z_loss_weight: float = 0.0, check_finite: bool = True) -> None:
        super().__init__()
        for name, v in (("d_model", d_model), ("d_hidden", d_hidden), ("num_groups", num_groups),
                        ("experts_per_group", experts_per_group), ("k_groups", k_groups),
                        ("k_experts", k_experts)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if k_groups > num_groups:
            raise ValueError(f"k_groups must be <= num_groups, got {k_groups} > {num_groups}")
        if k_experts > experts_per_group:
            raise ValueError(f"k_experts must be <= experts_per_group, got {k_experts} > {experts_per_group}")
        if capacity_factor is not None and not capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0 or None, got {capacity_factor}")
        self.d_model, self.d_hidden = d_model, d_hidden
        self.num_groups, self.experts_per_group = num_groups, experts_per_group
        self.k_groups, self.k_experts = k_groups, k_experts
        self.num_experts, self.k = num_groups * experts_per_group, k_groups * k_experts
        self.w_importance, self.w_load, self.noisy = w_importance, w_load, noisy
        self.capacity_factor, self.z_loss_weight = capacity_factor, z_loss_weight
        self.check_finite = check_finite
        self.primary = NoisyTopKRouter(d_model, num_groups, k_groups, 0.0, 0.0, noisy)
        # Secondary gating weights of every group, zero-initialised like the paper's gates.
        self.w_gate = nn.Parameter(torch.zeros(num_groups, d_model, experts_per_group))
        self.w_noise = nn.Parameter(torch.zeros(num_groups, d_model, experts_per_group))
        self.experts = Experts(self.num_experts, d_model, d_hidden, activation, bias)

    def sample_noise(self, shape: torch.Size, like: Tensor) -> Tensor:
        """StandardNormal() samples for the secondary gates (a method so tests can fix the noise)."""
        return torch.randn(shape, device=like.device, dtype=like.dtype)

    def route(self, x: Tensor) -> Routing:
        """Two-level gating of x [T, d] into a Routing over the a·b experts (expert index i·b + j)."""
        T, a, b, ka, kb = x.shape[0], self.num_groups, self.experts_per_group, self.k_groups, self.k_experts
        noisy = self.training and self.noisy
        clean1, std1, h1 = self.primary.noisy_logits(x)
        top1, i1 = h1.topk(min(ka + 1, a), dim=-1)
        idx1, g1 = i1[:, :ka], torch.softmax(top1[:, :ka], dim=-1)
        group_count = torch.bincount(idx1.reshape(-1), minlength=a)
        load1 = smooth_load(clean1, std1, top1, idx1).sum(0) if noisy and ka < a else group_count.to(g1.dtype)
        # Secondary logits only for (token, chosen group) pairs: sort them by group, one matmul per group.
        r1 = from_topk(idx1, g1, g1.new_zeros(()), load1, a)
        d1 = sort_by_expert(r1, a)
        xs = gather_tokens(x, r1, d1)
        counts = d1.tokens_per_expert.tolist()

        def per_pair(w: Tensor) -> Tensor:  # [T, ka, b] in rank-major pair order
            y = UnsortRows.apply(grouped_linear(xs, w, None, counts), d1.inverse, d1.order)
            return _promote(y).view(ka, T, b).transpose(0, 1)

        clean2 = per_pair(self.w_gate)
        std2 = F.softplus(per_pair(self.w_noise))
        std2 = std2.clamp_min(torch.finfo(std2.dtype).tiny)
        h2 = clean2 + self.sample_noise(clean2.shape, clean2) * std2 if noisy else clean2
        top2, i2 = h2.topk(min(kb + 1, b), dim=-1)
        idx2, g2 = i2[..., :kb], torch.softmax(top2[..., :kb], dim=-1)  # [T, ka, kb]
        if noisy and kb < b:
            p2 = smooth_load(clean2, std2, top2, idx2)  # [T, ka, b]
        else:
            p2 = torch.zeros_like(clean2).scatter_(-1, idx2, 1.0)
        load_in_group = p2.new_zeros(a, b).index_add_(0, idx1.reshape(-1), p2.reshape(-1, b))
        load_h = load1[:, None] * load_in_group / group_count.clamp_min(1)[:, None].to(p2.dtype)
        expert = (idx1[..., None] * b + idx2).reshape(T, ka * kb)
        gate = (g1[..., None] * g2).reshape(T, ka * kb)
        importance_h = gate.new_zeros(a * b).index_add_(0, expert.reshape(-1), gate.reshape(-1))
        aux = self.w_importance * cv_squared(importance_h) + self.w_load * cv_squared(load_h.reshape(-1))
        if self.z_loss_weight:
            aux = aux + self.z_loss_weight * (z_loss(clean1) + z_loss(clean2))
        self.importance_h, self.load_h = importance_h.detach(), load_h.detach()
        return from_topk(expert, gate, aux, load_h.detach().reshape(-1), a * b)

    def forward(self, x: Tensor) -> Tensor:
        """Two-level routing, then the same sorted grouped dispatch as MoE; sets aux_loss and stats."""
        self._check_input(x)
        shape = x.shape
        x = x.reshape(-1, self.d_model)
        routing = self.route(x)
        capacity = None
        if self.capacity_factor is not None:
            capacity = expert_capacity(self.capacity_factor, routing.expert_index.numel(), self.num_experts)
        d = sort_by_expert(routing, self.num_experts, capacity)
        out = combine(self.experts(gather_tokens(x, routing, d), d.tokens_per_expert), routing, d)
        self.aux_loss = routing.aux_loss
        self.last_routing, self.last_dispatch = routing, d
        self._record(routing, d)
        return out.reshape(shape)

    def active_flops_per_token(self) -> int:
        """Forward FLOPs per token: primary gate, k_groups secondary gates, k experts (2 per multiply-add)."""
        gating = 4 * self.d_model * (self.num_groups + self.k_groups * self.experts_per_group)
        return gating + self.k * self.experts.flops_per_token()
