"""Small device-placement problems with a brute-force optimum, shared by the RL and local-search tests."""

import numpy as np

from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.graph import OpGraph
from moeplace.place.device.problem import DevicePlacementProblem


def branchy_problem() -> DevicePlacementProblem:
    """8 ops (a stem, three branches of unequal work, a join) on a fast GPU, a slow GPU and a CPU."""
    G = 1e9
    work = np.array([1, 4, 4, 3, 3, 2, 2, 1.0]) * G
    edges = np.array([[0, 0, 0, 1, 3, 5, 2, 4, 6], [1, 3, 5, 2, 4, 6, 7, 7, 7]])
    n = len(work)
    g = OpGraph(
        names=[f"o{i}" for i in range(n)], kinds=["x"] * n, fwd_flops=work, bwd_flops=2 * work,
        out_bytes=np.full(n, 0.2 * G), param_bytes=np.zeros(n), trivial=np.zeros(n, bool), edges=edges,
        anchor=np.full(n, -1), scope=[""] * n, layer=[""] * n, grouping="op",
    )
    c = load_cluster({
        "devices": [{"name": "fast", "flops": 4 * G, "memory": 1e12},
                    {"name": "slow", "flops": 2 * G, "memory": 1e12},
                    {"name": "cpu", "kind": "cpu", "flops": G, "memory": 1e12}],
        "links": [{"between": "all", "bandwidth": 2 * G, "latency": 0.01}],
    })
    return DevicePlacementProblem(g, c)


def symmetric_problem() -> DevicePlacementProblem:
    """9 ops of a random DAG with heavy transfers on three identical GPUs: moves and swaps get stuck."""
    G = 1e9
    r = np.random.default_rng(0)
    n = 9
    work = r.uniform(1, 4, n) * G
    edges = sorted({(int(j), i) for i in range(1, n) for j in r.integers(max(0, i - 3), i, 2)})
    g = OpGraph(
        names=[f"o{i}" for i in range(n)], kinds=["x"] * n, fwd_flops=work, bwd_flops=2 * work,
        out_bytes=r.uniform(0.2, 1.5, n) * G, param_bytes=np.zeros(n), trivial=np.zeros(n, bool),
        edges=np.array(edges).T, anchor=np.full(n, -1), scope=[""] * n, layer=[""] * n, grouping="op",
    )
    c = load_cluster({
        "devices": [{"name": f"gpu{i}", "flops": 4 * G, "memory": 1e12} for i in range(3)],
        "links": [{"between": "all", "bandwidth": 2 * G, "latency": 0.01}],
    })
    return DevicePlacementProblem(g, c)
