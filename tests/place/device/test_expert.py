"""The `expert` baseline on hand-made models whose right hand placement is known."""

import numpy as np
import pytest
import torch
from torch import nn

from moeplace.place.device.baselines import HEURISTICS, layer_split
from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.expert import expert, stack_split
from moeplace.place.device.models import build_benchmark
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.trace import trace_graph


def _cluster(devices: list[tuple[str, float, float]], bandwidth: float = 10e9) -> object:
    """Devices as (name, FLOP/s, memory bytes), all linked alike."""
    return load_cluster({
        "name": "hand",
        "devices": [{"name": n, "kind": "gpu", "flops": f, "memory": m} for n, f, m in devices],
        "links": [{"between": "all", "bandwidth": bandwidth, "latency": 10e-6}],
    })


def _problem(module: nn.Module, x: torch.Tensor, cluster) -> DevicePlacementProblem:
    return DevicePlacementProblem(trace_graph(module.to("meta"), (x,)), cluster)


class SumLoss(nn.Module):
    """A network whose output, summed, is the training loss."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).sum()


class TwoTowers(nn.Module):
    """Two independent stacks of linear layers joined at the top."""

    def __init__(self, d: int = 1024, depth: int = 4) -> None:
        super().__init__()
        self.left = nn.Sequential(*[nn.Linear(d, d) for _ in range(depth)])
        self.right = nn.Sequential(*[nn.Linear(d, d) for _ in range(depth)])
        self.head = nn.Linear(2 * d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.left(x), self.right(x)], dim=1)).sum()


@pytest.mark.parametrize("gpus", [2, 4])
def test_two_towers_at_least_as_fast_as_one_tower_per_gpu(gpus):
    gpu = (1e12, 16e9)
    prob = _problem(TwoTowers(), torch.zeros(512, 1024, device="meta"),
                    _cluster([(f"gpu{i}", *gpu) for i in range(gpus)]))
    g = prob.graph
    by_hand = np.array([1 if name.startswith("right") else 0 for name in g.group_names])  # the rest on gpu0
    hand = prob.simulate(by_hand).step_time
    p = expert(prob)
    assert prob.simulate(p).valid and prob.simulate(p).step_time <= hand * (1 + 1e-9)
    assert hand < prob.simulate(HEURISTICS["single"](prob)).step_time
    if gpus == 4:  # the old layer split cut each tower over two GPUs and lost to the hand split
        assert prob.simulate(layer_split(prob)).step_time > hand


def test_chain_with_one_heavy_layer_stays_on_one_gpu():
    # a chain has no parallel work in a training step: any split only adds transfers
    layers = [nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4096), nn.ReLU(), nn.Linear(4096, 4096),
              nn.ReLU(), nn.Linear(4096, 256), nn.ReLU(), nn.Linear(256, 1)]
    gpu = (1e12, 16e9)
    prob = _problem(SumLoss(nn.Sequential(*layers)), torch.zeros(256, 256, device="meta"),
                    _cluster([("gpu0", *gpu), ("gpu1", *gpu), ("gpu2", *gpu)]))
    p = expert(prob)
    assert len(set(p.tolist())) == 1
    assert len(set(layer_split(prob).tolist())) == 3  # the old layer split used every GPU


def test_model_that_fits_one_device_only_goes_there():
    # each 4096 x 4096 layer holds 16.8 M parameters x 4 B x (weights + grads + 2 Adam states) = 268 MB:
    # none fits on the two fast 100-MB devices, all fit on the slow 40-GB one
    net = nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(4)])
    prob = _problem(SumLoss(net), torch.zeros(64, 4096, device="meta"),
                    _cluster([("fast0", 10e12, 100e6), ("fast1", 10e12, 100e6), ("big", 1e12, 40e9)]))
    p = expert(prob)
    assert set(p.tolist()) == {2}
    assert prob.simulate(p).valid
    assert not prob.simulate(layer_split(prob)).valid  # the old split ignored memory


def test_layer_per_gpu_follows_the_translation_models_practice():
    m, x = build_benchmark("nmt4", "tiny")
    prob = DevicePlacementProblem(trace_graph(m, x), load_cluster("k80x4"))
    p = stack_split(prob, [1, 2, 3, 4])
    dev = {}
    g = prob.graph
    for i in range(g.num_ops):
        dev.setdefault(g.layer[i], set()).add(int(p[g.group[i]]))
    for i in range(4):  # encoder layer i and decoder layer i on GPU i
        assert dev[f"encoder.{i}"] == dev[f"decoder.{i}"] == {i + 1}
    assert dev["embed_src"] == dev["embed_tgt"] == {1}  # embeddings with the first layer
    assert dev["attention"] == dev["proj"] == {4}  # attention and softmax with the last


@pytest.mark.parametrize("cluster", ["k80x4", "hetero"])
def test_expert_never_loses_to_a_single_device_or_the_layer_split(cluster):
    m, x = build_benchmark("inception", "tiny")
    prob = DevicePlacementProblem(trace_graph(m, x), load_cluster(cluster))

    def cost(p: np.ndarray) -> float:
        r = prob.simulate(p)
        return prob.cost_of(r.step_time, r.peak_memory)

    best = cost(expert(prob))
    for d in range(prob.num_slots):
        assert best <= cost(np.full(prob.num_nodes, d))
    assert best <= cost(layer_split(prob))
