"""Device placement as a PlacementProblem: nodes = co-location groups, slots = devices, cost = step time."""

from __future__ import annotations

import numpy as np

from moeplace.place.device.cluster import Cluster
from moeplace.place.device.graph import OpGraph
from moeplace.place.device.simulator import SimResult, Simulator


class DevicePlacementProblem:
    """Place each op group on a device; cost = simulated step time (s), out-of-memory penalised.

    An out-of-memory placement costs `oom_penalty` (10x the step time of the whole graph on the
    fastest device, ignoring memory) times (1 + total excess memory / total device memory): finite,
    above every valid placement's cost, and lower the closer the placement is to fitting. An
    incomplete placement costs twice that penalty.
    """

    def __init__(self, graph: OpGraph, cluster: Cluster, optimizer_state_factor: float = 2.0) -> None:
        self.graph, self.cluster = graph, cluster
        self.sim = Simulator(graph, cluster, optimizer_state_factor)
        self.serial_time = float(((graph.fwd_flops + graph.bwd_flops).sum()) / cluster.array("flops").max())
        self.oom_penalty = 10.0 * max(self.serial_time, 1e-6) + 1.0
        self.infeasible_penalty = 2.0 * self.oom_penalty
        self.evaluations = 0

    @property
    def num_nodes(self) -> int:
        """Number of op groups."""
        return self.graph.num_groups

    @property
    def num_slots(self) -> int:
        """Number of devices."""
        return self.cluster.num_devices

    def op_device(self, placement: np.ndarray) -> np.ndarray:
        """Expand a group placement `[G]` to a per-op device array `[N]`."""
        return np.asarray(placement, dtype=np.int64)[self.graph.group]

    def node_features(self) -> np.ndarray:
        """Per group: log FLOPs fwd/bwd, log output/param bytes, log op count, topological position."""
        g, G = self.graph, self.graph.num_groups
        cols = [
            np.bincount(g.group, weights=w, minlength=G)
            for w in (g.fwd_flops, g.bwd_flops, np.where(g.trivial, 0, g.out_bytes), g.param_bytes)
        ]
        count = np.bincount(g.group, minlength=G).astype(float)
        first = g.group_first_op().astype(float)
        feats = [np.log1p(c) / 30.0 for c in cols] + [np.log1p(count) / 5.0, first / max(g.num_ops, 1)]
        return np.stack(feats, axis=1).astype(np.float32)

    def node_edges(self) -> np.ndarray:
        """Group graph (producer group -> consumer group)."""
        return self.graph.group_edges()

    def slot_features(self) -> np.ndarray:
        """Per device: FLOP/s and memory relative to the largest, and whether it is a CPU."""
        c = self.cluster
        f, m = c.array("flops"), c.array("memory")
        cpu = np.array([d.kind == "cpu" for d in c.devices], dtype=float)
        return np.stack([f / f.max(), m / m.max(), cpu], axis=1).astype(np.float32)

    def legal_mask(self, placement: np.ndarray, node: int) -> np.ndarray:
        """Every device is legal (memory is checked by the simulator at the end)."""
        return np.ones(self.num_slots, dtype=bool)

    def simulate(self, placement: np.ndarray) -> SimResult:
        """Full simulation of a complete group placement."""
        return self.sim.simulate(self.op_device(placement))

    def cost_of(self, step_time: float, peak: np.ndarray) -> float:
        """Cost from a simulated step time and peak memory per device."""
        excess = np.maximum(peak - self.sim.memory, 0.0).sum()
        if excess > 0:
            return self.oom_penalty * (1.0 + excess / self.sim.memory.sum())
        return step_time

    def cost(self, placement: np.ndarray) -> float:
        """Simulated step time in seconds; OOM or incomplete placements get the penalty."""
        placement = np.asarray(placement, dtype=np.int64)
        if placement.min() < 0:
            return self.infeasible_penalty
        self.evaluations += 1
        t, peak = self.sim.step_time(self.op_device(placement))
        return self.cost_of(t, peak)

    def slot_occupancy(self, placement: np.ndarray) -> np.ndarray:
        """Parameter memory placed on each device as a fraction of its memory."""
        p = np.asarray(placement, dtype=np.int64)
        g = self.graph
        placed = p[g.group] >= 0
        used = (
            np.bincount(
                np.maximum(p[g.group], 0)[placed], weights=g.param_bytes[placed], minlength=self.num_slots
            )
            * self.sim.state_factor
        )
        return (used / self.sim.memory).astype(np.float32)
