"""PPO's KL term to a frozen reference policy (`ref_kl_coef`): its value against torch.distributions,
its pull towards the reference on a bandit, and a missing reference refused."""

import copy

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from moeplace.rl import PPO, MLPPolicy, make_vec_env

from .envs import BanditEnv


def _setup(legal=None):
    envs = make_vec_env(lambda: BanditEnv([1.0, 0.0, 0.5], legal=legal), 4)
    torch.manual_seed(0)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(8,))
    return envs, policy


def test_reported_kl_is_the_kl_over_legal_actions():
    envs, policy = _setup(legal=[True, True, False])
    torch.manual_seed(1)
    reference = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(8,))
    # learning rate 0: the policy stays as it is, so the last minibatch's KL is the initial one
    algo = PPO(policy, envs, n_steps=2, n_minibatches=1, n_epochs=1, learning_rate=0.0, ref_kl_coef=1.0,
               seed=0)
    algo.reference = reference
    algo.learn(8, progress_bar=False)
    obs = torch.zeros(1, 1)
    with torch.no_grad():
        p, _ = policy(obs)
        q, _ = reference(obs)
    legal = torch.tensor([[True, True, False]])
    expected = kl_divergence(Categorical(logits=p[legal]), Categorical(logits=q[legal])).item()
    assert algo.history[-1]["ref_kl"] == pytest.approx(expected, rel=1e-5)


def _trained(coef):
    envs, policy = _setup()
    reference = copy.deepcopy(policy).requires_grad_(False)
    algo = PPO(policy, envs, n_steps=8, n_minibatches=1, n_epochs=4, learning_rate=3e-2, ent_coef=0.0,
               ref_kl_coef=coef, seed=0)
    algo.reference = reference
    algo.learn(1500, progress_bar=False)
    obs = torch.zeros(1, 1)
    with torch.no_grad():
        p, q = policy(obs)[0].softmax(-1)[0], reference(obs)[0].softmax(-1)[0]
    return float(p[0]), float((p * (p / q).log()).sum())


def test_the_term_holds_the_policy_near_its_reference():
    free_best, free_kl = _trained(0.0)
    held_best, held_kl = _trained(2.0)
    assert free_best > 0.95  # without the term: PPO settles on the best arm
    assert held_kl < free_kl / 3 and held_best < free_best  # with it: closer to where it started
    assert np.isfinite(held_kl)


def test_a_coefficient_without_a_reference_is_refused():
    envs, policy = _setup()
    with pytest.raises(ValueError, match="reference"):
        PPO(policy, envs, n_steps=2, ref_kl_coef=0.5).learn(8, progress_bar=False)
    with pytest.raises(ValueError, match="ref_kl_coef"):
        PPO(policy, envs, ref_kl_coef=-1.0)
