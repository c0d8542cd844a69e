"""Every router: the layer's output equals the dense reference sum_i G(x)_i·E_i(x), and gradients check."""

import math

import pytest
import torch

from moeplace.moe import MoE

from .reference import dense_moe, keep_top_k_softmax, topk_mask

T, D, H, E, K = 24, 8, 16, 6, 2


def _layer(router: str, k: int = K, dtype=torch.float32, **kw) -> MoE:
    torch.manual_seed(0)
    layer = MoE(D, H, E, k, router=router, **kw).to(dtype)
    with torch.no_grad():  # the paper's gates start at zero; give them values so routing is non-trivial
        layer.router.w_gate.normal_()
        if hasattr(layer.router, "w_noise"):
            layer.router.w_noise.normal_()
    return layer


def reference_gates(layer: MoE, x: torch.Tensor, router: str, noise: torch.Tensor | None = None):
    """G(x) [T, E] written from each router's definition."""
    r = layer.router
    logits = x @ r.w_gate
    if router == "noisy_topk":
        h = logits if noise is None else logits + noise * torch.nn.functional.softplus(x @ r.w_noise)
        return keep_top_k_softmax(h, layer.k)
    probs = torch.softmax(logits, dim=-1)
    if router == "softmax_topk":
        kept = torch.where(topk_mask(probs, layer.k), probs, torch.zeros_like(probs))
        return kept / kept.sum(-1, keepdim=True)
    if router == "switch":
        return torch.where(topk_mask(probs, 1), probs, torch.zeros_like(probs))
    if router == "expert_choice":
        C = math.ceil(x.shape[0] * layer.k / E)
        return torch.where(topk_mask(probs.t(), C).t(), probs, torch.zeros_like(probs))
    if router == "bias_balanced":
        s = torch.sigmoid(logits)
        chosen = topk_mask(s + r.expert_bias, layer.k)
        kept = torch.where(chosen, s, torch.zeros_like(s))
        return kept / kept.sum(-1, keepdim=True)
    raise AssertionError(router)


ROUTERS = ["noisy_topk", "softmax_topk", "switch", "expert_choice", "bias_balanced"]


@pytest.mark.parametrize("router", ROUTERS)
def test_output_equals_dense_reference(router):
    k = 1 if router == "switch" else K
    layer = _layer(router, k).eval()
    if router == "bias_balanced":
        layer.router.expert_bias.copy_(torch.linspace(-0.3, 0.3, E))  # selection must use the bias
    x = torch.randn(3, T // 3, D)
    y = layer(x)
    assert y.shape == x.shape
    ref = dense_moe(layer, x.reshape(-1, D), reference_gates(layer, x.reshape(-1, D), router))
    torch.testing.assert_close(y.reshape(-1, D), ref, atol=1e-5, rtol=1e-5)


def test_noisy_topk_training_output_with_fixed_noise():
    layer = _layer("noisy_topk").train()
    x = torch.randn(T, D)
    noise = torch.randn(T, E)
    layer.router.sample_noise = lambda shape, like: noise.to(like.dtype)
    ref = dense_moe(layer, x, reference_gates(layer, x, "noisy_topk", noise))
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("router", ROUTERS)
def test_gradcheck_float64(router):
    k = 1 if router == "switch" else K
    layer = _layer(router, k, dtype=torch.float64).eval()
    x = torch.randn(10, D, dtype=torch.float64, requires_grad=True)
    params = [layer.router.w_gate, layer.experts.w1, layer.experts.b1, layer.experts.w2, layer.experts.b2]

    # gradcheck through the layer with respect to the input (through gates and experts)
    assert torch.autograd.gradcheck(lambda x: layer(x), (x,), eps=1e-6, atol=1e-5)
    # and parameter gradients: compare autograd to the dense reference's autograd
    y = layer(x)
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), params)
    ref = dense_moe(layer, x, reference_gates(layer, x, router))
    ref_grads = torch.autograd.grad((ref * g).sum(), params)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_router_z_loss_every_router():
    x = torch.randn(T, D)
    for router in ROUTERS:
        k = 1 if router == "switch" else K
        with_z = _layer(router, k, z_loss_weight=0.5).eval()
        without = _layer(router, k).eval()
        with_z(x)
        without(x)
        logits = x @ with_z.router.w_gate
        expected = 0.5 * torch.logsumexp(logits, dim=-1).pow(2).mean()
        torch.testing.assert_close(with_z.aux_loss - without.aux_loss, expected, atol=1e-5, rtol=1e-5)


def test_switch_aux_loss_formula():
    layer = _layer("switch", 1, aux_loss_weight=0.01).eval()
    x = torch.randn(T, D)
    layer(x)
    probs = torch.softmax(x @ layer.router.w_gate, dim=-1)
    f = torch.stack([(probs.argmax(-1) == i).float().mean() for i in range(E)])
    expected = 0.01 * E * (f * probs.mean(0)).sum()
    torch.testing.assert_close(layer.aux_loss, expected)
    with pytest.raises(ValueError, match="k"):
        MoE(D, H, E, 2, router="switch")


def test_bias_balanced_bias_moves_by_sign_of_load_error_and_gates_ignore_it():
    layer = _layer("bias_balanced", bias_update_speed=0.01).train()
    x = torch.randn(T, D)
    chosen = topk_mask(torch.sigmoid(x @ layer.router.w_gate), K)
    load = chosen.sum(0).float()
    layer(x)
    expected = 0.01 * torch.sign(load.mean() - load)
    torch.testing.assert_close(layer.router.expert_bias, expected)
    layer.eval()
    layer.router.expert_bias.copy_(torch.tensor([5.0, 5.0, 0, 0, 0, 0]))  # force selection of 0 and 1
    y = layer(x)
    s = torch.sigmoid(x @ layer.router.w_gate)[:, :2]
    gates = torch.zeros(T, E)
    gates[:, :2] = s / s.sum(-1, keepdim=True)  # gate values use the affinities, not the bias
    torch.testing.assert_close(y, dense_moe(layer, x, gates), atol=1e-5, rtol=1e-5)


def test_softmax_topk_balance_loss_formula():
    layer = _layer("softmax_topk", aux_loss_weight=0.02).eval()
    x = torch.randn(T, D)
    layer(x)
    probs = torch.softmax(x @ layer.router.w_gate, dim=-1)
    chosen = topk_mask(probs, K)
    f = chosen.float().sum(0) / (T * K)  # fraction of assignments per expert
    torch.testing.assert_close(layer.aux_loss, 0.02 * E * (f * probs.mean(0)).sum())


def test_expert_choice_loads_equal_and_unchosen_tokens_counted():
    layer = _layer("expert_choice", capacity_factor=0.5).eval()
    x = torch.randn(T, D)
    layer(x)
    C = math.ceil(0.5 * T * K / E)
    assert layer.stats["tokens_per_expert"] == [C] * E
    probs = torch.softmax(x @ layer.router.w_gate, dim=-1)
    taken = topk_mask(probs.t(), C).t().any(-1)
    assert layer.stats["dropped_fraction"] == pytest.approx(1 - taken.float().mean().item())
