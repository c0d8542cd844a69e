"""MaskedCategorical against brute-force probabilities, log-probabilities and entropy."""

import math

import numpy as np
import pytest
import torch

from moeplace.rl import MaskedCategorical


def _brute_force(logits: np.ndarray, mask: np.ndarray):
    """Per row: probabilities over legal actions by explicit exp/sum in float64, and entropy."""
    probs = np.zeros_like(logits, dtype=np.float64)
    ent = np.zeros(len(logits))
    for b in range(len(logits)):
        legal = [a for a in range(logits.shape[1]) if mask[b, a]]
        z = sum(math.exp(logits[b, a]) for a in legal)
        for a in legal:
            probs[b, a] = math.exp(logits[b, a]) / z
        ent[b] = -sum(probs[b, a] * math.log(probs[b, a]) for a in legal)
    return probs, ent


def test_log_prob_and_entropy_match_brute_force():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 7)).astype(np.float32) * 3
    mask = rng.random((6, 7)) < 0.5
    mask[np.arange(6), rng.integers(0, 7, 6)] = True  # at least one legal action per row
    dist = MaskedCategorical(torch.tensor(logits), torch.tensor(mask))
    probs, ent = _brute_force(logits.astype(np.float64), mask)
    for a in range(7):
        lp = dist.log_prob(torch.full((6,), a)).double().numpy()
        legal = mask[:, a]
        np.testing.assert_allclose(np.exp(lp[legal]), probs[legal, a], rtol=1e-5)
        np.testing.assert_allclose(lp[legal], np.log(probs[legal, a]), rtol=1e-5, atol=1e-6)
        assert np.all(np.exp(lp[~legal]) == 0.0)
    np.testing.assert_allclose(dist.entropy().double().numpy(), ent, rtol=1e-5, atol=1e-6)


def test_unmasked_matches_torch_categorical():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    ref = torch.distributions.Categorical(logits=logits)
    dist = MaskedCategorical(logits)
    actions = torch.tensor([0, 3, 4, 1])
    torch.testing.assert_close(dist.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(dist.entropy(), ref.entropy())


def test_never_samples_illegal_and_frequencies_match():
    logits = torch.tensor([[5.0, 0.0, 1.0, -1.0, 2.0]]).repeat(20000, 1)
    mask = torch.tensor([[False, True, True, False, True]]).repeat(20000, 1)
    dist = MaskedCategorical(logits, mask)
    samples = dist.sample(torch.Generator().manual_seed(0))
    assert mask[0, samples].all(), "an illegal action was sampled"
    freq = np.bincount(samples.numpy(), minlength=5) / len(samples)
    probs, _ = _brute_force(logits[:1].double().numpy(), mask[:1].numpy())
    np.testing.assert_allclose(freq, probs[0], atol=0.015)
    # The greedy action is the best legal one even though an illegal action has the top logit.
    assert dist.mode[0].item() == 4


def test_gradients_stay_finite_with_masks():
    logits = torch.randn(3, 4, requires_grad=True)
    mask = torch.tensor([[True, False, False, False], [True, True, False, False], [True] * 4])
    dist = MaskedCategorical(logits, mask)
    (dist.log_prob(torch.tensor([0, 1, 2])).sum() + dist.entropy().sum()).backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[~mask] == 0)
    assert dist.entropy()[0].item() == 0.0  # one legal action: no uncertainty


def test_row_without_legal_action_is_rejected():
    with pytest.raises(ValueError, match="no legal action"):
        MaskedCategorical(torch.zeros(2, 3), torch.tensor([[True, False, False], [False] * 3]))
    with pytest.raises(ValueError, match="mask"):
        MaskedCategorical(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))
