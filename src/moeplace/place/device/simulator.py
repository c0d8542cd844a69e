"""Event-driven simulator of one training step of a placed op graph.

Model: each device runs one op at a time from a FIFO queue of ready ops (when several devices are
idle at the same instant, the lowest-numbered task starts first, so identical devices can be
renumbered without changing any time); each ordered device pair has a link that carries one
transfer at a time (FIFO), taking latency + bytes / bandwidth, while the devices keep computing.
The forward pass runs every op; an op's output goes once to each other device that consumes it.
The backward op of `j` runs on `j`'s device after its forward op and after the gradients of all
its consumers have arrived (consumers on another device sum their gradients there and send them
back in one transfer). Op time = FLOPs / device FLOP/s + the device's per-op overhead (ops that
only view or name tensors take no time).

Memory per device = parameters x (1 weights + 1 gradients + optimizer_state_factor) + the peak of
live activations: an op's output is held from its forward until its backward finishes; a copy
received from another device is held until the last local consumer has finished its backward.
Gradient buffers in flight and the optimizer update are not modelled. Above a device's memory the
placement is out of memory (invalid).

The event loop is compiled with numba (pure Python fallback when numba is missing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moeplace.place.device.cluster import Cluster
from moeplace.place.device.graph import OpGraph

try:
    from numba import njit
except ImportError:  # pragma: no cover - the pure-Python fallback is ~100x slower

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        """No-op stand-in for numba.njit."""
        return args[0] if args and callable(args[0]) else (lambda f: f)


@njit(cache=True)
def _heap_push(ht, hs, he, size, t, seq, ev):  # noqa: ANN001, ANN202
    """Push (t, seq, ev) onto the binary min-heap stored in three arrays; returns the new size."""
    i = size
    ht[i], hs[i], he[i] = t, seq, ev
    while i > 0:
        p = (i - 1) // 2
        if ht[p] < ht[i] or (ht[p] == ht[i] and hs[p] < hs[i]):
            break
        ht[p], ht[i] = ht[i], ht[p]
        hs[p], hs[i] = hs[i], hs[p]
        he[p], he[i] = he[i], he[p]
        i = p
    return size + 1


@njit(cache=True)
def _heap_pop(ht, hs, he, size):  # noqa: ANN001, ANN202
    """Pop the smallest (t, seq) from the heap; returns (t, ev, new size)."""
    t, ev = ht[0], he[0]
    size -= 1
    ht[0], hs[0], he[0] = ht[size], hs[size], he[size]
    i = 0
    while True:
        l_, r, m = 2 * i + 1, 2 * i + 2, i
        if l_ < size and (ht[l_] < ht[m] or (ht[l_] == ht[m] and hs[l_] < hs[m])):
            m = l_
        if r < size and (ht[r] < ht[m] or (ht[r] == ht[m] and hs[r] < hs[m])):
            m = r
        if m == i:
            break
        ht[m], ht[i] = ht[i], ht[m]
        hs[m], hs[i] = hs[i], hs[m]
        he[m], he[i] = he[i], he[m]
        i = m
    return t, ev, size


@njit(cache=True)
def _simulate(
    dev,
    fwd_time,
    bwd_time,
    alloc,
    out_bytes,
    pred_ptr,
    pred_idx,
    succ_ptr,
    succ_idx,
    bw,
    lat,
    task_start,
    task_end,
    copy_src,
    copy_dst,
    copy_time,
):  # noqa: ANN001, ANN202
    """Run the event loop; fills the timeline arrays, returns (step_time, peak live bytes [D], copies)."""
    n = dev.shape[0]
    D = bw.shape[0]
    dur = np.empty(2 * n)  # this placement's op times: forward ops, then backward ops
    for i in range(n):
        dur[i] = fwd_time[i, dev[i]]
        dur[n + i] = bwd_time[i, dev[i]]
    cap = 2 * n + 2 * succ_idx.shape[0] + 8
    ht = np.empty(cap)
    hs = np.empty(cap, np.int64)
    he = np.empty(cap, np.int64)
    hsize = 0
    seq = 0
    rem = np.empty(2 * n, np.int64)  # remaining dependencies per task (fwd 0..n-1, bwd n..2n-1)
    for i in range(n):
        rem[i] = pred_ptr[i + 1] - pred_ptr[i]
    mark = np.full(D, -1, np.int64)
    for j in range(n):  # bwd(j) waits for fwd(j), each local consumer, each remote device of consumers
        cnt = 1
        for k in range(succ_ptr[j], succ_ptr[j + 1]):
            d = dev[succ_idx[k]]
            if d == dev[j]:
                cnt += 1
            elif mark[d] != j:
                mark[d] = j
                cnt += 1
        rem[n + j] = cnt
    copy_id = np.full(n * D, -1, np.int64)
    copy_left = np.zeros(succ_idx.shape[0] + 1, np.int64)
    ncopy = 0
    link_free = np.zeros(D * D)
    queue = np.empty((D, 2 * n), np.int64)
    qhead = np.zeros(D, np.int64)
    qtail = np.zeros(D, np.int64)
    busy = np.zeros(D, np.bool_)
    cur = np.zeros(D)
    peak = np.zeros(D)
    now = 0.0
    # tasks with no dependency are ready at time 0, in topological order
    for t in range(2 * n):
        if rem[t] == 0:
            d = dev[t % n]
            queue[d, qtail[d]] = t
            qtail[d] += 1
    while True:
        # start the next queued task on every idle device, lowest task id first, so that events
        # ending at the same time are ordered by task, not by device index (identical devices
        # can then be renumbered without changing the step time)
        while True:
            best_d, best_t, startable = -1, 2 * n, 0
            for d in range(D):
                if not busy[d] and qtail[d] > qhead[d]:
                    startable += 1
                    if queue[d, qhead[d]] < best_t:
                        best_d, best_t = d, queue[d, qhead[d]]
            if best_d < 0:
                break
            qhead[best_d] += 1
            busy[best_d] = True
            task_start[best_t] = now
            hsize = _heap_push(ht, hs, he, hsize, now + dur[best_t], seq, best_t)
            seq += 1
            if startable == 1:  # the usual case: no other device to start, skip the rescan
                break
        if hsize == 0:
            break
        now, ev, hsize = _heap_pop(ht, hs, he, hsize)
        newly = 0  # tasks made ready by this event are appended to their device queues
        if ev < 2 * n:
            t = ev
            j = t % n
            d = dev[j]
            task_end[t] = now
            if t < n:  # forward of j done: output allocated, sent to consumers
                cur[d] += alloc[j]
                if cur[d] > peak[d]:
                    peak[d] = cur[d]
                for k in range(succ_ptr[j], succ_ptr[j + 1]):
                    c = succ_idx[k]
                    dc = dev[c]
                    if dc == d:
                        rem[c] -= 1
                        if rem[c] == 0:
                            queue[dc, qtail[dc]] = c
                            qtail[dc] += 1
                    else:
                        key = j * D + dc
                        if copy_id[key] < 0:
                            cid = ncopy
                            ncopy += 1
                            copy_id[key] = cid
                            copy_src[cid] = j
                            copy_dst[cid] = dc
                            copy_left[cid] = 1
                            link = d * D + dc
                            start = max(link_free[link], now)
                            end = start + lat[d, dc] + out_bytes[j] / bw[d, dc]
                            link_free[link] = end
                            copy_time[cid, 0] = start
                            copy_time[cid, 1] = end
                            hsize = _heap_push(ht, hs, he, hsize, end, seq, 2 * n + 2 * cid)
                            seq += 1
                        else:
                            copy_left[copy_id[key]] += 1
                rem[n + j] -= 1
                if rem[n + j] == 0:
                    queue[d, qtail[d]] = n + j
                    qtail[d] += 1
            else:  # backward of j done: activation freed, gradients sent to producers
                cur[d] -= alloc[j]
                for k in range(pred_ptr[j], pred_ptr[j + 1]):
                    p = pred_idx[k]
                    dp = dev[p]
                    if dp == d:
                        rem[n + p] -= 1
                        if rem[n + p] == 0:
                            queue[dp, qtail[dp]] = n + p
                            qtail[dp] += 1
                    else:
                        cid = copy_id[p * D + d]
                        copy_left[cid] -= 1
                        if copy_left[cid] == 0:
                            cur[d] -= out_bytes[p]
                            link = d * D + dp
                            start = max(link_free[link], now)
                            end = start + lat[d, dp] + out_bytes[p] / bw[d, dp]
                            link_free[link] = end
                            copy_time[cid, 2] = start
                            copy_time[cid, 3] = end
                            hsize = _heap_push(ht, hs, he, hsize, end, seq, 2 * n + 2 * cid + 1)
                            seq += 1
            newly = -1 - d  # the device that just finished takes its next task below
        else:
            cid = (ev - 2 * n) // 2
            j = copy_src[cid]
            dc = copy_dst[cid]
            if (ev - 2 * n) % 2 == 0:  # forward copy arrived on dc
                cur[dc] += out_bytes[j]
                if cur[dc] > peak[dc]:
                    peak[dc] = cur[dc]
                for k in range(succ_ptr[j], succ_ptr[j + 1]):
                    c = succ_idx[k]
                    if dev[c] == dc:
                        rem[c] -= 1
                        if rem[c] == 0:
                            queue[dc, qtail[dc]] = c
                            qtail[dc] += 1
            else:  # summed gradient arrived back on j's device
                dj = dev[j]
                rem[n + j] -= 1
                if rem[n + j] == 0:
                    queue[dj, qtail[dj]] = n + j
                    qtail[dj] += 1
        if newly < 0:
            busy[-1 - newly] = False
    return now, peak, ncopy


@dataclass
class SimResult:
    """Outcome of one simulated training step."""

    step_time: float  # seconds
    peak_memory: np.ndarray  # bytes per device (parameters, gradients, optimizer state, activations)
    memory_limit: np.ndarray  # bytes per device
    valid: bool  # False when a device runs out of memory
    op_device: np.ndarray  # int64 [N]
    task_start: np.ndarray  # [2N] forward ops then backward ops
    task_end: np.ndarray
    copies: np.ndarray  # [C, 6]: producer op, destination device, fwd start, fwd end, bwd start, bwd end

    @property
    def oom_devices(self) -> list[int]:
        """Indices of devices over their memory."""
        return [int(d) for d in np.flatnonzero(self.peak_memory > self.memory_limit)]


class Simulator:
    """Precomputes the graph's topology once; simulates any op -> device assignment quickly."""

    def __init__(self, graph: OpGraph, cluster: Cluster, optimizer_state_factor: float = 2.0) -> None:
        self.graph, self.cluster = graph, cluster
        n = graph.num_ops
        src, dst = graph.edges
        order = np.lexsort((src, dst))
        self.pred_idx = src[order].astype(np.int64)
        self.pred_ptr = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=n))]).astype(np.int64)
        order = np.lexsort((dst, src))
        self.succ_idx = dst[order].astype(np.int64)
        self.succ_ptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))]).astype(np.int64)
        flops, overhead = cluster.array("flops"), cluster.array("op_overhead")
        busy = ~graph.trivial
        self.fwd_time = graph.fwd_flops[:, None] / flops[None, :] + busy[:, None] * overhead[None, :]
        self.bwd_time = graph.bwd_flops[:, None] / flops[None, :] + busy[:, None] * overhead[None, :]
        self.alloc = np.where(graph.trivial, 0.0, graph.out_bytes)
        self.out_bytes = graph.out_bytes.astype(np.float64)
        self.state_factor = 2.0 + optimizer_state_factor
        self.memory = cluster.array("memory")
        self.bw = np.ascontiguousarray(cluster.bandwidth, dtype=np.float64)
        self.lat = np.ascontiguousarray(cluster.latency, dtype=np.float64)
        self._rows = np.arange(n)
        e = graph.edges.shape[1]
        self._start, self._end = np.zeros(2 * n), np.zeros(2 * n)
        self._csrc, self._cdst = np.zeros(e + 1, np.int64), np.zeros(e + 1, np.int64)
        self._ctime = np.zeros((e + 1, 4))

    def static_memory(self, op_device: np.ndarray) -> np.ndarray:
        """Parameter, gradient and optimizer-state bytes per device."""
        w = np.bincount(op_device, weights=self.graph.param_bytes, minlength=self.cluster.num_devices)
        return w * self.state_factor

    def _run(self, op_device: np.ndarray) -> tuple[float, np.ndarray]:
        dev = np.ascontiguousarray(op_device, dtype=np.int64)
        if dev.shape != (self.graph.num_ops,) or dev.min() < 0 or dev.max() >= self.cluster.num_devices:
            raise ValueError("op_device must hold a device index in [0, D) for every op")
        t, peak, self._ncopy = _simulate(
            dev,
            self.fwd_time,
            self.bwd_time,
            self.alloc,
            self.out_bytes,
            self.pred_ptr,
            self.pred_idx,
            self.succ_ptr,
            self.succ_idx,
            self.bw,
            self.lat,
            self._start,
            self._end,
            self._csrc,
            self._cdst,
            self._ctime,
        )
        return float(t), peak + self.static_memory(dev)

    def step_time(self, op_device: np.ndarray) -> tuple[float, np.ndarray]:
        """Fast path: (step time in seconds, peak memory per device in bytes)."""
        return self._run(op_device)

    def simulate(self, op_device: np.ndarray) -> SimResult:
        """Full result, with the timeline of every op and transfer."""
        t, peak = self._run(op_device)
        c = self._ncopy
        copies = np.column_stack([self._csrc[:c], self._cdst[:c], self._ctime[:c]])
        return SimResult(
            step_time=t,
            peak_memory=peak,
            memory_limit=self.memory.copy(),
            valid=bool(np.all(peak <= self.memory)),
            op_device=np.asarray(op_device).copy(),
            task_start=self._start.copy(),
            task_end=self._end.copy(),
            copies=copies,
        )
