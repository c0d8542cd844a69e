"""The MoE layers on CUDA (marker `cuda`: `make test-cuda` on a machine with a GPU; deselected elsewhere).

References are independent of the code under test: the dense sum over every expert (float32, TF32 off),
the same layer on the CPU, and, for bfloat16, the float32 dense reference of the bfloat16-rounded weights.
"""

import copy

import pytest
import torch

from moeplace.moe import HierarchicalMoE, MoE

from .cuda_common import CUDA_MARKS, _no_tf32, hopper  # noqa: F401  (_no_tf32: autouse fixture)
from .reference import dense_moe
from .test_routers import ROUTERS, _layer, reference_gates

pytestmark = CUDA_MARKS
DEV = "cuda"


@pytest.mark.parametrize("router", ROUTERS)
def test_every_router_float32_on_cuda_equals_dense_reference_and_cpu(router):
    k = 1 if router == "switch" else 2
    cpu = _layer(router, k).eval()
    gpu = copy.deepcopy(cpu).to(DEV)
    x = torch.randn(96, 8)
    xg = x.to(DEV, copy=True).requires_grad_()
    y = gpu(xg)
    assert y.device.type == DEV
    ref = dense_moe(gpu, xg.detach(), reference_gates(gpu, xg.detach(), router))
    torch.testing.assert_close(y.detach(), ref, atol=1e-5, rtol=1e-5)
    xc = x.clone().requires_grad_()
    yc = cpu(xc)
    torch.testing.assert_close(y.detach().cpu(), yc.detach(), atol=1e-5, rtol=1e-5)
    g = torch.randn_like(yc)
    (yc * g).sum().backward()
    (y * g.to(DEV)).sum().backward()
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, atol=1e-4, rtol=1e-4)
    for (name, pg), pc in zip(gpu.named_parameters(), cpu.parameters()):
        if pc.grad is not None:
            torch.testing.assert_close(pg.grad.cpu(), pc.grad, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("router", ROUTERS)
def test_every_router_bfloat16_on_cuda_is_close_to_float32_reference(router):
    k = 1 if router == "switch" else 2
    layer = _layer(router, k).eval().to(DEV, torch.bfloat16)
    ref32 = copy.deepcopy(layer).float()  # the bfloat16 weights, exactly, in float32
    x = torch.randn(256, 8, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    assert layer.experts._use_grouped_mm(x) == hopper()  # the fused grouped GEMM where it is fast
    y = layer(x)
    assert y.dtype == torch.bfloat16
    x32 = x.detach().float()
    gates = reference_gates(ref32, x32, router)
    chosen = layer.last_routing  # near-ties may pick other experts in bfloat16: compare where both agree
    same = torch.zeros_like(gates, dtype=torch.bool)
    same[chosen.token_index, chosen.expert_index] = True
    agree = ((gates > 0) == same).all(-1)
    assert agree.float().mean() > 0.9
    ref = dense_moe(ref32, x32, gates)
    torch.testing.assert_close(y.float()[agree], ref[agree], atol=3e-2, rtol=3e-2)
    y.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
    assert torch.isfinite(x.grad).all()


def test_bfloat16_fused_grouped_mm_equals_the_per_expert_loop():
    torch.manual_seed(0)
    fused = MoE(64, 128, 16, 2, router="softmax_topk").to(DEV, torch.bfloat16)
    loop = copy.deepcopy(fused)
    loop.experts.grouped_mm = False
    loop.dispatch = "sorted"  # the per-expert loop, not the padded layout that auto picks without fusion
    x = torch.randn(4, 128, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    yf, yl = fused(x), loop(x2)
    g = torch.randn_like(yf)
    (yf * g).sum().backward()
    (yl * g).sum().backward()
    # both round to bfloat16 at different points (1.4% of the output's norm seen on an H200): compare
    # relative to each tensor's norm; a wrong offset or bias row would be off by the norm itself
    pairs = [(yf, yl), (x.grad, x2.grad)] + [(a.grad, b.grad) for a, b in zip(fused.parameters(),
                                                                              loop.parameters())]
    for a, b in pairs:
        assert (a.float() - b.float()).norm() <= 3e-2 * b.float().norm()


def test_capacity_drops_on_cuda_equal_the_cpu_drops():
    cpu = _layer("softmax_topk", 2, capacity_factor=0.5).eval()
    gpu = copy.deepcopy(cpu).to(DEV)
    x = torch.randn(200, 8)
    torch.testing.assert_close(gpu(x.to(DEV)).cpu(), cpu(x), atol=1e-5, rtol=1e-5)
    assert torch.equal(gpu.last_dispatch.kept.cpu(), cpu.last_dispatch.kept)
    assert int(gpu.last_dispatch.num_dropped) == int(cpu.last_dispatch.num_dropped) > 0
    assert gpu.stats["tokens_per_expert"] == cpu.stats["tokens_per_expert"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_4096_experts_k8_on_cuda_equal_the_dense_reference(dtype):
    """4,096 experts: the fused path (bfloat16) splits them into chunks of MAX_GROUPS per call."""
    torch.manual_seed(0)
    layer = MoE(16, 32, 4096, 8, router="softmax_topk").eval().to(DEV, dtype)
    x = torch.randn(64, 16, device=DEV, dtype=dtype)
    with torch.no_grad():
        layer.router.w_gate.normal_()
    y = layer(x)
    assert torch.isfinite(y).all() and sum(layer.stats["tokens_per_expert"]) == 64 * 8
    if dtype == torch.float32:  # bfloat16 near-ties may choose other experts than the float32 reference
        gates = reference_gates(layer, x, "softmax_topk")
        torch.testing.assert_close(y, dense_moe(layer, x, gates), atol=1e-5, rtol=1e-5)


def test_hierarchical_moe_on_cuda_equals_cpu():
    torch.manual_seed(0)
    cpu = HierarchicalMoE(8, 16, 4, 3, 2, 2).eval()
    with torch.no_grad():
        for p in (cpu.primary.w_gate, cpu.w_gate):
            p.normal_()
    gpu = copy.deepcopy(cpu).to(DEV)
    x = torch.randn(50, 8)
    torch.testing.assert_close(gpu(x.to(DEV)).cpu(), cpu(x), atol=1e-5, rtol=1e-5)
