"""Routers: map tokens [T, d] to (token, expert, gate) assignments plus their auxiliary balance losses.

Every router returns a `Routing` of flat assignments. Token-choice routers list them rank-major (all
first choices in token order, then all second choices, ...), which is the priority order the layer uses
when a capacity factor forces it to drop overflow assignments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _promote(t: Tensor) -> Tensor:
    """Router arithmetic runs in float32 at least (float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation, population variance / mean^2 (0 for one value or zero mean)."""
    x = _promote(x)
    if x.numel() <= 1:
        return x.new_zeros(())
    mean = x.mean()
    return ((x - mean) ** 2).mean() / (mean**2 + 1e-10)


def coefficient_of_variation(x: Tensor) -> Tensor:
    """Population std / mean, the square root of `cv_squared` (the load statistics the layers report)."""
    return cv_squared(x).sqrt()


def z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2 (keeps router logits small)."""
    return torch.logsumexp(_promote(logits), dim=-1).pow(2).mean()


def normal_cdf(z: Tensor) -> Tensor:
    """Standard normal CDF Phi(z)."""
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


@dataclass
class Routing:
    """Flat assignments of tokens to experts, with the router's auxiliary loss and balance measures."""

    token_index: Tensor  # [A] int64, which token
    expert_index: Tensor  # [A] int64, which expert
    gate: Tensor  # [A] float32, the gate value G(x)_e multiplying that expert's output
    aux_loss: Tensor  # scalar, balance loss(es) + z-loss, already weighted
    importance: Tensor  # [E] sum over the batch of each expert's gate values
    load: Tensor  # [E] what the load loss balanced: routed counts, or the smooth estimate in training
    num_tokens: int
    capacity_applies: bool = True  # False when the router already bounds each expert's load
    ranks: int | None = None  # k when assignments are exactly [k, T] rank-major (token a % T); else None


def from_topk(indices: Tensor, gates: Tensor, aux_loss: Tensor, load: Tensor, num_experts: int) -> Routing:
    """Build a Routing from top-k indices/gates [T, k], listing assignments rank-major."""
    T, k = indices.shape
    token_index = torch.arange(T, device=indices.device).repeat(k)
    expert_index = indices.t().reshape(-1)
    gate = gates.t().reshape(-1)
    importance = gates.new_zeros(num_experts).index_add_(0, expert_index, gate.detach())
    return Routing(token_index, expert_index, gate, aux_loss, importance, load, T, ranks=k)


def count_per_expert(expert_index: Tensor, num_experts: int) -> Tensor:
    """[E] int64 number of entries equal to each expert id.

    On CUDA an index_add into zeros: bincount there reads the largest id back to the host first, a
    synchronisation per call that stalls the queue of kernels.
    """
    if expert_index.is_cuda:
        counts = torch.zeros(num_experts, dtype=torch.long, device=expert_index.device)
        return counts.index_add_(0, expert_index, torch.ones_like(expert_index))
    return torch.bincount(expert_index, minlength=num_experts)


def _counts(indices: Tensor, num_experts: int) -> Tensor:
    """Number of assignments per expert, as float."""
    return count_per_expert(indices.reshape(-1), num_experts).float()


def smooth_load(clean: Tensor, noise_std: Tensor, top_vals: Tensor, idx: Tensor) -> Tensor:
    """P(x, i) [T, E] of the paper's appendix A: probability that expert i is in the top k of H(x) when only
    its own noise is resampled. top_vals [T, k+1] are the largest noisy logits, idx [T, k] the kept experts.
    """
    k = idx.shape[-1]
    selected = torch.zeros_like(clean, dtype=torch.bool).scatter_(-1, idx, True)
    # k-th largest of H excluding i: the (k+1)-th overall if i is among the top k, else the k-th.
    threshold = torch.where(selected, top_vals[..., k : k + 1], top_vals[..., k - 1 : k])
    return normal_cdf((clean - threshold) / noise_std)


class Router(nn.Module):
    """Base: holds the gating weight Wg [d, E] (the paper's x·Wg) and the optional z-loss weight."""

    def __init__(self, d_model: int, num_experts: int, k: int, z_loss_weight: float = 0.0,
                 zero_init: bool = False) -> None:
        super().__init__()
        self.d_model, self.num_experts, self.k = d_model, num_experts, k
        self.z_loss_weight = z_loss_weight
        self.w_gate = nn.Parameter(torch.zeros(d_model, num_experts))
        if not zero_init:
            nn.init.normal_(self.w_gate, std=d_model**-0.5)

    def logits(self, x: Tensor) -> Tensor:
        """Clean router logits x·Wg, [T, E], in float32 at least (bfloat16 inputs are promoted)."""
        return _promote(x @ self.w_gate)

    def _z(self, logits: Tensor) -> Tensor:
        return self.z_loss_weight * z_loss(logits) if self.z_loss_weight else logits.new_zeros(())

    def flops_per_token(self) -> int:
        """Forward FLOPs of the gating matmul(s) per token."""
        return 2 * self.d_model * self.num_experts


class NoisyTopKRouter(Router):
    """Shazeer et al. 2017, eqs. 3-5 and appendix A: noisy top-k gating with importance and load losses.

    H(x)_i = (x·Wg)_i + N(0,1)·Softplus((x·Wnoise)_i) (noise in training only);
    G(x) = Softmax(KeepTopK(H(x), k)).
    Loss = w_importance·CV(Importance)^2 + w_load·CV(Load)^2 where Importance_i = sum_x G(x)_i and, in
    training with noise, Load_i = sum_x P(x, i) with
    P(x, i) = Phi(((x·Wg)_i - kth_excluding(H(x), k, i)) / Softplus((x·Wnoise)_i)); without noise (or when
    k = E) Load_i is the number of tokens sent to expert i. Wg and Wnoise start at zero as in the paper;
    gate_init_std > 0 draws Wg from N(0, gate_init_std^2 / d) instead, so the clean logits, not the noise
    (std Softplus(0) = 0.69 at the start), decide the first routings. input_norm=True feeds the router
    x / RMS(x) (per token, no gain): logits and noise then keep the scale of Wg and Wnoise whatever the scale
    of the stream the MoE reads (an LSTM's residual stream starts at the embeddings' RMS, ~0.02).
    """

    def __init__(self, d_model: int, num_experts: int, k: int, w_importance: float = 0.1,
                 w_load: float = 0.1, noisy: bool = True, z_loss_weight: float = 0.0,
                 gate_init_std: float = 0.0, input_norm: bool = False) -> None:
        super().__init__(d_model, num_experts, k, z_loss_weight, zero_init=True)
        self.input_norm = input_norm
        if gate_init_std > 0:
            nn.init.normal_(self.w_gate, std=gate_init_std * d_model**-0.5)
        self.w_noise = nn.Parameter(torch.zeros(d_model, num_experts))
        self.w_importance, self.w_load, self.noisy = w_importance, w_load, noisy

    def sample_noise(self, shape: torch.Size, like: Tensor) -> Tensor:
        """StandardNormal() samples for H(x); a separate method so tests can fix the noise."""
        return torch.randn(shape, device=like.device, dtype=like.dtype)

    def noisy_logits(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(clean x·Wg, noise std Softplus(x·Wnoise), H(x)); H equals the clean logits outside training."""
        if self.input_norm:
            x = x * torch.rsqrt(_promote(x).pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype)
        clean = self.logits(x)
        noise_std = F.softplus(_promote(x @ self.w_noise))
        noise_std = noise_std.clamp_min(torch.finfo(noise_std.dtype).tiny)
        if self.training and self.noisy:
            h = clean + self.sample_noise(clean.shape, clean) * noise_std
        else:
            h = clean
        return clean, noise_std, h

    def forward(self, x: Tensor) -> Routing:
        """Route each token to its top-k noisy logits with softmax gates over the kept k."""
        E, k = self.num_experts, self.k
        clean, noise_std, h = self.noisy_logits(x)
        top_vals, top_idx = h.topk(min(k + 1, E), dim=-1)
        idx = top_idx[:, :k]
        gates = torch.softmax(top_vals[:, :k], dim=-1)
        importance = gates.new_zeros(E).index_add_(0, idx.reshape(-1), gates.reshape(-1))
        if self.training and self.noisy and k < E:
            load = smooth_load(clean, noise_std, top_vals, idx).sum(0)
        else:
            load = _counts(idx, E)
        aux = self.w_importance * cv_squared(importance) + self.w_load * cv_squared(load) + self._z(clean)
        return from_topk(idx, gates, aux, load.detach(), E)

    def flops_per_token(self) -> int:
        """Two gating matmuls (Wg and Wnoise) per token."""
        return 2 * super().flops_per_token()


class SoftmaxTopKRouter(Router):
    """GShard / Mixtral: softmax over all experts, keep the top k, optionally renormalise over the kept k.

    Optional Switch-style multiplicative jitter U(1-eps, 1+eps) on the router input in training. Balance
    loss alpha·E·sum_i f_i·P_i, f_i the fraction of assignments routed to i, P_i its mean router probability.
    """

    def __init__(self, d_model: int, num_experts: int, k: int, aux_loss_weight: float = 0.01,
                 normalize: bool = True, jitter: float = 0.0, z_loss_weight: float = 0.0) -> None:
        super().__init__(d_model, num_experts, k, z_loss_weight)
        self.aux_loss_weight, self.normalize, self.jitter = aux_loss_weight, normalize, jitter

    def forward(self, x: Tensor) -> Routing:
        """Pick the k most probable experts per token."""
        E, k = self.num_experts, self.k
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        logits = self.logits(x)
        probs = torch.softmax(logits, dim=-1)
        gates, idx = probs.topk(k, dim=-1)
        if self.normalize:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        counts = _counts(idx, E)
        aux = self._z(logits)
        if self.aux_loss_weight:
            f = counts / counts.sum()
            aux = aux + self.aux_loss_weight * E * (f * probs.mean(0)).sum()
        return from_topk(idx, gates, aux, counts, E)


class SwitchRouter(SoftmaxTopKRouter):
    """Switch Transformer top-1: gate = router probability of the argmax expert; loss alpha·N·sum f_i·P_i."""

    def __init__(self, d_model: int, num_experts: int, k: int = 1, aux_loss_weight: float = 0.01,
                 jitter: float = 0.0, z_loss_weight: float = 0.0) -> None:
        if k != 1:
            raise ValueError(f"k must be 1 for the switch router, got {k}")
        super().__init__(d_model, num_experts, 1, aux_loss_weight, normalize=False, jitter=jitter,
                         z_loss_weight=z_loss_weight)


class ExpertChoiceRouter(Router):
    """Zhou et al. 2022: each expert takes its top-C tokens by softmax score, C = ceil(cf·T·k / E).

    k is the average number of experts per token; a token may get none or many. Loads are equal by
    construction (no balance loss). Not causal: an expert's choice looks at the whole batch.
    """

    def __init__(self, d_model: int, num_experts: int, k: int, capacity_factor: float = 1.0,
                 z_loss_weight: float = 0.0) -> None:
        super().__init__(d_model, num_experts, k, z_loss_weight)
        self.capacity_factor = capacity_factor

    def capacity(self, num_tokens: int) -> int:
        """Tokens each expert takes: ceil(capacity_factor · T · k / E), at most T."""
        c = math.ceil(self.capacity_factor * num_tokens * self.k / self.num_experts)
        return max(1, min(num_tokens, c))

    def forward(self, x: Tensor) -> Routing:
        """Every expert picks its C highest-scoring tokens."""
        E, T = self.num_experts, x.shape[0]
        logits = self.logits(x)
        probs = torch.softmax(logits, dim=-1)
        C = self.capacity(T)
        vals, tok = probs.t().topk(C, dim=-1)  # [E, C]
        expert_index = torch.arange(E, device=x.device).repeat_interleave(C)
        importance = vals.detach().sum(-1)
        load = torch.full((E,), float(C), device=x.device)
        return Routing(tok.reshape(-1), expert_index, vals.reshape(-1), self._z(logits), importance, load,
                       T, capacity_applies=False)


class BiasBalancedRouter(Router):
    """DeepSeek-V3 auxiliary-loss-free balancing: sigmoid affinities s = sigmoid(x·Wg), experts chosen by
    top-k of s + b, gates = s over the chosen experts normalised to sum 1. The bias b is used for selection
    only and, after each training forward, moves b_i += gamma·sign(mean load - load_i).
    """

    def __init__(self, d_model: int, num_experts: int, k: int, bias_update_speed: float = 1e-3,
                 z_loss_weight: float = 0.0) -> None:
        super().__init__(d_model, num_experts, k, z_loss_weight)
        self.bias_update_speed = bias_update_speed
        self.register_buffer("expert_bias", torch.zeros(num_experts))

    def forward(self, x: Tensor) -> Routing:
        """Select by biased affinity, gate by unbiased normalised affinity, then nudge the bias."""
        E, k = self.num_experts, self.k
        logits = self.logits(x)
        scores = torch.sigmoid(logits)
        idx = (scores.detach() + self.expert_bias).topk(k, dim=-1).indices
        s = scores.gather(1, idx)
        gates = s / s.sum(dim=-1, keepdim=True)
        counts = _counts(idx, E)
        if self.training and self.bias_update_speed:
            with torch.no_grad():
                self.expert_bias += self.bias_update_speed * torch.sign(counts.mean() - counts)
        return from_topk(idx, gates, self._z(logits), counts, E)


ROUTERS = {
    "noisy_topk": NoisyTopKRouter,
    "softmax_topk": SoftmaxTopKRouter,
    "switch": SwitchRouter,
    "expert_choice": ExpertChoiceRouter,
    "bias_balanced": BiasBalancedRouter,
}
