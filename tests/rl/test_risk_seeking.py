"""Risk-seeking PPO (`risk_quantile`): the advantages of a hand-made rollout, and a bandit where the
arm with the best upper tail is not the arm with the best mean."""

import numpy as np
import pytest
import torch

from moeplace.rl import PPO, MLPPolicy, make_vec_env
from moeplace.rl.ppo import risk_seeking_advantages

from .envs import BanditEnv


def test_advantages_of_a_hand_made_rollout():
    # env 0: episode (t 0-1) returns 1, episode (t 2-3) returns 3; env 1: episode (t 0-2) returns 2,
    # then an episode still running at the end (t 3): left out.
    rewards = torch.tensor([[0.0, 0.0], [1.0, 0.5], [0.0, 1.5], [3.0, 7.0]])
    dones = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 0]], dtype=torch.float32)
    valid = torch.ones(4, 2, dtype=torch.bool)
    adv, elite = risk_seeking_advantages(rewards, dones, valid, quantile=0.5)
    threshold = np.quantile([1.0, 3.0, 2.0], 0.5)  # = 2: the episodes returning 2 and 3 are elite
    expected_elite = [[False, True], [False, True], [True, True], [True, False]]
    assert elite.tolist() == expected_elite
    a, b = 3 - threshold, 2 - threshold
    expected = [[0.0, b], [0.0, b], [a, b], [a, 0.0]]
    assert torch.allclose(adv, torch.tensor(expected, dtype=torch.float32))


def test_invalid_steps_are_never_elite():
    rewards = torch.tensor([[0.0], [5.0]])
    dones = torch.tensor([[0.0], [1.0]])
    valid = torch.tensor([[False], [True]])  # t 0 is a waiting step: not a transition
    adv, elite = risk_seeking_advantages(rewards, dones, valid, quantile=1.0)
    assert elite.tolist() == [[False], [True]] and adv[1, 0] == 0.0


def test_rollout_without_a_finished_episode_leaves_the_policy_unchanged():
    from .envs import ConstantRewardEnv

    envs = make_vec_env(lambda: ConstantRewardEnv(limit=100), 2)  # 4 steps never end an episode
    torch.manual_seed(0)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(8,))
    before = [p.detach().clone() for p in policy.parameters()]
    algo = PPO(policy, envs, n_steps=4, risk_quantile=0.5, seed=0).learn(8, progress_bar=False)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert np.isnan(algo.history[-1]["policy_loss"])


def test_risk_quantile_out_of_range_is_refused():
    envs = make_vec_env(lambda: BanditEnv([1.0, 0.5]), 2)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(8,))
    with pytest.raises(ValueError, match="risk_quantile"):
        PPO(policy, envs, risk_quantile=0.0)


def _bandit(risk):
    # arm 0: 1.0 every time; arm 1: mean 0.5 with std 1, whose top quarter averages about 0.5 + 1.27
    envs = make_vec_env(lambda: BanditEnv([1.0, 0.5], noise=[0.0, 1.0]), 8)
    torch.manual_seed(0)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(16,))
    hp = dict(n_steps=8, n_minibatches=1, n_epochs=4, learning_rate=3e-2, ent_coef=0.0, seed=0)
    return PPO(policy, envs, risk_quantile=risk, **hp).learn(3000, progress_bar=False)


def test_risk_seeking_prefers_the_best_tail_and_plain_ppo_the_best_mean():
    obs = np.zeros(1, dtype=np.float32)
    assert _bandit(None).predict(obs) == 0
    assert _bandit(0.25).predict(obs) == 1
