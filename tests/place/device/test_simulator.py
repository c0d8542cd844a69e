"""Simulator vs timelines computed by hand on 3-5 op graphs; memory and OOM."""

import numpy as np
import pytest

from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.graph import OpGraph
from moeplace.place.device.models import build_benchmark
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.simulator import Simulator
from moeplace.place.device.trace import trace_graph

G = 1e9


def cluster(memory: float = 100 * G, latency: float = 0.5):
    """Two devices of 1 GFLOP/s, 1 GB/s link: 1e9 FLOPs or bytes take one second."""
    return load_cluster(
        {
            "name": "two",
            "devices": [
                {"name": "d0", "flops": G, "memory": memory},
                {"name": "d1", "flops": G, "memory": memory},
            ],
            "links": [{"between": "all", "bandwidth": G, "latency": latency}],
        }
    )


def graph(fwd, bwd, out, edges, params=None):
    n = len(fwd)
    return OpGraph(
        names=[f"op{i}" for i in range(n)],
        kinds=["x"] * n,
        fwd_flops=np.array(fwd) * G,
        bwd_flops=np.array(bwd) * G,
        out_bytes=np.array(out) * G,
        param_bytes=np.array(params or [0] * n) * G,
        trivial=np.zeros(n, bool),
        edges=np.array(edges, dtype=np.int64).T.reshape(2, -1),
        anchor=np.full(n, -1),
        scope=[""] * n,
        layer=[""] * n,
        grouping="op",
    )


def test_chain_on_one_device_is_sum_of_forward_and_backward_times():
    g = graph([1, 2, 3], [2, 4, 6], [0.1, 0.1, 0.1], [(0, 1), (1, 2)])
    r = Simulator(g, cluster()).simulate(np.zeros(3, np.int64))
    assert r.step_time == pytest.approx(18.0)
    # forward 0-1, 1-3, 3-6; backward of op2 6-12, op1 12-16, op0 16-18
    np.testing.assert_allclose(r.task_start, [0, 1, 3, 16, 12, 6])
    np.testing.assert_allclose(r.task_end, [1, 3, 6, 18, 16, 12])


def test_two_devices_with_a_transfer_each_way():
    g = graph([1, 2], [1, 2], [1, 0], [(0, 1)], params=[0.1, 0])
    r = Simulator(g, cluster()).simulate(np.array([0, 1]))
    # a 0-1; copy 1-2.5 (0.5 latency + 1 s); b 2.5-4.5; b' 4.5-6.5; grad back 6.5-8; a' 8-9
    assert r.step_time == pytest.approx(9.0)
    np.testing.assert_allclose(r.copies[0, 2:], [1.0, 2.5, 6.5, 8.0])
    # device 0: activation of a (1 GB) + params 0.1 GB x (weights, grads, 2 Adam states)
    np.testing.assert_allclose(r.peak_memory, [1.4 * G, 1.0 * G])
    assert r.valid


def test_transfer_overlaps_computation():
    g = graph([1, 1, 3], [1, 1, 1], [1, 0, 0], [(0, 1), (0, 2)])
    r = Simulator(g, cluster()).simulate(np.array([0, 1, 0]))
    # a 0-1; copy to d1 1-2.5 while c runs 1-4 on d0; b 2.5-3.5; b' 3.5-4.5; c' 4-5;
    # grad of b back 4.5-6; a' waits for it: 6-7
    assert r.step_time == pytest.approx(7.0)
    assert r.task_start[2] == pytest.approx(1.0) and r.task_end[2] == pytest.approx(4.0)


def test_output_sent_once_per_destination_device():
    g = graph([1, 1, 1], [0, 0, 0], [1, 0, 0], [(0, 1), (0, 2)])
    r = Simulator(g, cluster()).simulate(np.array([0, 1, 1]))
    assert len(r.copies) == 1
    # a 0-1, copy 1-2.5, b 2.5-3.5, c 3.5-4.5, backward: zero FLOPs, grad back 4.5-6, a' at 6
    assert r.step_time == pytest.approx(6.0)


def test_out_of_memory_makes_placement_invalid_and_penalised():
    g = graph([1, 1], [1, 1], [0.1, 0.1], [(0, 1)], params=[1.0, 1.0])
    c = cluster(memory=5 * G)
    p = DevicePlacementProblem(g, c)
    p.graph.regroup("op")
    single = p.simulate(np.array([0, 0]))
    split = p.simulate(np.array([0, 1]))
    assert not single.valid and single.oom_devices == [0]  # 2 GB params x 4 = 8 GB > 5 GB
    assert split.valid
    assert p.cost(np.array([0, 0])) > p.cost(np.array([0, 1]))
    assert p.cost(np.array([0, 0])) >= p.oom_penalty
    assert p.cost(np.array([0, -1])) >= p.cost(np.array([0, 0]))


def test_simulation_is_deterministic_on_a_random_graph():
    rng = np.random.default_rng(0)
    n = 200
    edges = sorted({(int(j), i) for i in range(1, n) for j in rng.integers(max(0, i - 10), i, 2)})
    g = graph(rng.uniform(0.1, 1, n), rng.uniform(0.1, 2, n), rng.uniform(0, 0.5, n), edges)
    s = Simulator(g, load_cluster("k80x4"))
    dev = rng.integers(0, 5, n)
    a, b = s.simulate(dev), s.simulate(dev)
    assert a.step_time == b.step_time
    # a lower bound: the busiest device's compute time
    per_dev = np.bincount(
        dev, weights=(g.fwd_flops + g.bwd_flops) / s.cluster.array("flops")[dev], minlength=5
    )
    assert a.step_time >= per_dev.max()


@pytest.fixture(scope="module")
def nmt4_tiny():
    module, inputs = build_benchmark("nmt4", size="tiny")
    return trace_graph(module, inputs, name="nmt4")


@pytest.mark.parametrize("preset", ["k80x4", "a100x8"])
def test_renumbering_identical_devices_leaves_step_time_unchanged(preset, nmt4_tiny):
    # in an LSTM stack many ops end at the same instant on different devices; the order in which
    # idle devices then start their next tasks must not depend on how the devices are numbered
    g = nmt4_tiny
    c = load_cluster(preset)
    s = Simulator(g, c)
    gpus = [i for i, d in enumerate(c.devices) if d.kind == "gpu"]
    rng = np.random.default_rng(0)
    for _ in range(20):
        dev = rng.choice(gpus, g.num_groups)[g.group]
        perm = np.arange(c.num_devices)
        perm[gpus] = rng.permutation(gpus)
        a, b = s.simulate(dev), s.simulate(perm[dev])
        assert a.step_time == b.step_time
        np.testing.assert_array_equal(a.peak_memory[gpus], b.peak_memory[perm[gpus]])
