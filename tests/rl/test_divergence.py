"""PPO and REINFORCE stop at the first non-finite loss, gradient or action probability (DivergenceError)."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from moeplace.errors import CheckpointError, DivergenceError
from moeplace.rl import PPO, REINFORCE, MLPPolicy, make_vec_env


class NanReward(gym.Wrapper):
    """CartPole whose rewards are NaN: every advantage, hence every loss, is NaN."""

    def step(self, action):
        obs, _, term, trunc, info = self.env.step(action)
        return obs, float("nan"), term, trunc, info


def make(cls, wrap=None, **hp):
    envs = make_vec_env(lambda: (wrap or (lambda e: e))(gym.make("CartPole-v1")), 2)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(8,))
    extra = {"n_steps": 16} if cls is PPO else {"episodes_per_batch": 2}
    return cls(policy, envs, seed=0, **extra, **hp)


@pytest.mark.parametrize("cls", [PPO, REINFORCE])
def test_nan_loss_stops_before_any_update_of_the_weights(cls):
    algo = make(cls, NanReward, learning_rate=1e-3)
    before = {k: v.clone() for k, v in algo.policy.state_dict().items()}
    with pytest.raises(DivergenceError) as e:
        algo.learn(2000, progress_bar=False)
    msg = str(e.value)
    assert msg.startswith("update 1 (env step ") and "loss is nan" in msg and "learning rate (0.001)" in msg
    after = algo.policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # never stepped with a NaN gradient


@pytest.mark.parametrize("cls", [PPO, REINFORCE])
def test_nan_weights_stop_the_rollout_with_a_divergence_error(cls, tmp_path):
    algo = make(cls)
    with torch.no_grad():
        next(algo.policy.parameters()).fill_(float("nan"))
    with pytest.raises(DivergenceError, match="update 1 .*action probabilities are NaN"):
        algo.learn(500, progress_bar=False)
    with pytest.raises(CheckpointError, match="NaN or infinity"):  # and such a policy is never saved
        algo.save(tmp_path / "policy")
    assert list(tmp_path.iterdir()) == []


def test_gridworld_and_save_refuse_another_runs_files(tmp_path, capsys):
    from moeplace.cli import main

    grid = ["rl", "gridworld", "--size", "3", "--steps", "256", "--out", str(tmp_path / "g"), "--json"]
    assert main(grid) == 0
    before = (tmp_path / "g" / "policy.safetensors").read_bytes()
    capsys.readouterr()
    assert main(grid) == 2
    assert "holds another run (gridworld.png)" in capsys.readouterr().err
    assert (tmp_path / "g" / "policy.safetensors").read_bytes() == before
    assert main([*grid, "--overwrite"]) == 0
    save = ["rl", "train", "--env", "CartPole-v1", "--steps", "256", "--eval-episodes", "1",
            "--save", str(tmp_path / "cp")]
    assert main(save) == 0
    assert main(save) == 2 and "--save" in capsys.readouterr().err
    assert main([*save, "--resume", str(tmp_path / "cp.safetensors")]) == 0  # continuing it is fine
