"""What the transfer policy sees of a (graph, cluster) problem: static per-group and per-device
tensors (`context_of`) and, while groups are placed one by one in topological order, the physical
features of putting the next group on each device (`StepState`): its compute time there, the time
its inputs take to arrive, the compute and memory already on the device, and its earliest finish
time under list scheduling of its ops (the quantity HEFT / ETF minimise, here an input the policy
learns to weigh). Everything is per device and in units of the graph's mean group time, so it does not
depend on the graph's size, its time scale or the cluster's device count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from moeplace.place.device.problem import DevicePlacementProblem

NODE_FEATURES = ("log_fwd_flops", "log_bwd_flops", "log_out_bytes", "log_param_bytes", "log_ops",
                 "topo_position")
DEVICE_FEATURES = ("log_flops", "log_memory", "is_cpu", "flops_vs_max", "memory_vs_max",
                   "log_mean_bandwidth", "log_mean_latency")
STEP_FEATURES = ("compute", "comm_in", "load_before", "load_after", "load_after_vs_mean", "memory_after",
                 "finish", "finish_vs_best")
NODE_DIM, DEVICE_DIM, STEP_DIM = len(NODE_FEATURES), len(DEVICE_FEATURES), len(STEP_FEATURES)
MEMORY_AFTER = STEP_FEATURES.index("memory_after")


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
    ops: list[OpSchedule]  # ops[t]: step t's ops in topological order, with their inputs
    op_time: Tensor  # [N, D] forward + backward time of each op on each device, in time units
    num_ops: int
    cache: dict[bytes, Tensor] | None = None  # placement -> its step features; None: off (see remember)
    prior: Tensor | None = None  # [G, D] logits added to the policy's (improvement mode: the incumbent)
    logit_std_cap: float | None = None  # per-step std of the head's logits over devices is capped to this


@dataclass
class OpInputs:
    """One op's inputs: `local` = positions of producers in the same group (earlier in its op list),
    `ext` = producer ops of groups placed at earlier steps, `ext_bytes` = the bytes each sends."""

    local: Tensor
    ext: Tensor
    ext_bytes: Tensor


@dataclass
class OpSchedule:
    """The ops of one group in topological order and each one's inputs."""

    ops: Tensor
    inputs: list[OpInputs]


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
                         t(bytes_in > 0), t(work[order] / unit), t(params), t(sim.memory),
                         t(inv_bw), t(lat), t(device_features(problem)), D, op_schedules(problem, order),
                         t((sim.fwd_time + sim.bwd_time) / unit), g.num_ops)


def op_schedules(problem: DevicePlacementProblem, order: np.ndarray) -> list[OpSchedule]:
    """Per step (group in topological order): its ops in topological order and each op's inputs.
    An input from a group placed at a later step (a group that is not convex) is left out."""
    g = problem.graph
    step = np.empty(g.num_groups, np.int64)
    step[order] = np.arange(g.num_groups)
    op_step = step[g.group]
    preds: list[list[int]] = [[] for _ in range(g.num_ops)]
    for s_, d_ in g.edges.T:
        preds[int(d_)].append(int(s_))
    out = []
    for t_ in range(g.num_groups):
        ops = np.flatnonzero(op_step == t_)  # op indices are in topological order
        where = {int(o): i for i, o in enumerate(ops)}
        inputs = []
        for o in ops:
            local = [where[p] for p in preds[o] if p in where]
            ext = [p for p in preds[o] if p not in where and op_step[p] < t_]
            inputs.append(OpInputs(torch.as_tensor(local, dtype=torch.long),
                                   torch.as_tensor(ext, dtype=torch.long),
                                   torch.as_tensor(g.out_bytes[ext], dtype=torch.float32)))
        out.append(OpSchedule(torch.as_tensor(ops), inputs))
    return out


class StepState:
    """A batch of partial placements, built one group at a time in topological order.

    `features(t)` gives the STEP_FEATURES `[B, D, STEP_DIM]` of putting step t's group on each device;
    `commit(t, actions)` places it. Finish times follow list scheduling op by op: each of the group's
    ops starts when its inputs have arrived (producer's finish, + bytes / bandwidth + latency from
    another device) and the device has finished what was placed on it before; it runs for its
    forward + backward time. Op by op, not group by group, so a layer placed after its producer on
    another device can start on the producer's first time step (pipelining) rather than its last.
    """

    def __init__(self, ctx: DeviceContext, batch: int) -> None:
        G, D = ctx.compute.shape
        self.ctx, self.rows = ctx, torch.arange(batch)
        self.inv_bw_of = torch.zeros(batch, G, D)  # row u: seconds per byte from u's device to each device
        self.lat_of = torch.zeros(batch, G, D)
        self.load = torch.zeros(batch, D)  # compute placed on each device
        self.mem = torch.zeros(batch, D)  # bytes placed on each device
        self.op_finish = torch.zeros(batch, ctx.num_ops)  # finish time of each placed op
        self.op_device = torch.zeros(batch, ctx.num_ops, dtype=torch.long)
        self.avail = torch.zeros(batch, D)  # when each device has finished what it holds
        self._eft = torch.zeros(batch, D)
        self._op_fin = torch.zeros(batch, D, 0)

    def features(self, t: int) -> Tensor:
        """STEP_FEATURES of placing step t's group on each device, `[B, D, STEP_DIM]`."""
        ctx = self.ctx
        comm = ctx.bytes_in[t] @ self.inv_bw_of + ctx.sends[t] @ self.lat_of
        self._eft = self._schedule(t)
        compute = ctx.compute[t].expand_as(self.load)
        after = self.load + compute
        mem_after = (self.mem + ctx.params[t]) / ctx.memory
        best = self._eft.amin(-1, keepdim=True)
        return torch.stack([torch.log1p(compute), torch.log1p(comm), torch.log1p(self.load) / 4.0,
                            torch.log1p(after) / 4.0, (after - after.mean(-1, keepdim=True))
                            / (after.mean(-1, keepdim=True) + 1.0), mem_after.clamp(max=4.0),
                            torch.log1p(self._eft) / 4.0, torch.log1p(self._eft - best)], dim=-1)

    def _schedule(self, t: int) -> Tensor:
        """List-schedule step t's ops on each device in turn `[B, D]`: each op starts when its inputs
        have arrived (same group: when it finished; another group: its finish + bytes / bandwidth +
        latency from that group's device) and the device is free; returns the last op's finish."""
        ctx, sched = self.ctx, self.ctx.ops[t]
        B, D = self.avail.shape
        fin = torch.zeros(B, D, len(sched.ops))
        free = self.avail
        for i, (o, inp) in enumerate(zip(sched.ops.tolist(), sched.inputs)):
            start = free
            if len(inp.ext):
                dev = self.op_device[:, inp.ext]  # [B, Q]
                arrive = (self.op_finish[:, inp.ext, None] + inp.ext_bytes[None, :, None] * ctx.inv_bw[dev]
                          + ctx.latency[dev])  # [B, Q, D]
                start = torch.maximum(start, arrive.amax(1))
            if len(inp.local):
                start = torch.maximum(start, fin[:, :, inp.local].amax(-1))
            free = start + ctx.op_time[o]
            fin[:, :, i] = free
        self._op_fin = fin
        return free

    def commit(self, t: int, a: Tensor) -> None:
        """Place step t's group on devices `a` `[B]` (after `features(t)`)."""
        ctx, rows = self.ctx, self.rows
        self.inv_bw_of[:, t] = ctx.inv_bw[a]
        self.lat_of[:, t] = ctx.latency[a]
        self.load[rows, a] += ctx.compute[t, a]
        self.mem[rows, a] += ctx.params[t]
        ops = ctx.ops[t].ops
        self.op_finish[:, ops] = self._op_fin[rows, a]
        self.op_device[:, ops] = a[:, None]
        self.avail[rows, a] = self._eft[rows, a]


CACHE_BYTES = 64 << 20  # what a context's feature cache may hold (G x D x STEP_DIM floats a placement)


def remember(ctx: DeviceContext, actions: Tensor, feats: Tensor) -> None:
    """Keep the step features `feats` `[B, G, D, STEP_DIM]` of placements `actions` `[B, G]` in
    `ctx.cache` (when on), so scoring what the sampler just drew does not list-schedule it again.
    A full cache is emptied first: only recent placements are looked up again."""
    if ctx.cache is None:
        return
    if (len(ctx.cache) + len(actions)) * feats[0].numel() * feats.element_size() > CACHE_BYTES:
        ctx.cache.clear()
    for row, f in zip(actions.numpy(), feats):
        ctx.cache[row.tobytes()] = f


def teacher_features(ctx: DeviceContext, actions: Tensor) -> Tensor:
    """STEP_FEATURES `[B, G, D, STEP_DIM]` at every step (topological order) of placements `actions`
    `[B, G]` (group index order), exactly as the sampler saw them (looked up in `ctx.cache` when on)."""
    if ctx.cache is None:
        return _teacher_features(ctx, actions)
    keys = [row.tobytes() for row in actions.numpy()]
    found = {k: ctx.cache[k] for k in keys if k in ctx.cache}
    first = {k: i for i, k in reversed(list(enumerate(keys))) if k not in found}
    if first:
        rows = list(first.values())
        feats = _teacher_features(ctx, actions[rows])
        found.update(zip(first, feats))
        remember(ctx, actions[rows], feats)
    return torch.stack([found[k] for k in keys])


def _teacher_features(ctx: DeviceContext, actions: Tensor) -> Tensor:
    """`teacher_features` computed: the sampler's StepState driven by the given actions."""
    a = actions[:, ctx.order]
    state = StepState(ctx, a.shape[0])
    out = []
    for t in range(a.shape[1]):
        out.append(state.features(t))
        state.commit(t, a[:, t])
    return torch.stack(out, dim=1)
