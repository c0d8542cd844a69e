"""The slot layout and the grouped GEMM on CUDA (marker `cuda`, `make test-cuda`): no host synchronisation
under torch.cuda.set_sync_debug_mode("error"), CUDA-graph capture, torch.compile, and the dispatch that
`auto` picks. References: the same layer on the CPU and the dense sum over every expert (TF32 off).
"""

import copy

import pytest
import torch

from moeplace.moe import MoE
from moeplace.moe.dispatch import Dispatch
from moeplace.moe.padded import SlotDispatch

from .cuda_common import CUDA_MARKS, _no_tf32, hopper  # noqa: F401  (_no_tf32: autouse fixture)
from .test_padded import D, E, H, T, _grads, _layer, dense_reference, kept_by_hand

pytestmark = CUDA_MARKS
DEV = "cuda"


@pytest.mark.parametrize(("router", "cf"),
                         [("softmax_topk", 0.75), ("expert_choice", 1.0), ("noisy_topk", None)])
def test_auto_dispatch_on_cuda_is_padded_and_equals_cpu_and_dense_reference(router, cf):
    cpu = _layer(router, capacity_factor=cf).eval()
    gpu = copy.deepcopy(cpu).to(DEV)
    x = torch.randn(T, D)
    xg = x.to(DEV).requires_grad_()
    y = gpu(xg)
    assert isinstance(gpu.last_dispatch, SlotDispatch)
    if cf is None:  # dropless float32: the largest load rounded up to 16 slots
        assert gpu.last_dispatch.capacity % 16 == 0
        assert gpu.last_dispatch.capacity >= max(gpu.stats["tokens_per_expert"])
    routing = gpu.last_routing
    cap = None if router == "expert_choice" or cf is None else gpu.last_dispatch.capacity
    ref = dense_reference(gpu, xg.detach(), routing, kept_by_hand(routing.expert_index.tolist(), cap))
    torch.testing.assert_close(y.detach(), ref, atol=1e-5, rtol=1e-5)
    xc = x.clone().requires_grad_()
    yc = cpu(xc)
    torch.testing.assert_close(y.detach().cpu(), yc.detach(), atol=1e-5, rtol=1e-5)
    yc.square().sum().backward()
    y.square().sum().backward()
    for a, b in zip(_grads(gpu, xg), _grads(cpu, xc)):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("router", ["softmax_topk", "noisy_topk", "expert_choice"])
def test_capacity_layer_forward_and_backward_never_synchronise(router, dtype):
    layer = _layer(router, capacity_factor=1.25, dtype=dtype).to(DEV).train()
    x = torch.randn(256, D, device=DEV, dtype=dtype, requires_grad=True)
    layer(x).float().sum().backward()  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = layer(x)
        y.float().square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert isinstance(layer.last_dispatch, SlotDispatch)
    assert torch.isfinite(x.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available() or not hopper(), reason="fused grouped GEMM: Hopper")
def test_dropless_bfloat16_grouped_mm_layer_never_synchronises():
    torch.manual_seed(0)
    layer = MoE(64, 128, 16, 2, router="softmax_topk", check_finite=False).to(DEV, torch.bfloat16)
    x = torch.randn(512, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    layer(x).float().sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        layer(x).float().square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert isinstance(layer.last_dispatch, Dispatch)  # the sorted path with torch._grouped_mm


def test_padded_forward_replays_as_a_cuda_graph():
    layer = _layer(capacity_factor=1.25).to(DEV).eval()
    static_x = torch.randn(T, D, device=DEV)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(2):
            layer(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_y = layer(static_x)
    fresh = torch.randn(T, D, device=DEV)
    static_x.copy_(fresh)
    graph.replay()
    with torch.no_grad():
        torch.testing.assert_close(static_y, layer(fresh), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padded_layer_compiles_fullgraph_with_inductor_on_cuda(dtype):
    layer = _layer(capacity_factor=1.25, dtype=dtype).to(DEV).eval()
    eager = copy.deepcopy(layer)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(T, D, device=DEV, dtype=dtype, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y_ref = compiled(x), eager(x2)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)
    y.float().square().sum().backward()
    y_ref.float().square().sum().backward()
    for a, b in zip(_grads(layer, x), _grads(eager, x2)):
        assert (a.float() - b.float()).norm() <= tol * (1 + b.float().norm())


def test_auto_dispatch_for_dropless_bfloat16_is_sorted_on_hopper_and_padded_elsewhere():
    layer = MoE(D, H, E, 2, router="softmax_topk").to(DEV, torch.bfloat16)
    layer(torch.randn(T, D, device=DEV, dtype=torch.bfloat16))
    assert isinstance(layer.last_dispatch, Dispatch if hopper() else SlotDispatch)
