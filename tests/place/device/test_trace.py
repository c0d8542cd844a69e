"""Op graphs from nn.Modules: FLOPs vs formulas, bytes, groups, errors, JSON round trip."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moeplace.errors import InputError
from moeplace.place.device.graph import OpGraph, coarsen
from moeplace.place.device.models import BENCHMARKS, build_benchmark
from moeplace.place.device.trace import trace_graph


def op(g: OpGraph, kind: str) -> int:
    return g.kinds.index(kind)


class Wrap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


def test_linear_conv_lstm_flops_match_formulas():
    g = trace_graph(Wrap(nn.Linear(8, 16)), (torch.randn(5, 8),))
    i = op(g, "linear")
    assert g.fwd_flops[i] == 2 * 5 * 8 * 16 + 5 * 16
    assert g.bwd_flops[i] == 2 * g.fwd_flops[i]
    assert g.param_bytes[i] == (8 * 16 + 16) * 4
    assert g.out_bytes[i] == 5 * 16 * 4
    g = trace_graph(Wrap(nn.Conv2d(3, 4, 3, padding=1, bias=False)), (torch.randn(2, 3, 6, 6),))
    assert g.fwd_flops[op(g, "conv2d")] == 2 * (2 * 4 * 6 * 6) * 3 * 9
    g = trace_graph(Wrap(nn.LSTMCell(6, 5)), (torch.randn(3, 6),))
    assert g.fwd_flops[op(g, "lstmcell")] == 2 * 3 * (6 + 5) * 4 * 5 + 2 * 3 * 4 * 5 + 5 * 3 * 5


class Fns(nn.Module):
    def forward(self, a, b, q, k, v):
        return (a @ b).sum() + F.scaled_dot_product_attention(q, k, v).sum() + (a + a).sum()


def test_matmul_attention_elementwise_flops():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 4, 5)
    q, k, v = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 6)
    g = trace_graph(Fns(), (a, b, q, k, v))
    assert g.fwd_flops[op(g, "matmul")] == 2 * 2 * 3 * 5 * 4
    assert g.fwd_flops[op(g, "scaled_dot_product_attention")] == 4 * (
        2 * 3 * 5 * 4 + 5 * 3 * 5 + 2 * 3 * 5 * 6
    )
    adds = [i for i, k in enumerate(g.kinds) if k == "add" and g.out_bytes[i] == 2 * 3 * 4 * 4]
    assert len(adds) == 1 and g.fwd_flops[adds[0]] == 2 * 3 * 4


def test_multihead_attention_leaf_formula():
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(3, 4, 8)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = m

        def forward(self, x):
            return self.att(x, x, x)[0]

    g = trace_graph(M(), (x,))
    proj = 2 * 3 * 8 * 8 * (4 + 2 * 4 + 4)
    att = 3 * 2 * (2 * 4 * 4 * 4 + 5 * 4 * 4 + 2 * 4 * 4 * 4)
    assert g.fwd_flops[op(g, "multiheadattention")] == proj + att


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(torch.relu(self.lin(x))).sum()


def test_module_called_twice_counts_parameters_once_and_is_co_located():
    g = trace_graph(Shared(), (torch.randn(2, 4),), grouping="op")
    calls = [i for i, k in enumerate(g.kinds) if k == "linear"]
    assert len(calls) == 2
    assert g.param_bytes.sum() == (16 + 4) * 4
    assert g.group[calls[0]] == g.group[calls[1]]
    relu = op(g, "relu")
    assert g.group[relu] != g.group[calls[0]]


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


def test_untraceable_model_names_the_line_and_reason():
    with pytest.raises(InputError, match=r"cannot trace Branchy at .*test_trace.py:\d+ `if x.sum\(\) > 0:`"):
        trace_graph(Branchy(), (torch.randn(3),))


def test_every_benchmark_traces_and_lstms_are_unrolled():
    for name in BENCHMARKS:
        m, x = build_benchmark(name, "tiny")
        g = trace_graph(m, x)
        assert g.num_ops > 20 and g.num_groups > 3
        assert np.all(g.edges[0] < g.edges[1])
        assert g.fwd_flops.sum() > 0
    m, x = build_benchmark("nmt4", "tiny")
    g = trace_graph(m, x)
    assert g.kinds.count("lstmcell") == 2 * 4 * m.steps
    layers = set(g.layer)
    assert {"encoder.0", "encoder.3", "decoder.0", "decoder.3", "attention", "proj"} <= layers


def test_moe_layer_is_one_op_with_its_own_flop_count():
    m, x = build_benchmark("moe_lstm", "tiny", device="cpu")
    g = trace_graph(m, x)
    moe = [i for i, k in enumerate(g.kinds) if k == "moe"]
    assert len(moe) == len(m.moe)
    tokens = x[0].numel()
    assert g.fwd_flops[moe[0]] == tokens * m.moe[0].active_flops_per_token()
    expected = sum(p.numel() * 4 for p in m.moe[0].parameters())
    assert g.param_bytes[moe[0]] == expected


def test_json_round_trip_and_coarsening(tmp_path):
    m, x = build_benchmark("nmt2", "tiny")
    g = trace_graph(m, x)
    g.save(tmp_path / "g.json")
    h = OpGraph.load(tmp_path / "g.json")
    assert h.names == g.names and np.array_equal(h.edges, g.edges) and np.array_equal(h.group, g.group)
    np.testing.assert_array_equal(h.fwd_flops, g.fwd_flops)
    layer = coarsen(g, "layer")
    assert layer.num_groups == len(set(g.layer)) < g.num_groups <= coarsen(g, "op").num_groups
    with pytest.raises(InputError, match="missing field 'edges'"):
        OpGraph.from_dict(
            {"names": [], "kinds": [], "fwd_flops": [], "bwd_flops": [], "out_bytes": [], "param_bytes": []}
        )
