"""Placement heuristics: single device, round-robin, the human expert (expert.py), the layer-wise
split, METIS, HEFT, and Baechi's memory-aware m-ETF and m-TOPO. Each returns a group placement
`[G]` in well under 5 s.

HEFT, m-ETF and m-TOPO schedule ops (the graph is a DAG); an op whose group already has a device
goes there (co-location). Their op cost is forward + backward time on each device; communication is
latency + bytes / bandwidth. The memory-aware ones count an op's parameters x (weights, gradients,
optimizer state) plus its output (kept for the backward pass) against the device's memory.
"""

from __future__ import annotations

import numpy as np

from moeplace.place.device.expert import contiguous_split, expert, group_work
from moeplace.place.device.problem import DevicePlacementProblem


def gpu_devices(problem: DevicePlacementProblem) -> list[int]:
    """Indices of the accelerators (every device when the cluster has none)."""
    gpus = [i for i, d in enumerate(problem.cluster.devices) if d.kind != "cpu"]
    return gpus or list(range(problem.num_slots))


def single_device(problem: DevicePlacementProblem) -> np.ndarray:
    """Everything on the fastest device (the first of equals)."""
    return np.full(problem.num_nodes, int(np.argmax(problem.cluster.array("flops"))), dtype=np.int64)


def round_robin(problem: DevicePlacementProblem) -> np.ndarray:
    """Group g on accelerator g mod k."""
    gpus = gpu_devices(problem)
    return np.array([gpus[g % len(gpus)] for g in range(problem.num_nodes)], dtype=np.int64)


def _group_work(problem: DevicePlacementProblem) -> np.ndarray:
    return group_work(problem)


def layer_split(problem: DevicePlacementProblem) -> np.ndarray:
    """Layers in order, cut into balanced contiguous runs, one per accelerator (the `expert` of earlier
    releases; now one of the layouts `expert` tries). Minimises the largest run FLOPs / device FLOP/s."""
    return contiguous_split(problem, gpu_devices(problem), memory_aware=False)


def metis(problem: DevicePlacementProblem, seed: int = 0) -> np.ndarray:
    """METIS k-way partition of the group graph (vertex weight = FLOPs, edge weight = bytes)."""
    import pymetis

    g = problem.graph
    gpus = gpu_devices(problem)
    if len(gpus) == 1 or g.num_groups <= len(gpus):
        return np.array([gpus[i % len(gpus)] for i in range(g.num_groups)], dtype=np.int64)
    ge = g.edges[:, g.group[g.edges[0]] != g.group[g.edges[1]]]
    a, b = g.group[ge[0]], g.group[ge[1]]
    w = g.out_bytes[ge[0]]
    key = np.minimum(a, b) * g.num_groups + np.maximum(a, b)
    uniq, inv = np.unique(key, return_inverse=True)
    wsum = np.bincount(inv, weights=w)
    u, v = uniq // g.num_groups, uniq % g.num_groups
    adj: list[list[int]] = [[] for _ in range(g.num_groups)]
    adjw: list[list[int]] = [[] for _ in range(g.num_groups)]
    ew = np.maximum(1, np.round(1000 * wsum / max(wsum.max(), 1.0))).astype(int) if len(wsum) else wsum
    for x, y, c in zip(u.tolist(), v.tolist(), ew.tolist() if len(wsum) else []):
        adj[x].append(y), adjw[x].append(c)
        adj[y].append(x), adjw[y].append(c)
    work = _group_work(problem)
    vw = np.maximum(1, np.round(10000 * work / max(work.max(), 1.0))).astype(int)
    xadj = np.concatenate([[0], np.cumsum([len(x) for x in adj])]).astype(int)
    opts = pymetis.Options(seed=seed)
    _, parts = pymetis.part_graph(
        len(gpus),
        xadj=xadj.tolist(),
        adjncy=[y for x in adj for y in x],
        vweights=vw.tolist(),
        eweights=[c for x in adjw for c in x],
        options=opts,
    )
    return np.array([gpus[p] for p in parts], dtype=np.int64)


class _Costs:
    """Per-op compute time on each device, communication time per device pair, memory need per op."""

    def __init__(self, problem: DevicePlacementProblem) -> None:
        s = problem.sim
        self.time = s.fwd_time + s.bwd_time  # [N, D]
        self.bw, self.lat = s.bw, s.lat
        g = problem.graph
        self.out = g.out_bytes
        self.mem = g.param_bytes * s.state_factor + np.where(g.trivial, 0.0, g.out_bytes)
        self.preds = [[] for _ in range(g.num_ops)]
        self.succs = [[] for _ in range(g.num_ops)]
        for a, b in g.edges.T.tolist():
            self.preds[b].append(a)
            self.succs[a].append(b)
        self.group_mem = np.bincount(g.group, weights=self.mem, minlength=g.num_groups)

    def comm(self, j: int, src: int, dst: np.ndarray) -> np.ndarray:
        """Time to move op j's output from src to each device in dst (0 on the same device)."""
        t = self.lat[src, dst] + self.out[j] / self.bw[src, dst]
        return np.where(dst == src, 0.0, t)


def _finish(problem: DevicePlacementProblem, group_dev: np.ndarray, op_dev: np.ndarray) -> np.ndarray:
    """Group placement from what the op schedule chose (groups never reached: first accelerator)."""
    g = problem.graph
    out = group_dev.copy()
    out[out < 0] = gpu_devices(problem)[0]
    assert np.all(op_dev[op_dev >= 0] == out[g.group[op_dev >= 0]])
    return out


def heft(problem: DevicePlacementProblem) -> np.ndarray:
    """HEFT: ops by decreasing upward rank, each on the device giving the earliest finish time."""
    g, c = problem.graph, _Costs(problem)
    D = problem.num_slots
    mean_time = c.time.mean(axis=1)
    off = ~np.eye(D, dtype=bool)
    mean_comm = (c.lat[off].mean() + c.out / (c.bw[off].mean())) if D > 1 else np.zeros(g.num_ops)
    rank = np.zeros(g.num_ops)
    for i in range(g.num_ops - 1, -1, -1):
        rank[i] = mean_time[i] + max((mean_comm[i] + rank[j] for j in c.succs[i]), default=0.0)
    order = sorted(range(g.num_ops), key=lambda i: (-rank[i], i))
    group_dev = np.full(g.num_groups, -1, np.int64)
    op_dev = np.full(g.num_ops, -1, np.int64)
    finish = np.zeros(g.num_ops)
    avail = np.zeros(D)
    devs = np.arange(D)
    for i in order:
        ready = np.zeros(D)
        for j in c.preds[i]:
            ready = np.maximum(ready, finish[j] + c.comm(j, op_dev[j], devs))
        eft = np.maximum(ready, avail) + c.time[i]
        grp = g.group[i]
        d = int(group_dev[grp]) if group_dev[grp] >= 0 else int(np.argmin(eft))
        group_dev[grp] = op_dev[i] = d
        finish[i] = eft[d]
        avail[d] = finish[i]
    return _finish(problem, group_dev, op_dev)


def m_etf(problem: DevicePlacementProblem) -> np.ndarray:
    """Baechi's m-ETF: repeatedly schedule the ready (op, device) pair that can start earliest,
    among accelerators with memory left for the op's group."""
    g, c = problem.graph, _Costs(problem)
    D = problem.num_slots
    devs = np.arange(D)
    cap = np.zeros(D)
    cap[gpu_devices(problem)] = problem.sim.memory[gpu_devices(problem)]
    used = np.zeros(D)
    group_dev = np.full(g.num_groups, -1, np.int64)
    op_dev = np.full(g.num_ops, -1, np.int64)
    finish = np.zeros(g.num_ops)
    avail = np.zeros(D)
    waiting = np.array([len(p) for p in c.preds])
    ready = [i for i in range(g.num_ops) if waiting[i] == 0]
    while ready:
        best = (np.inf, 0, 0)
        for i in ready:
            arrive = np.zeros(D)
            for j in c.preds[i]:
                arrive = np.maximum(arrive, finish[j] + c.comm(j, op_dev[j], devs))
            start = np.maximum(arrive, avail)
            grp = g.group[i]
            if group_dev[grp] >= 0:
                start = np.where(devs == group_dev[grp], start, np.inf)
            else:
                fits = used + c.group_mem[grp] <= cap
                start = np.where(fits if fits.any() else cap > 0, start, np.inf)
            d = int(np.lexsort((start + c.time[i], start))[0])  # earliest start, then earliest finish
            if (start[d], i) < best[:2]:
                best = (start[d], i, d)
        t, i, d = best
        ready.remove(i)
        grp = g.group[i]
        if group_dev[grp] < 0:
            group_dev[grp] = d
            used[d] += c.group_mem[grp]
        op_dev[i] = d
        finish[i] = t + c.time[i, d]
        avail[d] = finish[i]
        for j in c.succs[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    return _finish(problem, group_dev, op_dev)


def m_topo(problem: DevicePlacementProblem) -> np.ndarray:
    """Baechi's m-TOPO: ops in topological order fill one accelerator after another, moving on when
    the device holds its share of the total compute or its memory is full."""
    g, c = problem.graph, _Costs(problem)
    gpus = gpu_devices(problem)
    cap = problem.sim.memory
    speed = problem.cluster.array("flops")[gpus]
    total = c.time[:, gpus[0]].sum() * speed[0]  # FLOP-equivalent work
    share = total * speed / speed.sum()
    group_dev = np.full(g.num_groups, -1, np.int64)
    op_dev = np.full(g.num_ops, -1, np.int64)
    k, load, used = 0, np.zeros(len(gpus)), np.zeros(problem.num_slots)
    for i in range(g.num_ops):
        grp = g.group[i]
        if group_dev[grp] < 0:
            while k < len(gpus) - 1 and (
                load[k] >= share[k] or used[gpus[k]] + c.group_mem[grp] > cap[gpus[k]]
            ):
                k += 1
            group_dev[grp] = gpus[k]
            used[gpus[k]] += c.group_mem[grp]
        d = int(group_dev[grp])
        op_dev[i] = d
        if d in gpus:
            load[gpus.index(d)] += c.time[i, gpus[0]] * speed[0]
    return _finish(problem, group_dev, op_dev)


HEURISTICS = {
    "single": single_device,
    "round_robin": round_robin,
    "expert": expert,
    "layer_split": layer_split,
    "metis": metis,
    "heft": heft,
    "m_etf": m_etf,
    "m_topo": m_topo,
}
