"""The fused grouped-GEMM path (torch._grouped_mm): same outputs and gradients as a per-expert loop.

On CUDA it runs in bfloat16 on Hopper GPUs (tests/cuda); here it is forced on CPU in float32, which checks
the offsets, the per-row bias gather and empty experts against an independent reference.
"""

import copy

import pytest
import torch

from moeplace.moe import Experts, MoE
from moeplace.moe import experts as experts_module
from moeplace.moe.experts import fused_grouped_mm_available, grouped_mm_aligned

from .test_grouped import _reference_grads

E, D, H = 4, 8, 16  # 16-byte aligned rows in float32

pytestmark = pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="torch without _grouped_mm")


@pytest.mark.parametrize("counts", [[2, 3, 1, 4], [5, 0, 5, 0], [0, 0, 0, 7]])
def test_forced_grouped_mm_matches_per_expert_reference(counts):
    torch.manual_seed(0)
    bank = Experts(E, D, H, grouped_mm=True)
    x = torch.randn(sum(counts), D)
    g = torch.randn(sum(counts), D)
    assert bank._use_grouped_mm(x)
    y = bank(x, torch.tensor(counts))
    ref_out, start = [], 0
    for e, c in enumerate(counts):
        rows = x[start:start + c]
        start += c
        ref_out.append(torch.relu(rows @ bank.w1[e] + bank.b1[e]) @ bank.w2[e] + bank.b2[e])
    torch.testing.assert_close(y, torch.cat(ref_out), atol=1e-5, rtol=1e-5)
    (y * g).sum().backward()
    for p, r in zip((bank.w1, bank.b1, bank.w2, bank.b2), _reference_grads(bank, x, counts, g)):
        torch.testing.assert_close(p.grad, r, atol=1e-5, rtol=1e-5)


def test_more_experts_than_one_call_takes_go_in_chunks(monkeypatch):
    """With MAX_GROUPS=3, 8 experts take 3 calls (one chunk without rows): same as the per-expert loop."""
    monkeypatch.setattr(experts_module, "MAX_GROUPS", 3)
    counts = [2, 0, 3, 0, 0, 0, 4, 1]
    torch.manual_seed(3)
    fused = Experts(8, D, H, grouped_mm=True)
    loop = copy.deepcopy(fused)
    loop.grouped_mm = False
    x = torch.randn(sum(counts), D)
    g = torch.randn(sum(counts), D)
    yf, yl = fused(x, torch.tensor(counts)), loop(x, torch.tensor(counts))
    torch.testing.assert_close(yf, yl, atol=1e-5, rtol=1e-5)
    (yf * g).sum().backward()
    (yl * g).sum().backward()
    for a, b in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


def test_layer_with_forced_grouped_mm_equals_the_loop_layer():
    torch.manual_seed(1)
    layer = MoE(D, H, 6, 2, router="softmax_topk", capacity_factor=1.0)
    x = torch.randn(5, 7, D, requires_grad=True)
    y_loop = layer(x)
    y_loop.sum().backward()
    grads_loop = [p.grad.clone() for p in layer.parameters()] + [x.grad.clone()]
    layer.zero_grad()
    x.grad = None
    layer.experts.grouped_mm = True
    y_fused = layer(x)
    y_fused.sum().backward()
    torch.testing.assert_close(y_fused, y_loop, atol=1e-5, rtol=1e-5)
    for a, b in zip([p.grad for p in layer.parameters()] + [x.grad], grads_loop):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_auto_choice_stays_on_the_loop_off_cuda_and_unaligned_sizes_never_fuse():
    x = torch.randn(3, D, dtype=torch.bfloat16)
    assert not fused_grouped_mm_available(x, torch.zeros(E, D, H, dtype=torch.bfloat16))  # CPU
    assert not Experts(E, D, H)._use_grouped_mm(torch.randn(3, D))
    assert not grouped_mm_aligned(torch.zeros(E, 6, 16))  # 24-byte rows
    assert not Experts(E, 6, 5, grouped_mm=True)._use_grouped_mm(torch.randn(3, 6))
    assert not Experts(E, D, H, grouped_mm=True).double()._use_grouped_mm(torch.randn(3, D).double())
