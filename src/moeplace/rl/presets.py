"""Hyperparameter presets used by the CLI and the benchmark (each one measured in docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any

# PPO on CartPole-v1, after the rl-zoo's tuned settings: many short rollouts (8 envs x 32 steps),
# 20 epochs over each, gamma 0.98, lambda 0.8, learning rate 1e-3 annealed to 0, no entropy bonus.
CARTPOLE_PPO: dict[str, Any] = dict(
    n_steps=32, n_minibatches=1, n_epochs=20, gamma=0.98, gae_lambda=0.8, learning_rate=1e-3,
    anneal_lr=True, ent_coef=0.0, clip_coef=0.2)
CARTPOLE_N_ENVS = 8

# REINFORCE for short classic-control episodes.
CLASSIC_REINFORCE: dict[str, Any] = dict(episodes_per_batch=8, learning_rate=1e-2, gamma=0.99,
                                         baseline_decay=0.9, normalize_advantage=True)

# The grid robot, one policy trained per layout.
GRID_PPO: dict[str, Any] = dict(n_steps=64, n_minibatches=4, n_epochs=4, gamma=0.99, gae_lambda=0.95,
                                learning_rate=1e-3, anneal_lr=True, ent_coef=0.01)
# REINFORCE needs rewards-to-go and more steps here (150k reached the BFS length on 2 of 2 layouts
# tried; with whole-episode returns, or 60k steps, the greedy path often loops).
GRID_REINFORCE: dict[str, Any] = dict(episodes_per_batch=16, learning_rate=3e-3, gamma=0.99,
                                      baseline_decay=0.9, normalize_advantage=True, ent_coef=0.01,
                                      reward_to_go=True)
GRID_STEPS = {"ppo": 60_000, "reinforce": 150_000}
GRID_N_ENVS = 8
GRID_HIDDEN = (128,)


def defaults_for(algo: str, env_id: str) -> tuple[dict[str, Any], int]:
    """(hyperparameters, n_envs) the CLI uses for `algo` on a Gymnasium env id."""
    if algo == "ppo":
        return dict(CARTPOLE_PPO), CARTPOLE_N_ENVS
    return dict(CLASSIC_REINFORCE), 4
