"""The static slot layout (moe.padded): outputs and gradients equal the dense reference, the drops equal a
hand-counted queue, and forward + backward run without host synchronisation or data-dependent shapes.

References are independent of the code under test: every expert run on every token (one expert at a time)
and weighted by the gates, with the kept assignments counted by a plain Python loop in router order.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from moeplace.moe import MoE
from moeplace.moe.dispatch import Dispatch, expert_capacity, sort_by_expert
from moeplace.moe.padded import SlotDispatch, padded_moe, slot_by_expert

T, D, H, E = 40, 8, 16, 6


def _layer(router="softmax_topk", k=2, dtype=torch.float32, **kw) -> MoE:
    torch.manual_seed(0)
    layer = MoE(D, H, E, k, router=router, check_finite=False, **kw).to(dtype)
    with torch.no_grad():  # spread the routing (the noisy router's gates start at zero)
        layer.router.w_gate.normal_()
    return layer


def kept_by_hand(expert_index: list[int], capacity: int | None) -> list[bool]:
    """Walk the assignments in router order; an expert keeps its first `capacity` of them."""
    seen: dict[int, int] = {}
    kept = []
    for e in expert_index:
        seen[e] = seen.get(e, 0) + 1
        kept.append(capacity is None or seen[e] <= capacity)
    return kept


def dense_reference(layer: MoE, x: torch.Tensor, routing, kept: list[bool]) -> torch.Tensor:
    """sum over experts of G[t, e] · FFN_e(x[t]), every expert on every token, G from the kept gates."""
    ex = layer.experts
    gates = torch.zeros(x.shape[0], ex.num_experts, dtype=x.dtype, device=x.device)
    mask = torch.tensor(kept, device=x.device)
    gates = gates.index_put((routing.token_index[mask], routing.expert_index[mask]),
                            routing.gate.to(x.dtype)[mask], accumulate=True)
    out = torch.zeros_like(x)
    for e in range(ex.num_experts):
        h = x @ ex.w1[e] + (ex.b1[e] if ex.b1 is not None else 0)
        y = F.relu(h) @ ex.w2[e] + (ex.b2[e] if ex.b2 is not None else 0)
        out = out + gates[:, e:e + 1] * y
    return out


def _grads(layer: MoE, x: torch.Tensor) -> list[torch.Tensor]:
    return [x.grad] + [p.grad for p in layer.parameters() if p.grad is not None]


@pytest.mark.parametrize(("router", "cf", "bias"), [
    ("softmax_topk", 0.75, True), ("softmax_topk", 1.5, False), ("noisy_topk", 1.0, True),
    ("switch", 1.25, True), ("expert_choice", 1.0, True), ("softmax_topk", None, True)])
def test_padded_output_and_gradients_equal_dense_reference_float32(router, cf, bias):
    k = 1 if router == "switch" else 2
    layer = _layer(router, k, capacity_factor=cf, bias=bias).eval()
    x = torch.randn(T, D, requires_grad=True)
    routing = layer.router(x)
    if router == "expert_choice":
        capacity = routing.expert_index.numel() // E
    else:
        capacity = T if cf is None else expert_capacity(cf, T * k, E)  # dropless: C = T slots
    d = slot_by_expert(routing, E, capacity)
    kept = kept_by_hand(routing.expert_index.tolist(), None if router == "expert_choice" else capacity)
    assert d.kept.tolist() == kept
    assert int(d.num_dropped) == kept.count(False)
    if cf is not None and cf < 1:
        assert kept.count(False) > 0  # the case exercises drops
    g = torch.randn(T, D)
    (padded_moe(x, routing, d, layer.experts) * g).sum().backward(retain_graph=True)
    got = [t.clone() for t in _grads(layer, x)]
    layer.zero_grad()
    x.grad = None
    ref = dense_reference(layer, x, routing, kept)
    (ref * g).sum().backward()
    torch.testing.assert_close(padded_moe(x, routing, d, layer.experts), ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(got, _grads(layer, x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cf", [0.75, None])
def test_padded_bfloat16_is_close_to_the_float32_reference(cf):
    layer = _layer(capacity_factor=cf).to(torch.bfloat16)
    ref_layer = copy.deepcopy(layer).float()  # the same bfloat16 weights, exactly, in float32
    x = torch.randn(T, D, dtype=torch.bfloat16, requires_grad=True)
    routing = layer.router(x.detach())  # gates as constants: only dispatch, experts and combine differ
    capacity = T if cf is None else expert_capacity(cf, T * 2, E)
    d = slot_by_expert(routing, E, capacity)
    y = padded_moe(x, routing, d, layer.experts)
    assert y.dtype == torch.bfloat16
    x32 = x.detach().float().requires_grad_()
    routing32 = copy.copy(routing)
    routing32.gate = routing.gate.detach().float()
    ref = dense_reference(ref_layer, x32, routing32, kept_by_hand(routing.expert_index.tolist(), capacity))
    assert (y.float() - ref).norm() <= 2e-2 * ref.norm()
    g = torch.randn(T, D)
    (y.float() * g).sum().backward()
    (ref * g).sum().backward()
    pairs = [(x.grad, x32.grad)] + [(getattr(layer.experts, n).grad, getattr(ref_layer.experts, n).grad)
                                    for n in ("w1", "b1", "w2", "b2")]
    for a, b in pairs:
        assert (a.float() - b).norm() <= 3e-2 * b.norm()


def test_drops_equal_the_sorted_dispatch_and_layer_paths_agree():
    """Same kept assignments as `sort_by_expert`; MoE(dispatch="padded") equals MoE(dispatch="sorted")."""
    padded = _layer(capacity_factor=0.5, dispatch="padded")
    sorted_ = copy.deepcopy(padded)
    sorted_.dispatch = "sorted"
    x = torch.randn(5, 8, D, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    yp, ys = padded(x), sorted_(x2)
    assert isinstance(padded.last_dispatch, SlotDispatch) and isinstance(sorted_.last_dispatch, Dispatch)
    capacity = expert_capacity(0.5, 5 * 8 * 2, E)
    assert torch.equal(padded.last_dispatch.kept, sort_by_expert(padded.last_routing, E, capacity).kept)
    assert padded.stats == sorted_.stats
    torch.testing.assert_close(yp, ys, atol=1e-5, rtol=1e-5)
    yp.square().sum().backward()
    ys.square().sum().backward()
    for a, b in zip(_grads(padded, x), _grads(sorted_, x2)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_auto_dispatch_keeps_the_sorted_path_on_cpu_and_rejects_unknown_names():
    layer = _layer(capacity_factor=1.0)
    layer(torch.randn(T, D))
    assert isinstance(layer.last_dispatch, Dispatch)  # padded measured slower on CPU (docs/moe.md)
    with pytest.raises(ValueError, match="dispatch"):
        MoE(D, H, E, 2, dispatch="onehot")


# ----- host synchronisation ------------------------------------------------------------------------

SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique_dim",
            "aten::_unique2", "aten::unique_consecutive", "aten::masked_scatter"}


class HostSyncs(TorchDispatchMode):
    """Records every aten op; flags those that read a tensor's value on the host or size their output by
    its values (.item(), boolean-mask indexing, nonzero, repeat_interleave without output_size): what
    torch.cuda.set_sync_debug_mode("error") rejects on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        self.ops.append(name)
        if name in ("aten::index", "aten::index_put", "aten::index_put_"):
            masked = any(t is not None and t.dtype in (torch.bool, torch.uint8) for t in args[1])
        elif name == "aten::repeat_interleave":
            masked = kwargs.get("output_size") is None and len(args) < 3
        elif name == "aten::bincount":
            masked = kwargs.get("minlength", args[2] if len(args) > 2 else 0) == 0
        else:
            masked = name in SYNC_OPS
        if masked:
            self.syncs.append(name)
        return func(*args, **kwargs)


def _forward_backward_syncs(layer: MoE, x: torch.Tensor, monkeypatch) -> HostSyncs:
    """Run forward and backward under HostSyncs, with the Python-level value readers (.tolist(), bool(),
    ...) patched to record themselves too."""
    mode = HostSyncs()
    for method in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, method)

        def reader(self, *a, _m=method, _f=original):
            mode.syncs.append(f"Tensor.{_m}")
            return _f(self, *a)

        monkeypatch.setattr(torch.Tensor, method, reader)
    with mode:
        y = layer(x)
        n_forward = len(mode.ops)
        y.float().square().sum().backward()
    monkeypatch.undo()
    assert "aten::bmm" in mode.ops[n_forward:] or "aten::mm" in mode.ops[n_forward:]  # saw backward too
    return mode


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("router", "cf"), [("softmax_topk", 1.0), ("noisy_topk", 1.25),
                                            ("expert_choice", 1.0), ("softmax_topk", None)])
def test_padded_forward_and_backward_never_synchronise(router, cf, dtype, monkeypatch):
    layer = _layer(router, capacity_factor=cf, dispatch="padded", dtype=dtype).train()
    x = torch.randn(T, D, dtype=dtype, requires_grad=True)
    mode = _forward_backward_syncs(layer, x, monkeypatch)
    assert mode.syncs == []
    assert x.grad is not None and layer.experts.w1.grad is not None


def test_the_sync_detector_flags_the_sorted_capacity_path(monkeypatch):
    """Positive control: boolean-mask compaction and the per-expert loop's counts are caught."""
    layer = _layer(capacity_factor=0.5, dispatch="sorted")
    mode = _forward_backward_syncs(layer, torch.randn(T, D, requires_grad=True), monkeypatch)
    assert "aten::index" in mode.syncs  # order[keep_sorted]
    assert "Tensor.tolist" in mode.syncs  # tokens_per_expert.tolist()


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="torch without _grouped_mm")
def test_dropless_grouped_mm_path_never_synchronises(monkeypatch):
    """Dropless sorted dispatch + torch._grouped_mm (forced on CPU in float32): no host read in our code."""
    layer = _layer(dispatch="sorted")
    layer.experts.grouped_mm = True
    mode = _forward_backward_syncs(layer, torch.randn(T, D, requires_grad=True), monkeypatch)
    assert "aten::_grouped_mm" in mode.ops
    assert mode.syncs == []


def test_padded_layer_compiles_as_one_graph_and_matches_eager():
    """torch.compile(fullgraph=True) traces forward and backward without a graph break (static shapes)."""
    layer = _layer(capacity_factor=1.25, dispatch="padded").eval()
    eager = copy.deepcopy(layer)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(T, D, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y_ref = compiled(x), eager(x2)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-6)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for a, b in zip(_grads(layer, x), _grads(eager, x2)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert math.isfinite(float(layer.aux_loss.detach()))


def test_padded_with_shared_and_fine_grained_experts_equals_sorted_and_wrapped_experts_stay_sorted():
    torch.manual_seed(2)
    padded = MoE(D, H, 4, 1, router="softmax_topk", capacity_factor=1.0, num_shared_experts=1,
                 expert_granularity=2, activation="gelu", dispatch="padded")
    sorted_ = copy.deepcopy(padded)
    sorted_.dispatch = "sorted"
    x = torch.randn(3, 10, D)
    torch.testing.assert_close(padded(x), sorted_(x), atol=1e-5, rtol=1e-5)
    assert isinstance(padded.last_dispatch, SlotDispatch)
    assert padded.last_dispatch.capacity == 8  # ceil(1.0 · 30 tokens · k=2 / E=8)

    class Wrapped(torch.nn.Module):  # any module with the experts' forward signature (as expert parallelism)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x_sorted, tokens_per_expert):
            return self.inner(x_sorted, tokens_per_expert)

    padded.experts = Wrapped(padded.experts)
    torch.testing.assert_close(padded(x), sorted_(x), atol=1e-5, rtol=1e-5)
    assert isinstance(padded.last_dispatch, Dispatch)


def test_auto_on_cuda_choices_emulated_on_cpu(monkeypatch):
    """`auto` as on a GPU (Tensor.is_cuda patched to True; the fused grouped GEMM off, as for float32):
    capacity factor -> padded with C = capacity; dropless -> padded with C = the largest load rounded up
    to 16; both equal the dense reference."""
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    for cf in (0.75, None):
        layer = _layer(capacity_factor=cf).eval()
        layer.experts.grouped_mm = False
        x = torch.randn(T, D)
        y = layer(x)
        d, routing = layer.last_dispatch, layer.last_routing
        assert isinstance(d, SlotDispatch)
        loads = torch.bincount(routing.expert_index, minlength=E).tolist()
        expected = expert_capacity(cf, T * 2, E) if cf else max(16, -(-max(loads) // 16) * 16)
        assert d.capacity == expected
        kept = kept_by_hand(routing.expert_index.tolist(), expert_capacity(cf, T * 2, E) if cf else None)
        torch.testing.assert_close(y, dense_reference(layer, x, routing, kept), atol=1e-5, rtol=1e-5)
