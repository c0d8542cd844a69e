"""Noisy top-k gating pieces against a direct transcription of the paper's equations (Shazeer et al. 2017)."""

import math
from statistics import NormalDist

import numpy as np
import torch

from moeplace.moe import MoE, NoisyTopKRouter, cv_squared

from .reference import dense_moe

T, D, E, K = 7, 5, 6, 2


def _router() -> NoisyTopKRouter:
    torch.manual_seed(1)
    r = NoisyTopKRouter(D, E, K, w_importance=0.1, w_load=0.1).double()
    with torch.no_grad():
        r.w_gate.normal_()
        r.w_noise.normal_()
    return r


def paper(x: np.ndarray, wg: np.ndarray, wn: np.ndarray, noise: np.ndarray, k: int):
    """Eqs. 3-5 and appendix A written loop by loop: H, G, P, Importance, Load and the loss."""
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    n_tok, n_exp = x.shape[0], wg.shape[1]
    clean, H = x @ wg, np.zeros((n_tok, n_exp))
    G, P = np.zeros((n_tok, n_exp)), np.zeros((n_tok, n_exp))
    for t in range(n_tok):
        for i in range(n_exp):
            H[t, i] = clean[t, i] + noise[t, i] * softplus((x[t] @ wn)[i])
        kept = sorted(range(n_exp), key=lambda i: -H[t, i])[:k]
        z = sum(math.exp(H[t, j]) for j in kept)
        for j in kept:
            G[t, j] = math.exp(H[t, j]) / z
        for i in range(n_exp):
            others = sorted((H[t, j] for j in range(n_exp) if j != i), reverse=True)
            kth_excluding = others[k - 1]
            P[t, i] = NormalDist().cdf((clean[t, i] - kth_excluding) / softplus((x[t] @ wn)[i]))
    importance, load = G.sum(0), P.sum(0)
    cv2 = lambda v: v.var() / v.mean() ** 2  # noqa: E731
    return H, G, P, importance, load, 0.1 * cv2(importance) + 0.1 * cv2(load)


def test_pieces_match_paper_transcription():
    r = _router().train()
    x = torch.randn(T, D, dtype=torch.float64)
    noise = torch.randn(T, E, dtype=torch.float64)
    r.sample_noise = lambda shape, like: noise
    H, G, P, importance, load, loss = paper(x.numpy(), r.w_gate.detach().numpy(), r.w_noise.detach().numpy(),
                                            noise.numpy(), K)
    clean, std, h = r.noisy_logits(x)
    np.testing.assert_allclose(h.detach().numpy(), H, atol=1e-12)
    routing = r(x)
    gates = torch.zeros(T, E, dtype=torch.float64).index_put_(
        (routing.token_index, routing.expert_index), routing.gate.detach())
    np.testing.assert_allclose(gates.numpy(), G, atol=1e-12)
    np.testing.assert_allclose(routing.importance.numpy(), importance, atol=1e-12)
    np.testing.assert_allclose(routing.load.numpy(), load, atol=1e-10)  # sum over the batch of P(x, i)
    np.testing.assert_allclose(float(routing.aux_loss.detach()), loss, atol=1e-12)


def test_cv_squared_is_variance_over_mean_squared():
    v = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    np.testing.assert_allclose(float(cv_squared(torch.tensor(v))), v.var() / v.mean() ** 2, rtol=1e-6)
    assert float(cv_squared(torch.ones(4))) == 0.0


def test_gates_start_at_zero_and_eval_adds_no_noise():
    layer = MoE(D, 8, E, K)  # noisy_topk by default
    assert not layer.router.w_gate.any() and not layer.router.w_noise.any()
    with torch.no_grad():
        layer.router.w_gate.normal_()
        layer.router.w_noise.normal_()
    x = torch.randn(T, D)
    layer.eval()

    def no_noise(shape, like):
        raise AssertionError("noise sampled in eval mode")

    layer.router.sample_noise = no_noise
    y1, y2 = layer(x), layer(x)
    assert torch.equal(y1, y2)
    kept = torch.topk(x @ layer.router.w_gate, K).indices  # routing by the clean logits
    assert torch.equal(layer.last_routing.expert_index.view(K, T).t(), kept)
    del layer.router.sample_noise
    layer.train()
    assert not torch.equal(layer(x), layer(x))  # training draws fresh noise each forward


def test_eval_load_is_token_count():
    r = _router().eval()
    x = torch.randn(T, D, dtype=torch.float64)
    routing = r(x)
    counts = torch.bincount(torch.topk(x @ r.w_gate, K).indices.flatten(), minlength=E)
    assert torch.equal(routing.load, counts.to(routing.load.dtype))


class RecordingExperts(torch.nn.Module):
    """Wraps an expert bank and records which rows each expert was given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x_sorted, tokens_per_expert):
        self.calls.append((x_sorted.detach().clone(), tokens_per_expert.clone()))
        return self.inner(x_sorted, tokens_per_expert)


def test_experts_with_zero_gate_never_run():
    torch.manual_seed(2)
    layer = MoE(D, 8, E, K).eval()
    with torch.no_grad():
        layer.router.w_gate.normal_()
    x = torch.randn(T, D)
    reference_gates = torch.zeros(T, E)
    top = torch.topk(x @ layer.router.w_gate, K)
    reference_gates.scatter_(1, top.indices, torch.softmax(top.values, -1))
    real = layer.experts
    layer.experts = RecordingExperts(real)
    y = layer(x)
    (x_sorted, counts), = layer.experts.calls
    start = 0
    for e in range(E):
        rows = x_sorted[start : start + int(counts[e])]
        start += int(counts[e])
        got = {int(torch.nonzero((x == row).all(-1)).item()) for row in rows}
        assert got == set(torch.nonzero(reference_gates[:, e]).flatten().tolist()), f"expert {e}"
    assert start == T * K
    layer.experts = real
    torch.testing.assert_close(y, dense_moe(layer, x, reference_gates), atol=1e-5, rtol=1e-5)


def test_gate_init_std_draws_gating_weights_instead_of_zeros():
    torch.manual_seed(0)
    assert not NoisyTopKRouter(64, 8, 2).w_gate.any()  # the paper's zero initialisation by default
    r = NoisyTopKRouter(256, 64, 2, gate_init_std=2.0)
    assert abs(float(r.w_gate.detach().std()) - 2.0 / 16.0) < 0.005  # N(0, std^2 / d), d = 256
    assert not r.w_noise.any()


def test_input_norm_routes_each_token_by_x_over_its_rms():
    """input_norm: routing, gates, load and loss of x are the plain router's on x / sqrt(mean(x^2) + 1e-6),
    by hand; so a stream 50x larger (RMS 0.02 -> 1) is routed the same."""
    plain = _router().train()
    normed = _router().train()
    normed.input_norm = True
    x = torch.randn(T, D, dtype=torch.float64) * 0.02
    noise = torch.randn(T, E, dtype=torch.float64)
    plain.sample_noise = normed.sample_noise = lambda shape, like: noise
    routed = []
    for scale in (1.0, 50.0):
        xs = (x * scale).numpy()
        want = plain(torch.from_numpy(xs / np.sqrt((xs**2).mean(axis=1, keepdims=True) + 1e-6)))
        got = normed(x * scale)
        assert torch.equal(got.expert_index, want.expert_index)
        for name in ("gate", "load", "aux_loss"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-10, atol=1e-12)
        routed.append(got.expert_index)
    assert torch.equal(routed[0], routed[1])
    assert not NoisyTopKRouter(D, E, K).input_norm  # off by default: the paper's x·Wg
