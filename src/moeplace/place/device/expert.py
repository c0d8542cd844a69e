"""The `expert` baseline: what a human engineer would do, so speed-ups over it mean something.

An engineer placing a model by hand tries the few layouts the model's shape suggests, times each
and keeps the fastest. The layouts, each kept within the devices' memory where it can be:

- everything on one device (each device in turn: no hand placement should lose to the best one);
- layer-per-GPU for stacks of repeated layers, the model parallelism the 2017 device-placement
  paper names as practice for translation models (Sutskever et al. 2014; Wu et al. 2016): layer i
  of each stack on GPU i, embeddings with the first layer, attention and softmax with the last;
- parallel branches (towers) on separate devices, each branch split contiguously when there are
  more devices than branches;
- a balanced contiguous split of the layers in topological order (run FLOPs / device FLOP/s
  balanced by dynamic programming, memory-aware);

the multi-device layouts each over the k fastest accelerators, k = 2..K.

The simulator times every layout (a handful of evaluations) and the fastest valid one is returned.
"""

from __future__ import annotations

import re

import numpy as np

from moeplace.place.device.problem import DevicePlacementProblem


def accelerators(problem: DevicePlacementProblem) -> list[int]:
    """Accelerators (every device when the cluster has none), fastest first (stable on ties)."""
    devs = problem.cluster.devices
    gpus = [i for i, d in enumerate(devs) if d.kind != "cpu"] or list(range(len(devs)))
    return sorted(gpus, key=lambda i: -devs[i].flops)


def group_work(problem: DevicePlacementProblem) -> np.ndarray:
    """Forward + backward FLOPs per group."""
    g = problem.graph
    return np.bincount(g.group, weights=g.fwd_flops + g.bwd_flops, minlength=g.num_groups)


def group_memory(problem: DevicePlacementProblem) -> np.ndarray:
    """Bytes a group holds on its device: parameters x (weights, gradients, optimizer) + outputs."""
    g = problem.graph
    need = g.param_bytes * problem.sim.state_factor + np.where(g.trivial, 0.0, g.out_bytes)
    return np.bincount(g.group, weights=need, minlength=g.num_groups)


def balanced_runs(work: np.ndarray, speed: np.ndarray, memory: np.ndarray | None = None,
                  capacity: np.ndarray | None = None) -> np.ndarray:
    """Cut a sequence of items into contiguous runs, run k on device k (possibly empty).

    Minimises the largest run work / device speed by dynamic programming; with `memory` and
    `capacity`, a run whose items need more than its device's capacity is not allowed (when no cut
    fits, the memory limit is dropped). Returns the run index of each item.
    """
    n, k_dev = len(work), len(speed)
    prefix = np.concatenate([[0.0], np.cumsum(work)])
    mem_prefix = None if memory is None else np.concatenate([[0.0], np.cumsum(memory)])
    best = np.full((k_dev + 1, n + 1), np.inf)
    cut = np.zeros((k_dev + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for k in range(1, k_dev + 1):
        for j in range(n + 1):
            for i in range(j + 1):  # device k-1 takes items i..j-1
                if mem_prefix is not None and capacity is not None \
                        and mem_prefix[j] - mem_prefix[i] > capacity[k - 1]:
                    continue
                v = max(best[k - 1, i], (prefix[j] - prefix[i]) / speed[k - 1])
                if v < best[k, j]:
                    best[k, j], cut[k, j] = v, i
    if not np.isfinite(best[k_dev, n]):
        return balanced_runs(work, speed)
    owner = np.zeros(n, dtype=np.int64)
    j = n
    for k in range(k_dev, 0, -1):
        i = cut[k, j]
        owner[i:j] = k - 1
        j = i
    return owner


def _layers(problem: DevicePlacementProblem) -> tuple[list[str], np.ndarray]:
    """Layer keys in topological order and the layer index of each group (its first op's layer)."""
    g = problem.graph
    index: dict[str, int] = {}
    op_layer = np.array([index.setdefault(name, len(index)) for name in g.layer], dtype=np.int64)
    return list(index), op_layer[g.group_first_op()]


def contiguous_split(problem: DevicePlacementProblem, gpus: list[int],
                     memory_aware: bool = True) -> np.ndarray:
    """Layers in topological order cut into balanced contiguous runs, one per device of `gpus`."""
    names, group_layer = _layers(problem)
    L = len(names)
    work = np.bincount(group_layer, weights=group_work(problem), minlength=L)
    speed = problem.cluster.array("flops")[gpus]
    if memory_aware:
        mem = np.bincount(group_layer, weights=group_memory(problem), minlength=L)
        owner = balanced_runs(work, speed, mem, problem.sim.memory[gpus])
    else:
        owner = balanced_runs(work, speed)
    return np.asarray(gpus, dtype=np.int64)[owner][group_layer]


def stack_split(problem: DevicePlacementProblem, gpus: list[int]) -> np.ndarray | None:
    """Layer-per-GPU: layer i of each stack (keys `name.i`) on GPU floor(i K / L); other layers go
    with the nearest stack layer before them (after them when none is before). None without stacks."""
    names, group_layer = _layers(problem)
    stacks: dict[str, list[int]] = {}
    for li, key in enumerate(names):
        m = re.fullmatch(r"(.+)\.(\d+)", key)
        if m:
            stacks.setdefault(m.group(1), []).append(li)
    stacks = {s: v for s, v in stacks.items() if len(v) >= 2}
    if not stacks:
        return None
    K = len(gpus)
    dev = np.full(len(names), -1, dtype=np.int64)
    for members in stacks.values():
        L = len(members)
        for i, li in enumerate(members):
            dev[li] = gpus[min(i * K // L, K - 1)] if L >= K else gpus[i]
    placed = np.flatnonzero(dev >= 0)
    for li in np.flatnonzero(dev < 0):
        before = placed[placed < li]
        dev[li] = dev[before[-1]] if len(before) else dev[placed[0]]
    return dev[group_layer]


def _work_edges(problem: DevicePlacementProblem) -> np.ndarray:
    """Group edges carried by ops that compute (a model input folded into its first consumer's
    group does not make that group an ancestor of every other consumer of the input)."""
    g = problem.graph
    e = g.edges[:, ~g.trivial[g.edges[0]]]
    e = g.group[e]
    e = e[:, e[0] != e[1]]
    return np.unique(e, axis=1) if e.size else np.zeros((2, 0), np.int64)


def _reachability(problem: DevicePlacementProblem) -> tuple[list[int], list[int]]:
    """Ancestor and descendant sets of every group as bit masks, over `_work_edges`."""
    g = problem.graph
    G = g.num_groups
    e = _work_edges(problem)
    order = np.argsort(g.group_first_op(), kind="stable")
    succ: list[list[int]] = [[] for _ in range(G)]
    pred: list[list[int]] = [[] for _ in range(G)]
    for a, b in e.T.tolist():
        succ[a].append(b)
        pred[b].append(a)
    desc, anc = [0] * G, [0] * G
    for v in order[::-1].tolist():
        for w in succ[v]:
            desc[v] |= desc[w] | (1 << w)
    for v in order.tolist():
        for u in pred[v]:
            anc[v] |= anc[u] | (1 << u)
    return anc, desc


def branch_split(problem: DevicePlacementProblem, gpus: list[int]) -> np.ndarray | None:
    """Parallel branches on separate devices; None when the graph has no parallel branches.

    A group on every path (comparable with all others) is a cut; the groups between two cuts split
    into weakly connected components, the parallel branches. Branches share out the devices in
    proportion to their work (largest first, each split contiguously over its share), or, when
    there are more branches than devices, go largest first to the least-loaded device. A cut stays
    on the device of the previous segment's heaviest branch.
    """
    g = problem.graph
    G = g.num_groups
    anc, desc = _reachability(problem)
    full = (1 << G) - 1
    order = np.argsort(g.group_first_op(), kind="stable").tolist()
    is_cut = [((anc[v] | desc[v]) | (1 << v)) == full for v in range(G)]
    work = group_work(problem)
    speed = problem.cluster.array("flops")
    edges = _work_edges(problem).T.tolist()
    dev = np.full(G, -1, dtype=np.int64)
    cur, found = gpus[0], False
    segment: list[int] = []
    for v in [*order, None]:
        if v is not None and not is_cut[v]:
            segment.append(v)
            continue
        if segment:
            branches = _components(segment, edges)
            found |= len(branches) > 1
            cur = _place_branches(branches, work, speed, gpus, cur, dev)
            segment = []
        if v is not None:
            dev[v] = cur
    return dev if found else None


def _components(nodes: list[int], edges: list[list[int]]) -> list[list[int]]:
    """Weakly connected components of the subgraph on `nodes` (each in the given order)."""
    parent = {v: v for v in nodes}

    def root(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for a, b in edges:
        if a in parent and b in parent:
            parent[root(a)] = root(b)
    comps: dict[int, list[int]] = {}
    for v in nodes:
        comps.setdefault(root(v), []).append(v)
    return list(comps.values())


def _place_branches(branches: list[list[int]], work: np.ndarray, speed: np.ndarray, gpus: list[int],
                    cur: int, dev: np.ndarray) -> int:
    """Assign one segment's branches (writes `dev`); returns the device of the heaviest branch."""
    bw = np.array([work[b].sum() for b in branches])
    rank = np.argsort(-bw, kind="stable")
    pool = [cur, *[d for d in gpus if d != cur]]
    if len(branches) == 1:
        dev[branches[0]] = cur
        return cur
    if len(branches) >= len(pool):  # longest processing time first onto the least-loaded device
        load = np.zeros(len(pool))
        for r in rank:
            k = int(np.argmin(load + bw[r] / speed[pool]))
            load[k] += bw[r] / speed[pool[k]]
            dev[branches[r]] = pool[k]
        return int(dev[branches[rank[0]][0]])
    share = np.ones(len(branches), dtype=np.int64)  # one device each, the rest by largest remainder
    extra = len(pool) - len(branches)
    if extra and bw.sum() > 0:
        quota = bw / bw.sum() * len(pool) - 1
        share += np.floor(np.maximum(quota, 0)).astype(np.int64)
        while share.sum() > len(pool):
            share[np.argmax(share)] -= 1
        rest = np.maximum(quota, 0) - np.floor(np.maximum(quota, 0))
        for r in np.argsort(-rest, kind="stable")[: len(pool) - share.sum()]:
            share[r] += 1
    start = 0
    for r in rank:
        mine = pool[start:start + share[r]]
        start += share[r]
        owner = balanced_runs(work[branches[r]], speed[mine])
        dev[branches[r]] = np.asarray(mine)[owner]
    return int(dev[branches[rank[0]][0]])


def candidates(problem: DevicePlacementProblem) -> dict[str, np.ndarray]:
    """Every hand layout the expert tries, by name."""
    gpus = accelerators(problem)
    out = {f"single:{problem.cluster.devices[d].name}": np.full(problem.num_nodes, d, dtype=np.int64)
           for d in range(problem.num_slots)}
    for k in range(2, len(gpus) + 1):  # the k fastest accelerators
        out[f"contiguous:{k}"] = contiguous_split(problem, gpus[:k])
        for name, fn in (("layer_per_gpu", stack_split), ("branches", branch_split)):
            p = fn(problem, gpus[:k])
            if p is not None:
                out[f"{name}:{k}"] = p
    return out


def expert(problem: DevicePlacementProblem) -> np.ndarray:
    """The fastest of the hand layouts under the simulator (a valid one whenever any fits)."""
    best, best_cost = None, np.inf
    for p in candidates(problem).values():
        res = problem.simulate(p)
        cost = problem.cost_of(res.step_time, res.peak_memory)
        if cost < best_cost:
            best, best_cost = p, cost
    assert best is not None
    return best
