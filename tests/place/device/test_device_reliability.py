"""Device placement never fails obscurely: a diverged placer stops (DivergenceError), calibration
takes any model `place device` takes, and a placement names only devices this machine has."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moeplace.errors import DivergenceError, InputError
from moeplace.place.device import colocrl as colocrl_module
from moeplace.place.device.apply import apply_placement, device_available
from moeplace.place.device.calibrate import calibrate, scalar_loss
from moeplace.place.device.rl_config import RLConfig
from moeplace.place.device.trace import trace_graph


def branchy_problem():
    """4 ops (a stem, two branches, a join) on two devices."""
    import numpy as np

    from moeplace.place.device.cluster import load_cluster
    from moeplace.place.device.graph import OpGraph
    from moeplace.place.device.problem import DevicePlacementProblem

    work = np.array([1, 3, 2, 1.0]) * 1e9
    edges = np.array([[0, 0, 1, 2], [1, 2, 3, 3]])
    g = OpGraph(names=[f"o{i}" for i in range(4)], kinds=["x"] * 4, fwd_flops=work, bwd_flops=2 * work,
                out_bytes=np.full(4, 1e8), param_bytes=np.zeros(4), trivial=np.zeros(4, bool), edges=edges,
                anchor=np.full(4, -1), scope=[""] * 4, layer=[""] * 4, grouping="op")
    c = load_cluster({"devices": [{"name": "a", "flops": 4e9, "memory": 1e12},
                                  {"name": "b", "flops": 2e9, "memory": 1e12}],
                      "links": [{"between": "all", "bandwidth": 2e9, "latency": 0.01}]})
    return DevicePlacementProblem(g, c)


def test_nan_costs_stop_the_placer_with_a_divergence_error(monkeypatch):
    monkeypatch.setattr(colocrl_module.CachedCost, "__call__", lambda self, p: float("nan"))
    with pytest.raises(DivergenceError, match=r"update 1 .*: loss is nan .*learning rate \(0.003\)"):
        colocrl_module.seq2seq_search(branchy_problem(), RLConfig(iterations=3), show_progress=False)


def test_nan_placer_weights_are_a_divergence_error_not_a_sampling_traceback(monkeypatch):
    real = colocrl_module.Seq2SeqPlacer.__init__

    def poisoned(self, *a, **kw):
        real(self, *a, **kw)
        with torch.no_grad():
            self.head.bias.fill_(float("nan"))

    monkeypatch.setattr(colocrl_module.Seq2SeqPlacer, "__init__", poisoned)
    with pytest.raises(DivergenceError, match=r"update 1 .*: the placer's device probabilities are NaN"):
        colocrl_module.seq2seq_search(branchy_problem(), RLConfig(iterations=3), show_progress=False)


def test_scalar_loss_sums_every_differentiable_output():
    w = torch.ones(3, requires_grad=True)
    a, b = w * 2, w[:2] * 3
    loss = scalar_loss((a, {"b": b, "ids": torch.arange(3)}, [None]))
    assert float(loss.detach()) == pytest.approx(2 * 3 + 3 * 2)  # by hand: 2+2+2 and 3+3
    assert float(scalar_loss(a.sum()).detach()) == 6.0
    with pytest.raises(InputError, match="no floating-point tensor"):
        scalar_loss(torch.arange(3))


def test_calibrate_takes_a_model_that_returns_a_tensor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))  # output [4, 4], not a loss
    r = calibrate(model, (torch.randn(4, 8),), repeats=1)
    assert r["ops"] == len(trace_graph(model, (torch.randn(4, 8),)).names)
    assert r["measured_step_ms"] > 0 and r["predicted_step_ms"] > 0


def _placement():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = (torch.randn(3, 8),)
    names = trace_graph(model, x).names
    return model, x, {n: ("gpu0" if i % 2 else "cpu") for i, n in enumerate(names)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_clear_error_or_an_explicit_fallback():
    model, x, op_device = _placement()
    with pytest.raises(InputError, match="'gpu0' maps to cuda:0, which this machine lacks") as e:
        apply_placement(model, x, op_device)
    assert "fallback='cpu'" in str(e.value) and "\n" not in str(e.value)
    placed = apply_placement(model, x, op_device, fallback="cpu")
    torch.testing.assert_close(placed(*x), model(*x))
    with pytest.raises(InputError, match="fallback device 'cuda:7'"):
        apply_placement(model, x, op_device, fallback="cuda:7")


def test_device_available_knows_cpu_and_counts_gpus():
    assert device_available("cpu") and device_available("meta")
    assert device_available("cuda:0") == (torch.cuda.is_available() and torch.cuda.device_count() > 0)
    assert not device_available(f"cuda:{torch.cuda.device_count()}")
