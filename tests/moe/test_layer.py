"""The layer as a module: argument checks, shapes, dtypes, shared/fine-grained experts, stats, helpers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moeplace.moe import MoE, aux_loss, grouped_linear, moe_stats

from .reference import dense_moe, keep_top_k_softmax, topk_mask

D, H, E, K = 8, 16, 6, 2


def _softmax_layer(**kw) -> MoE:
    torch.manual_seed(0)
    return MoE(D, H, E, K, router="softmax_topk", **kw).eval()


def _softmax_gates(layer, x):
    probs = torch.softmax(x @ layer.router.w_gate, -1)
    kept = torch.where(topk_mask(probs, layer.k), probs, torch.zeros_like(probs))
    return kept / kept.sum(-1, keepdim=True)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"k": 7}, "k"), ({"k": 0}, "k"), ({"num_experts": 0}, "num_experts"), ({"router": "nope"}, "router"),
     ({"activation": "nope"}, "activation"), ({"capacity_factor": 0.0}, "capacity_factor"),
     ({"expert_granularity": 5}, "expert_granularity"), ({"num_shared_experts": -1}, "num_shared_experts")],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    args = {"d_model": D, "d_hidden": H, "num_experts": E, "k": K, **kwargs}
    with pytest.raises(ValueError, match=name):
        MoE(**args)


def test_bad_inputs_raise_value_error_naming_x():
    layer = _softmax_layer()
    for bad in (torch.randn(4, D + 1), torch.tensor([[float("nan")] * D]), torch.full((2, D), float("inf")),
                torch.ones(3, D, dtype=torch.long), torch.randn(0, D)):
        with pytest.raises(ValueError, match="x"):
            layer(bad)


def test_any_leading_dimensions():
    layer = _softmax_layer()
    x = torch.randn(2, 3, 5, D)
    y = layer(x)
    assert y.shape == x.shape
    flat = x.reshape(-1, D)
    torch.testing.assert_close(y.reshape(-1, D), dense_moe(layer, flat, _softmax_gates(layer, flat)),
                               atol=1e-5, rtol=1e-5)


def test_bfloat16_matches_float32_reference():
    layer = _softmax_layer()
    x = torch.randn(32, D)
    ref = dense_moe(layer, x, _softmax_gates(layer, x))
    y = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.05)
    y.float().sum().backward()
    assert layer.experts.w1.grad.dtype == torch.bfloat16


def test_shared_and_fine_grained_experts():
    torch.manual_seed(0)
    layer = MoE(D, H, E, K, router="softmax_topk", num_shared_experts=2, expert_granularity=2).eval()
    assert (layer.num_experts, layer.k, layer.d_hidden) == (2 * E, 2 * K, H // 2)
    assert layer.experts.w1.shape == (2 * E, D, H // 2)
    assert layer.shared.fc.out_features == 2 * (H // 2)
    x = torch.randn(20, D)
    routed = dense_moe(layer, x, _softmax_gates(layer, x))
    shared = F.linear(F.relu(F.linear(x, layer.shared.fc.weight, layer.shared.fc.bias)),
                      layer.shared.proj.weight, layer.shared.proj.bias)
    torch.testing.assert_close(layer(x), routed + shared, atol=1e-5, rtol=1e-5)
    per_expert = 4 * D * (H // 2)
    assert layer.active_flops_per_token() == 2 * D * 2 * E + (2 * K + 2) * per_expert


def test_shared_experts_honour_bias_false():
    layer = MoE(D, H, E, K, router="softmax_topk", num_shared_experts=1, bias=False)
    assert layer.shared.fc.bias is None and layer.shared.proj.bias is None
    assert layer.experts.b1 is None and layer.experts.b2 is None
    x = torch.randn(6, D)
    expected = F.relu(x @ layer.shared.fc.weight.t()) @ layer.shared.proj.weight.t()
    torch.testing.assert_close(layer.shared(x), expected)


def test_load_statistics_are_population_cv():
    layer = MoE(D, H, 4, 1, router="softmax_topk")
    layer(torch.randn(40, D))
    routed = torch.tensor(layer.stats["tokens_per_expert"], dtype=torch.float64)
    expected = float(routed.std(unbiased=False) / routed.mean())  # dropless: routed = computed
    assert abs(layer.stats["cv_load"] - expected) < 1e-5


def test_active_flops_per_token_noisy_counts_both_gating_matmuls():
    layer = MoE(512, 1024, 64, 4)
    assert layer.active_flops_per_token() == 2 * (2 * 512 * 64) + 4 * (2 * 512 * 1024 * 2)


def test_stats_match_independent_count():
    layer = _softmax_layer()
    x = torch.randn(40, D)
    layer(x)
    gates = _softmax_gates(layer, x)
    counts = (gates > 0).sum(0).numpy().astype(float)
    imp = gates.sum(0).detach().numpy()
    s = layer.stats
    assert s["tokens_per_expert"] == counts.astype(int).tolist()
    np.testing.assert_allclose(s["cv_load"], counts.std() / counts.mean(), rtol=1e-5)
    np.testing.assert_allclose(s["cv_importance"], imp.std() / imp.mean(), rtol=1e-5)
    np.testing.assert_allclose(s["max_over_mean_load"], counts.max() / counts.mean(), rtol=1e-6)
    assert s["dropped_fraction"] == 0.0


def test_model_helpers_sum_aux_losses_and_list_stats():
    torch.manual_seed(0)
    model = torch.nn.Sequential(MoE(D, H, E, K), torch.nn.ReLU(), MoE(D, H, E, K, router="softmax_topk"))
    x = torch.randn(16, D)
    model(x).sum().backward()
    expected = model[0].aux_loss + model[2].aux_loss
    torch.testing.assert_close(aux_loss(model), expected)
    assert float(model[0].aux_loss.detach()) > 0  # noisy top-k with the paper's default weights
    stats = moe_stats(model)
    assert [s["name"] for s in stats] == ["0", "2"]
    assert sum(stats[1]["tokens_per_expert"]) == 16 * K


def test_experts_module_is_swappable():
    """A replacement expert bank with the contract's signature is used by the layer as is."""
    layer = _softmax_layer()

    class LoopExperts(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x_sorted, tokens_per_expert):
            out, start = [], 0
            for e, c in enumerate(tokens_per_expert.tolist()):
                rows = x_sorted[start : start + c]
                start += c
                ex = self.inner
                out.append(F.relu(rows @ ex.w1[e] + ex.b1[e]) @ ex.w2[e] + ex.b2[e])
            return torch.cat(out)

    x = torch.randn(12, D)
    y = layer(x)
    bank = layer.experts
    layer.experts = LoopExperts(bank)
    torch.testing.assert_close(layer(x), y, atol=1e-6, rtol=1e-6)


def test_grouped_linear_gradients_against_per_segment_reference():
    torch.manual_seed(0)
    counts = [3, 0, 5, 2]
    x = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: grouped_linear(x, w, b, counts), (x, w, b))
    y = grouped_linear(x, w, b, counts)
    ref = torch.cat([x[0:3] @ w[0] + b[0], x[3:8] @ w[2] + b[2], x[8:10] @ w[3] + b[3]])
    torch.testing.assert_close(y, ref)


def test_noisy_default_layer_reference_in_eval():
    torch.manual_seed(3)
    layer = MoE(D, H, E, K).eval()
    with torch.no_grad():
        layer.router.w_gate.normal_()
    x = torch.randn(9, D)
    gates = keep_top_k_softmax(x @ layer.router.w_gate, K)
    torch.testing.assert_close(layer(x), dense_moe(layer, x, gates), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("num_experts", "k"), [(1, 1), (4096, 8)])
def test_extreme_sizes_match_dense_reference(num_experts, k):
    torch.manual_seed(0)
    layer = MoE(4, 4, num_experts, k, router="softmax_topk").eval()
    x = torch.randn(64, 4)
    probs = torch.softmax(x @ layer.router.w_gate, -1)
    kept = torch.where(topk_mask(probs, k), probs, torch.zeros_like(probs))
    gates = kept / kept.sum(-1, keepdim=True)
    y = layer(x)
    torch.testing.assert_close(y, dense_moe(layer, x, gates), atol=1e-5, rtol=1e-5)
    y.sum().backward()
    assert layer.experts.w1.grad.shape == (num_experts, 4, 4)
