"""HierarchicalMoE (paper appendix B): output vs the two-level dense reference and its losses."""

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from moeplace.moe import HierarchicalMoE

from .reference import expert_outputs

T, D, H, A, B, KA, KB = 12, 6, 8, 3, 4, 2, 2


def _layer(dtype=torch.float64) -> HierarchicalMoE:
    torch.manual_seed(0)
    layer = HierarchicalMoE(D, H, A, B, KA, KB, w_importance=0.1, w_load=0.1).to(dtype)
    with torch.no_grad():
        for p in (layer.primary.w_gate, layer.primary.w_noise, layer.w_gate, layer.w_noise):
            p.normal_()
    return layer


def paper_gates_and_loss(layer, x, noise1, noise2):
    """Appendix B written out: G_H(x)_{i,j} = G_primary(x)_i·G_i(x)_j, Importance_H, Load_H, the loss."""
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    x = x.numpy()
    wg1, wn1 = layer.primary.w_gate.detach().numpy(), layer.primary.w_noise.detach().numpy()
    wg2, wn2 = layer.w_gate.detach().numpy(), layer.w_noise.detach().numpy()

    def gate(clean, std, noise, k):
        h = clean + noise * std
        kept = sorted(range(len(h)), key=lambda i: -h[i])[:k]
        g = np.zeros(len(h))
        z = sum(math.exp(h[j]) for j in kept)
        for j in kept:
            g[j] = math.exp(h[j]) / z
        p = np.zeros(len(h))
        for i in range(len(h)):
            kth = sorted((h[j] for j in range(len(h)) if j != i), reverse=True)[k - 1]
            p[i] = NormalDist().cdf((clean[i] - kth) / std[i])
        return g, p

    GH = np.zeros((T, A, B))
    load1, count = np.zeros(A), np.zeros(A)
    load_in = np.zeros((A, B))
    for t in range(T):
        std1 = np.array([sp(v) for v in x[t] @ wn1])
        g1, p1 = gate(x[t] @ wg1, std1, noise1[t], KA)
        load1 += p1
        chosen = sorted(range(A), key=lambda i: -(x[t] @ wg1 + noise1[t] * std1)[i])[:KA]
        for r, i in enumerate(chosen):
            std2 = np.array([sp(v) for v in x[t] @ wn2[i]])
            g2, p2 = gate(x[t] @ wg2[i], std2, noise2[t, r], KB)
            GH[t, i] = g1[i] * g2
            load_in[i] += p2
            count[i] += 1
    importance = GH.sum(0).reshape(-1)
    load_h = (load1[:, None] * load_in / np.maximum(count, 1)[:, None]).reshape(-1)
    cv2 = lambda v: v.var() / v.mean() ** 2  # noqa: E731
    return GH.reshape(T, A * B), importance, load_h, 0.1 * cv2(importance) + 0.1 * cv2(load_h)


def test_training_output_and_hierarchical_loss_match_appendix_b():
    layer = _layer().train()
    x = torch.randn(T, D, dtype=torch.float64)
    noise1 = torch.randn(T, A, dtype=torch.float64)
    noise2 = torch.randn(T, KA, B, dtype=torch.float64)
    layer.primary.sample_noise = lambda shape, like: noise1
    layer.sample_noise = lambda shape, like: noise2
    y = layer(x)
    GH, importance, load_h, loss = paper_gates_and_loss(layer, x, noise1.numpy(), noise2.numpy())
    ref = torch.einsum("te,etd->td", torch.from_numpy(GH), expert_outputs(layer, x))
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=1e-10)
    np.testing.assert_allclose(layer.importance_h.numpy(), importance, atol=1e-12)
    np.testing.assert_allclose(layer.load_h.reshape(-1).numpy(), load_h, atol=1e-10)
    np.testing.assert_allclose(float(layer.aux_loss.detach()), loss, atol=1e-12)


def test_eval_gradcheck_and_float32_reference():
    layer = _layer().eval()
    x = torch.randn(8, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer(x), (x,))
    layer32 = _layer(torch.float32).eval()
    x32 = torch.randn(T, D)
    zeros1, zeros2 = np.zeros((T, A)), np.zeros((T, KA, B))
    GH, *_ = paper_gates_and_loss(layer32, x32.double(), zeros1, zeros2)  # zero noise = eval gating
    ref = torch.einsum("te,etd->td", torch.from_numpy(GH).float(), expert_outputs(layer32, x32))
    torch.testing.assert_close(layer32(x32), ref, atol=1e-5, rtol=1e-5)
    assert layer32.stats["tokens_per_expert"] == np.count_nonzero(GH, axis=0).tolist()


def test_bad_arguments():
    with pytest.raises(ValueError, match="k_groups"):
        HierarchicalMoE(D, H, 2, 4, 3, 1)
    with pytest.raises(ValueError, match="k_experts"):
        HierarchicalMoE(D, H, 2, 4, 1, 5)
    with pytest.raises(ValueError, match="x"):
        HierarchicalMoE(D, H, 2, 4, 1, 1)(torch.randn(3, D + 1))
