"""A device-placement policy whose weights depend neither on the graph's size nor on the cluster's
device count, so one pre-trained policy serves any model on any cluster (Placeto / GDP style).

A graph encoder (mean-aggregation message passing, weights shared across nodes) embeds the op
groups once per problem. The groups are then placed in topological order; at each step a scoring
head (weights shared across devices) gives every device a logit from the group's embedding, the
graph's mean embedding, the device's static features (FLOP/s, memory, CPU or not, mean bandwidth
and latency of its links) and the step's physical features of putting the group there: its compute
time on that device, the time to receive its inputs from where its producers already are (bytes
over that link's bandwidth plus latency), the compute already placed on the device, and the
device's memory use after it (a device it would overflow is masked out unless all would). It is a
sequence policy for `moeplace.rl.SequenceREINFORCE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from moeplace.errors import CheckpointError, NonFiniteError
from moeplace.place.device.problem import DevicePlacementProblem

FORMAT = "moeplace.device_transfer_policy/1"
NODE_FEATURES = ("log_fwd_flops", "log_bwd_flops", "log_out_bytes", "log_param_bytes", "log_ops",
                 "topo_position")
DEVICE_FEATURES = ("log_flops", "log_memory", "is_cpu", "flops_vs_max", "memory_vs_max",
                   "log_mean_bandwidth", "log_mean_latency")
STEP_FEATURES = ("compute", "comm_in", "load_before", "load_after", "load_after_vs_mean", "memory_after")
NODE_DIM, DEVICE_DIM, STEP_DIM = len(NODE_FEATURES), len(DEVICE_FEATURES), len(STEP_FEATURES)
MEMORY_AFTER = STEP_FEATURES.index("memory_after")
MASKED_LOGIT = -1e9


@dataclass
class DeviceContext:
    """The static tensors of one (graph, cluster) problem, groups in topological order."""

    order: Tensor  # [G] group index placed at step t
    nodes: Tensor  # [G, NODE_DIM]
    adj: Tensor  # [G, G] row-normalised undirected adjacency
    bytes_in: Tensor  # [G, G] bytes_in[t, u]: bytes group t receives from group u (u < t)
    sends: Tensor  # [G, G] 1 where bytes_in > 0
    compute: Tensor  # [G, D] compute time of group t on device d, in units of the mean group's
    params: Tensor  # [G] parameter + gradient + optimizer bytes of group t
    memory: Tensor  # [D] device memory (bytes)
    inv_bw: Tensor  # [D, D] seconds per byte between devices (0 on the diagonal), in time units
    latency: Tensor  # [D, D] link latency (0 on the diagonal), in time units
    devices: Tensor  # [D, DEVICE_DIM]
    num_devices: int


def device_features(problem: DevicePlacementProblem) -> np.ndarray:
    """Static per-device features `[D, DEVICE_DIM]` on absolute scales (comparable across clusters)."""
    c = problem.cluster
    f, m = c.array("flops"), c.array("memory")
    cpu = np.array([d.kind == "cpu" for d in c.devices], dtype=float)
    d = c.num_devices
    off = ~np.eye(d, dtype=bool)
    bw = np.log10(np.where(off, c.bandwidth, 1.0)).sum(1) / max(d - 1, 1)
    lat = np.log10(np.where(off, np.maximum(c.latency, 1e-9), 1.0)).sum(1) / max(d - 1, 1)
    cols = [np.log10(f) / 13.0, np.log10(m) / 11.0, cpu, f / f.max(), m / m.max(), bw / 11.0, -lat / 6.0]
    return np.stack(cols, axis=1).astype(np.float32)


def context_of(problem: DevicePlacementProblem) -> DeviceContext:
    """The policy's view of a device-placement problem."""
    g, sim, cl = problem.graph, problem.sim, problem.cluster
    G, D = g.num_groups, cl.num_devices
    order = np.argsort(g.group_first_op(), kind="stable")
    pos = np.empty(G, np.int64)
    pos[order] = np.arange(G)
    work = np.zeros((G, D))
    np.add.at(work, g.group, sim.fwd_time + sim.bwd_time)
    unit = max(float(work.min(axis=1).sum()) / G, 1e-12)  # mean group's time on its fastest device
    # bytes between groups: each op's output counted once per consumer group other than its own
    src, dst = g.edges
    gs, gd = pos[g.group[src]], pos[g.group[dst]]
    cross = gs != gd
    pairs = np.unique(np.stack([src[cross], gd[cross]]), axis=1) if cross.any() else np.zeros((2, 0), int)
    bytes_in = np.zeros((G, G))
    np.add.at(bytes_in, (pairs[1], pos[g.group[pairs[0]]]), g.out_bytes[pairs[0]])
    bytes_in = np.tril(bytes_in, -1)  # producers come first in topological order
    adj = ((bytes_in > 0) | (bytes_in.T > 0)).astype(np.float64)
    adj /= np.maximum(adj.sum(1, keepdims=True), 1.0)
    params = np.bincount(g.group, weights=g.param_bytes, minlength=G)[order] * sim.state_factor
    off = ~np.eye(D, dtype=bool)
    inv_bw = np.where(off, 1.0 / cl.bandwidth, 0.0) / unit
    lat = np.where(off, cl.latency, 0.0) / unit

    def t(x: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float32))

    return DeviceContext(torch.as_tensor(order), t(problem.node_features()[order]), t(adj), t(bytes_in),
                         t(bytes_in > 0), t(work[order] / unit), t(params), t(sim.memory), t(inv_bw), t(lat),
                         t(device_features(problem)), D)


def step_features(ctx: DeviceContext, compute: Tensor, comm: Tensor, load: Tensor, mem: Tensor,
                  params: Tensor) -> Tensor:
    """The STEP_FEATURES of placing the current group(s) on each device, `[..., D, STEP_DIM]`.

    compute/comm `[..., D]` in time units; load `[..., D]` compute already on the device (time units);
    mem `[..., D]` bytes already on the device; params `[...]` the group's own bytes.
    """
    after = load + compute
    mem_after = (mem + params[..., None]) / ctx.memory
    return torch.stack([torch.log1p(compute), torch.log1p(comm), torch.log1p(load) / 4.0,
                        torch.log1p(after) / 4.0, (after - after.mean(-1, keepdim=True))
                        / (after.mean(-1, keepdim=True) + 1.0), mem_after.clamp(max=4.0)], dim=-1)


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

    def _logits(self, node: Tensor, dev: Tensor, step: Tensor) -> Tensor:
        """node [..., H], dev [D, H], step [..., D, STEP_DIM] -> log-softmax over devices [..., D].

        Devices the group's parameters (with gradients and optimizer state) would overflow are
        masked out, unless every device would overflow: the policy never chooses an avoidable OOM."""
        z = node[..., None, :] + dev + self.step_in(step)
        fits = step[..., MEMORY_AFTER] <= 1.0
        fits = fits | ~fits.any(-1, keepdim=True)
        return torch.log_softmax(self.out(z)[..., 0].masked_fill(~fits, MASKED_LOGIT), dim=-1)

    @torch.no_grad()
    def sample_with_logp(self, ctx: DeviceContext, batch: int, greedy: bool = False,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Placements `[B, G]` (group index order) sampled step by step, and their log-probabilities."""
        node, dev = self.encode(ctx), self.device_in(ctx.devices)
        G, D = ctx.compute.shape
        inv_bw_of = torch.zeros(batch, G, D)  # row u: seconds per byte from u's device to each device
        lat_of = torch.zeros(batch, G, D)
        load = torch.zeros(batch, D)
        mem = torch.zeros(batch, D)
        acts = torch.empty(batch, G, dtype=torch.long)
        logp = torch.zeros(batch)
        rows = torch.arange(batch)
        for t in range(G):
            comm = ctx.bytes_in[t] @ inv_bw_of + ctx.sends[t] @ lat_of
            feats = step_features(ctx, ctx.compute[t].expand(batch, D), comm, load, mem,
                                  ctx.params[t].expand(batch))
            lp = self._logits(node[t], dev, feats)
            if not bool(torch.isfinite(lp[:, 0]).all()):
                raise NonFiniteError("the transfer policy's device probabilities are NaN")
            a = lp.argmax(1) if greedy else torch.multinomial(lp.exp(), 1, generator=generator)[:, 0]
            logp += lp[rows, a]
            acts[:, t] = a
            inv_bw_of[:, t] = ctx.inv_bw[a]
            lat_of[:, t] = ctx.latency[a]
            load[rows, a] += ctx.compute[t, a]
            mem[rows, a] += ctx.params[t]
        out = torch.empty_like(acts)
        out[:, ctx.order] = acts
        return out, logp

    @staticmethod
    def teacher_features(ctx: DeviceContext, actions: Tensor) -> Tensor:
        """STEP_FEATURES `[B, G, D, STEP_DIM]` at every step (topological order) of placements `actions`."""
        a = actions[:, ctx.order]
        onehot = torch.nn.functional.one_hot(a, ctx.num_devices).float()  # [B, G, D]
        comm = (torch.einsum("tu,bud->btd", ctx.bytes_in, onehot @ ctx.inv_bw)
                + torch.einsum("tu,bud->btd", ctx.sends, onehot @ ctx.latency))
        placed = onehot * ctx.compute
        load = placed.cumsum(1) - placed  # compute on each device before step t
        mem_placed = onehot * ctx.params[:, None]
        mem = mem_placed.cumsum(1) - mem_placed
        B = a.shape[0]
        return step_features(ctx, ctx.compute.expand(B, -1, -1), comm, load, mem, ctx.params.expand(B, -1))

    def score(self, ctx: DeviceContext, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probability `[B]` and entropy `[B]` of placements `actions` `[B, G]`, teacher forced."""
        node, dev = self.encode(ctx), self.device_in(ctx.devices)
        a = actions[:, ctx.order]
        lp = self._logits(node, dev, self.teacher_features(ctx, actions))  # [B, G, D]
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

