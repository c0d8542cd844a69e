"""Calibrate the simulator against this CPU: measured per-op and step times vs the prediction.

The CPU is described by two measured numbers, its matmul FLOP/s and the fixed cost of a tiny op;
the simulator then predicts the single-device step time (forward + backward) and each op's forward
time. We report predicted / measured step time and the Spearman rank correlation of per-op times
(measured by running the traced graph with an fx Interpreter that times every node). A second
prediction uses an effective FLOP/s fitted to the measured forward pass, and is checked against
the measured forward + backward step.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import fx, nn

from moeplace.errors import InputError
from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.simulator import Simulator
from moeplace.place.device.trace import _ScopeTracer, trace_graph


class _TimingInterpreter(fx.Interpreter):
    """Runs a GraphModule, adding each node's wall time to `times[name]`."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.times: dict[str, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        t = time.perf_counter()
        out = super().run_node(n)
        self.times[n.name] = self.times.get(n.name, 0.0) + time.perf_counter() - t
        return out


def measure_cpu(size: int = 512, repeats: int = 5) -> tuple[float, float]:
    """(matmul FLOP/s, seconds of a tiny op) of this CPU, best of `repeats`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    x = torch.randn(8)
    tiny = min(_timed(lambda: [x + x for _ in range(100)]) for _ in range(repeats)) / 100
    return 2.0 * size**3 / best, tiny


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def scalar_loss(output: Any) -> torch.Tensor:
    """The model's output as one scalar to differentiate: a scalar loss as it is, otherwise the sum of
    every floating-point tensor in it (tensors, tuples, lists, dicts), so that, as the simulator
    assumes, the backward pass runs through every op that produced an output."""
    if isinstance(output, torch.Tensor) and output.dim() == 0 and output.requires_grad:
        return output
    parts: list[torch.Tensor] = []

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            if o.is_floating_point() and o.requires_grad:
                parts.append(o.float().sum())
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(output)
    if not parts:
        raise InputError("--model: its output holds no floating-point tensor that depends on the "
                         "parameters, so there is no backward pass to measure")
    return torch.stack(parts).sum()


def calibrate(module: nn.Module, inputs: tuple, repeats: int = 5) -> dict[str, Any]:
    """Measure `module` on this CPU and compare with the simulator's single-device prediction."""
    graph = trace_graph(module, inputs)
    flops, overhead = measure_cpu()
    cluster = load_cluster(
        {
            "name": "this-cpu",
            "devices": [
                {"name": "cpu", "kind": "cpu", "flops": flops, "memory": 1e15, "op_overhead": overhead}
            ],
            "links": [],
        }
    )
    sim = Simulator(graph, cluster)
    predicted = sim.simulate(np.zeros(graph.num_ops, np.int64)).step_time
    tracer = _ScopeTracer()
    traced = tracer.trace(module)
    gm = fx.GraphModule(tracer.root, traced)
    steps, per_op = [], []
    for _ in range(repeats + 1):
        module.zero_grad(set_to_none=True)
        t = time.perf_counter()
        loss = scalar_loss(module(*inputs))
        loss.backward()
        steps.append(time.perf_counter() - t)
        interp = _TimingInterpreter(gm)
        with torch.no_grad():
            interp.run(*inputs)
        per_op.append([interp.times.get(n, 0.0) for n in graph.names])
    measured = float(np.median(steps[1:]))  # the first run warms up
    op_measured = np.median(np.array(per_op[1:]), axis=0)
    busy = ~graph.trivial
    op_predicted = sim.fwd_time[:, 0]
    rho = (
        float(spearmanr(op_predicted[busy], op_measured[busy]).statistic) if busy.sum() > 2 else float("nan")
    )
    # A second CPU model with the FLOP/s fitted to the measured forward pass: checks the rest of the
    # model (backward = its own FLOPs, scheduling) on the step time it was not fitted to.
    fwd_compute = max(float(op_measured[busy].sum()) - overhead * int(busy.sum()), 1e-9)
    fitted = float(graph.fwd_flops.sum()) / fwd_compute
    cluster_fit = load_cluster(
        {
            "name": "this-cpu-fitted",
            "devices": [
                {"name": "cpu", "kind": "cpu", "flops": fitted, "memory": 1e15, "op_overhead": overhead}
            ],
            "links": [],
        }
    )
    predicted_fit = Simulator(graph, cluster_fit).simulate(np.zeros(graph.num_ops, np.int64)).step_time
    return {
        "model": graph.meta.get("model", type(module).__name__),
        "ops": graph.num_ops,
        "compute_ops": int(busy.sum()),
        "cpu_gflops": flops / 1e9,
        "op_overhead_us": overhead * 1e6,
        "predicted_step_ms": predicted * 1e3,
        "measured_step_ms": measured * 1e3,
        "predicted_over_measured": predicted / measured,
        "spearman_per_op": rho,
        "fitted_gflops": fitted / 1e9,
        "fitted_predicted_step_ms": predicted_fit * 1e3,
        "fitted_predicted_over_measured": predicted_fit / measured,
        "predicted_fwd_ms": float(op_predicted.sum() * 1e3),
        "measured_fwd_ms": float(op_measured.sum() * 1e3),
    }
