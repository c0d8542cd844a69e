"""SequenceREINFORCE: its gradient against the REINFORCE formula on a tabular policy, the entropy
schedule, the elite buffer, the improve hook, learning a target sequence, checkpoints."""

import numpy as np
import pytest
import torch
from torch import nn

from moeplace.rl import EliteBuffer, SequenceREINFORCE


class Tabular(nn.Module):
    """N independent categoricals over D actions, logits theta [N, D]; the context is ignored."""

    def __init__(self, n: int, d: int, seed: int = 0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)))

    @torch.no_grad()
    def sample_with_logp(self, ctx, batch, greedy=False, generator=None):
        probs = torch.softmax(self.theta, dim=1)
        if greedy:
            a = probs.argmax(dim=1).expand(batch, -1)
        else:
            a = torch.multinomial(probs, batch, replacement=True, generator=generator).T
        return a.contiguous(), self.score(ctx, a)[0]

    def score(self, ctx, actions):
        logp_all = torch.log_softmax(self.theta, dim=1)
        logp = logp_all[torch.arange(self.theta.shape[0]), actions].sum(dim=1)
        ent = -(logp_all.exp() * logp_all).sum().expand(actions.shape[0])
        return logp, ent


def cost(seq: np.ndarray) -> float:
    return 1.0 + float(seq.sum())


def test_one_step_follows_the_reinforce_gradient_with_normalised_advantages():
    pol = Tabular(4, 3)
    algo = SequenceREINFORCE(pol, batch=16, ent_coef=0.0, ent_coef_end=None, sil_coef=0.0,
                             max_grad_norm=None, seed=3)
    algo.optimizer = torch.optim.SGD(pol.parameters(), lr=1.0)  # the step is then -gradient
    before = pol.theta.detach().numpy().copy()
    b = algo.step(None, cost)
    # by hand: advantage = (r - mean r) / std r with r = -sqrt(cost); the gradient of
    # mean_i adv_i * sum_t log softmax(theta_t)[a_it] is mean_i adv_i (onehot(a_it) - softmax(theta_t))
    r = -np.sqrt(np.array([cost(s) for s in b.sequences]))
    adv = (r - r.mean()) / (r.std() + 1e-12)
    p = np.exp(before) / np.exp(before).sum(axis=1, keepdims=True)
    onehot = np.eye(3)[b.sequences]  # [B, N, D]
    expected = (adv[:, None, None] * (onehot - p[None])).mean(axis=0)
    np.testing.assert_allclose(pol.theta.detach().numpy() - before, expected, atol=1e-5)
    np.testing.assert_array_equal(b.costs, [cost(s) for s in b.sequences])



def test_a_gradient_subset_follows_the_formula_on_its_rows_with_the_whole_batchs_baseline():
    """grad_batch 6 of 16: the step is the REINFORCE gradient over the 6 scored rows only, their
    advantages normalised by the mean and deviation of all 16 rewards."""
    pol = Tabular(4, 3)
    algo = SequenceREINFORCE(pol, batch=16, grad_batch=6, ent_coef=0.0, ent_coef_end=None, sil_coef=0.0,
                             max_grad_norm=None, seed=3)
    algo.optimizer = torch.optim.SGD(pol.parameters(), lr=1.0)
    scored = []
    score = pol.score
    pol.score = lambda ctx, a: scored.append(a.numpy().copy()) or score(ctx, a)
    before = pol.theta.detach().numpy().copy()
    b = algo.step(None, cost)
    rows = scored[-1]  # the gradient pass (the sampler's own call scores all 16)
    assert rows.shape == (6, 4)
    assert all(any((r == s).all() for s in b.sequences) for r in rows)
    r_all = -np.sqrt(np.array([cost(s) for s in b.sequences]))
    adv = (-np.sqrt(np.array([cost(s) for s in rows])) - r_all.mean()) / (r_all.std() + 1e-12)
    p = np.exp(before) / np.exp(before).sum(axis=1, keepdims=True)
    expected = (adv[:, None, None] * (np.eye(3)[rows] - p[None])).mean(axis=0)
    np.testing.assert_allclose(pol.theta.detach().numpy() - before, expected, atol=1e-5)
    assert len(b.sequences) == 16  # every sample is still costed and returned

def test_entropy_weight_falls_geometrically_over_training():
    algo = SequenceREINFORCE(Tabular(2, 2), ent_coef=0.3, ent_coef_end=3e-3)
    assert algo.entropy_coef(0.0) == pytest.approx(0.3)
    assert algo.entropy_coef(0.5) == pytest.approx(np.sqrt(0.3 * 3e-3))
    assert algo.entropy_coef(1.0) == algo.entropy_coef(2.0) == pytest.approx(3e-3)
    assert SequenceREINFORCE(Tabular(2, 2), ent_coef=0.1, ent_coef_end=None).entropy_coef(0.7) == 0.1


def test_elite_buffer_keeps_the_cheapest_distinct_sequences():
    buf = EliteBuffer(2)
    buf.add(np.array([[0, 1], [1, 1], [0, 1]]), np.array([3.0, 2.0, 3.0]))
    buf.add(np.array([[2, 2]]), np.array([5.0]))
    assert [(c, s.tolist()) for c, s in buf.best()] == [(2.0, [1, 1]), (3.0, [0, 1])]
    assert len(buf.best(1)) == 1


def test_the_improve_hook_adds_to_what_was_found_not_to_the_gradient_batch():
    pol = Tabular(3, 2)
    algo = SequenceREINFORCE(pol, batch=4, seed=0)
    buf = EliteBuffer(8)
    best = np.zeros(3, np.int64)  # the cheapest sequence, as a local search would find it
    b = algo.step(None, cost, elite=buf, improve=lambda s, c: (best, cost(best)))
    assert b.sequences.shape == (4, 3) and b.found.shape == (5, 3)
    assert b.found_costs[-1] == 1.0 and buf.best(1)[0][0] == 1.0


def test_learns_the_cheapest_sequence():
    pol = Tabular(4, 3)
    algo = SequenceREINFORCE(pol, batch=16, learning_rate=0.1, seed=0)
    for i in range(150):
        algo.step(None, cost, frac=i / 150, elite=EliteBuffer(16))
    greedy, _ = pol.sample_with_logp(None, 1, greedy=True)
    assert greedy.tolist() == [[0, 0, 0, 0]]  # cost 1, the minimum
    assert len(algo.history) == 150 and algo.num_timesteps == 150 * 16


def test_checkpoint_round_trip_continues_identically(tmp_path):
    pol = Tabular(3, 3)
    algo = SequenceREINFORCE(pol, batch=8, seed=1)
    algo.step(None, cost)
    algo.save(tmp_path / "ck")
    twin = SequenceREINFORCE.load(tmp_path / "ck", Tabular(3, 3, seed=9))
    a, b = algo.step(None, cost), twin.step(None, cost)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    torch.testing.assert_close(algo.policy.theta, twin.policy.theta)
