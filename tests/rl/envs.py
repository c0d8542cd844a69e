"""Small environments with known optimal policies, used by the RL tests."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class BanditEnv(gym.Env):
    """One-step bandit: arm i pays means[i] plus Gaussian noise (one std for all arms, or one per arm);
    optionally some arms are masked."""

    def __init__(self, means: list[float], noise: float | list[float] = 0.1,
                 legal: list[bool] | None = None) -> None:
        self.means = np.asarray(means, dtype=np.float64)
        self.noise = np.broadcast_to(np.asarray(noise, dtype=np.float64), self.means.shape)
        self.legal = np.ones(len(means), dtype=bool) if legal is None else np.asarray(legal, dtype=bool)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(means))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {"action_mask": self.legal.copy()}

    def step(self, action: int):
        assert self.legal[action], "an illegal arm was pulled"
        reward = float(self.means[action] + self.noise[action] * self.np_random.normal())
        return np.zeros(1, dtype=np.float32), reward, True, False, {"action_mask": self.legal.copy()}


class ChainEnv(gym.Env):
    """Chain of n states; 'right' (1) walks to the end (+1, terminal), 'left' (0) in state 0 takes a
    small terminal reward `trap` and elsewhere steps back. With gamma near 1 the optimal policy is
    'right' everywhere; a myopic policy takes the trap. Observation: one-hot state."""

    def __init__(self, n: int = 5, trap: float = 0.2, max_steps: int = 20) -> None:
        self.n, self.trap, self.max_steps = n, trap, max_steps
        self.observation_space = gym.spaces.Box(0.0, 1.0, (n,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        o = np.zeros(self.n, dtype=np.float32)
        o[self.state] = 1.0
        return o

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.state, self.t = 0, 0
        return self._obs(), {}

    def step(self, action: int):
        self.t += 1
        if action == 1:
            self.state += 1
            if self.state == self.n - 1:
                return self._obs(), 1.0, True, False, {}
            return self._obs(), 0.0, False, self.t >= self.max_steps, {}
        if self.state == 0:
            return self._obs(), self.trap, True, False, {}
        self.state -= 1
        return self._obs(), 0.0, False, self.t >= self.max_steps, {}


class ConstantRewardEnv(gym.Env):
    """Reward 1 every step, never terminates, truncated after `limit` steps; constant observation.

    The time limit is not part of the state, so the correct value is 1 / (1 - gamma); treating a
    truncation as termination would instead learn the mean of the truncated returns."""

    def __init__(self, limit: int = 5) -> None:
        self.limit = limit
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.ones(1, dtype=np.float32), {}

    def step(self, action: int):
        self.t += 1
        return np.ones(1, dtype=np.float32), 1.0, False, self.t >= self.limit, {}
