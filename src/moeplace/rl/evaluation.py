"""Evaluate a trained algorithm: run whole episodes with its (greedy) policy and report returns."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def evaluate(algo: Any, env: gym.Env, n_episodes: int = 20, deterministic: bool = True,
             seed: int = 10_000) -> list[float]:
    """Returns of `n_episodes` episodes of `algo.predict` on a single (non-vector) env.

    Episode k is reset with seed `seed + k`, so two evaluations of one policy see the same starts.
    Masks in `info["action_mask"]` are passed on to predict.
    """
    returns = []
    for k in range(n_episodes):
        obs, info = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            action = algo.predict(obs, deterministic=deterministic, action_mask=info.get("action_mask"))
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def mean_return(returns: list[float]) -> float:
    """Mean of a list of returns (nan when empty)."""
    return float(np.mean(returns)) if returns else float("nan")
