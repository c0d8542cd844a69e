"""A device-placement policy whose weights depend neither on the graph's size nor on the cluster's
device count, so one pre-trained policy serves any model on any cluster (Placeto / GDP style).

A graph encoder (mean-aggregation message passing, weights shared across nodes) embeds the op
groups once per problem. The groups are then placed in topological order; at each step a scoring
head (weights shared across devices) gives every device a logit from the group's embedding, the
graph's mean embedding, the device's static features (FLOP/s, memory, CPU or not, mean bandwidth
and latency of its links) and the step's physical features of putting the group there: its compute
time on that device, the time to receive its inputs from where its producers already are (bytes
over that link's bandwidth plus latency), the compute already placed on the device, its earliest
finish time there under list scheduling, and the device's memory use after it (a device it would
overflow is masked out unless all would); `transfer_features` computes them. It is a sequence policy
for `moeplace.rl.SequenceREINFORCE`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from moeplace.errors import CheckpointError, NonFiniteError
from moeplace.place.device.transfer_features import (
    DEVICE_DIM,
    DEVICE_FEATURES,
    MEMORY_AFTER,
    NODE_DIM,
    NODE_FEATURES,
    STEP_DIM,
    STEP_FEATURES,
    DeviceContext,
    StepState,
    context_of,
    remember,
    teacher_features,
)

__all__ = ["FORMAT", "DeviceContext", "TransferPlacer", "context_of", "load_policy", "save_policy",
           "packaged_policy", "policy_file", "num_parameters"]

FORMAT = "moeplace.device_transfer_policy/1"
MASKED_LOGIT = -1e9


class TransferPlacer(nn.Module):
    """Graph encoder + per-device scoring head; `sample_with_logp` / `score` as SequenceREINFORCE needs."""

    def __init__(self, hidden: int = 64, rounds: int = 3) -> None:
        super().__init__()
        self.hidden, self.rounds = hidden, rounds
        self.embed = nn.Sequential(nn.Linear(NODE_DIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                                nn.Linear(hidden, hidden)) for _ in range(rounds))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(rounds))
        self.node_in = nn.Linear(2 * hidden, hidden)
        self.device_in = nn.Linear(DEVICE_DIM, hidden, bias=False)
        self.step_in = nn.Linear(STEP_DIM, hidden, bias=False)
        self.out = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def encode(self, ctx: DeviceContext) -> Tensor:
        """Per-step node part of the head's first layer `[G, H]` (embedding and graph mean)."""
        h = self.embed(ctx.nodes)
        for mlp, norm in zip(self.mlps, self.norms):
            h = norm(h + mlp(torch.cat([h, ctx.adj @ h], dim=-1)))
        return self.node_in(torch.cat([h, h.mean(0, keepdim=True).expand_as(h)], dim=-1))

    def _logits(self, node: Tensor, dev: Tensor, step: Tensor, prior: Tensor | None = None,
                std_cap: float | None = None) -> Tensor:
        """node [..., H], dev [D, H], step [..., D, STEP_DIM] -> log-softmax over devices [..., D];
        `prior` [..., D] (the context's incumbent logits, if any) is added to the head's logits.

        Devices the group's parameters (with gradients and optimizer state) would overflow are
        masked out, unless every device would overflow: the policy never chooses an avoidable OOM.
        With `std_cap`, a step's logits whose standard deviation over the devices that fit exceeds it
        are scaled down to it: on a graph unlike its training graphs the head's logits can differ by
        hundreds (every sample the same placement, no gradient to learn from); the cap keeps the
        greedy choice and leaves samples and gradients to work with."""
        z = node[..., None, :] + dev + self.step_in(step)
        fits = step[..., MEMORY_AFTER] <= 1.0
        fits = fits | ~fits.any(-1, keepdim=True)
        raw = self.out(z)[..., 0]
        if std_cap is not None:
            f = fits.float()
            n = f.sum(-1, keepdim=True)
            mean = (raw * f).sum(-1, keepdim=True) / n
            var = ((raw - mean) ** 2 * f).sum(-1, keepdim=True) / n
            std = (var + 1e-12).sqrt()  # finite gradient where every device that fits ties (or one fits)
            raw = raw * (std_cap / std).clamp(max=1.0)
        if prior is not None:
            raw = raw + prior
        return torch.log_softmax(raw.masked_fill(~fits, MASKED_LOGIT), dim=-1)

    @torch.no_grad()
    def sample_with_logp(self, ctx: DeviceContext, batch: int, greedy: bool = False,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Placements `[B, G]` (group index order) sampled step by step, and their log-probabilities."""
        node, dev = self.encode(ctx), self.device_in(ctx.devices)
        G = ctx.compute.shape[0]
        state = StepState(ctx, batch)
        acts = torch.empty(batch, G, dtype=torch.long)
        logp = torch.zeros(batch)
        rows = torch.arange(batch)
        feats = []
        for t in range(G):
            feats.append(state.features(t))
            lp = self._logits(node[t], dev, feats[-1], None if ctx.prior is None else ctx.prior[t],
                              ctx.logit_std_cap)
            if not bool(torch.isfinite(lp[:, 0]).all()):
                raise NonFiniteError("the transfer policy's device probabilities are NaN")
            a = lp.argmax(1) if greedy else torch.multinomial(lp.exp(), 1, generator=generator)[:, 0]
            logp += lp[rows, a]
            acts[:, t] = a
            state.commit(t, a)
        out = torch.empty_like(acts)
        out[:, ctx.order] = acts
        if ctx.cache is not None:  # only then are the features kept (stacking them costs a copy)
            remember(ctx, out, torch.stack(feats, dim=1))
        return out, logp

    @staticmethod
    def teacher_features(ctx: DeviceContext, actions: Tensor) -> Tensor:
        """STEP_FEATURES `[B, G, D, STEP_DIM]` at every step (topological order) of placements `actions`."""
        return teacher_features(ctx, actions)

    def score(self, ctx: DeviceContext, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probability `[B]` and entropy `[B]` of placements `actions` `[B, G]`, teacher forced."""
        node, dev = self.encode(ctx), self.device_in(ctx.devices)
        a = actions[:, ctx.order]
        lp = self._logits(node, dev, self.teacher_features(ctx, actions), ctx.prior,
                           ctx.logit_std_cap)  # [B, G, D]
        logp = lp.gather(2, a[..., None])[..., 0].sum(1)
        ent = -(lp.exp() * lp).sum(dim=(1, 2))
        return logp, ent


def policy_file(path: str | Path) -> Path:
    """The safetensors file of a policy given as a folder (holding policy.safetensors) or the file."""
    p = Path(path)
    return p / "policy.safetensors" if p.is_dir() else p


def save_policy(path: str | Path, policy: TransferPlacer, meta: dict | None = None) -> Path:
    """Write the policy (weights + what features it reads) as safetensors + JSON."""
    from moeplace.checkpoint import save_checkpoint

    state = {"format": FORMAT, "node_features": list(NODE_FEATURES), "device_features": list(DEVICE_FEATURES),
             "step_features": list(STEP_FEATURES), "hidden": policy.hidden, "rounds": policy.rounds,
             "meta": meta or {}, "policy": dict(policy.state_dict())}
    return save_checkpoint(path, state)


def load_policy(path: str | Path, flag: str = "--policy") -> TransferPlacer:
    """A policy written by `save_policy`; CheckpointError if missing, corrupt or for other features."""
    from moeplace.checkpoint import load_checkpoint, load_model_state

    f = policy_file(path)
    try:
        state = load_checkpoint(f)
    except CheckpointError as e:
        raise CheckpointError(f"{flag} {e}") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{flag} {f}: not a device transfer policy (format {state.get('format')!r}, "
                              f"expected {FORMAT!r})")
    for key, want in (("node_features", NODE_FEATURES), ("device_features", DEVICE_FEATURES),
                      ("step_features", STEP_FEATURES)):
        if list(state.get(key) or []) != list(want):
            raise CheckpointError(f"{flag} {f}: policy for other {key.replace('_', ' ')} "
                                  f"({state.get(key)}; this version reads {list(want)})")
    try:
        policy = TransferPlacer(int(state["hidden"]), int(state["rounds"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{flag} {f}: bad policy settings ({e})") from None
    load_model_state(policy, state["policy"], source=f"{flag} {f}")
    return policy


def packaged_policy() -> Path:
    """The pre-trained policy shipped in the package (moeplace/data/device_policy)."""
    return Path(__file__).resolve().parents[2] / "data" / "device_policy" / "policy.safetensors"


def num_parameters(policy: nn.Module) -> int:
    """Number of trainable weights."""
    return sum(p.numel() for p in policy.parameters())

