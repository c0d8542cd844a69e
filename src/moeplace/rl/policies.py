"""A ready-made actor-critic MLP for Box, Discrete, MultiBinary and Dict observation spaces.

Any nn.Module with `forward(obs) -> (logits [B, A], value [B])` works with PPO and REINFORCE;
this one flattens and concatenates the observation (Discrete becomes one-hot, Dict keys in the
space's order) and runs separate actor and critic MLPs with orthogonal initialisation, as in
CleanRL's ppo.py.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

from moeplace.rl.vec import Obs


def _flat_dim(space: gym.Space) -> int:
    """Width of the flattened encoding of one observation of `space`."""
    if isinstance(space, gym.spaces.Dict):
        return sum(_flat_dim(s) for s in space.spaces.values())
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, (gym.spaces.Box, gym.spaces.MultiBinary)):
        return int(math.prod(space.shape))
    raise ValueError(f"observation space {space} is not supported by MLPPolicy "
                     "(Box, Discrete, MultiBinary or a Dict of them)")


def flatten_obs(obs: Obs, space: gym.Space) -> torch.Tensor:
    """Encode a batch of observations of `space` as one float tensor `[B, D]`."""
    if isinstance(space, gym.spaces.Dict):
        return torch.cat([flatten_obs(obs[k], s) for k, s in space.spaces.items()], dim=-1)
    if isinstance(space, gym.spaces.Discrete):
        return nn.functional.one_hot((obs.long() - int(space.start)).reshape(-1), int(space.n)).float()
    return obs.reshape(obs.shape[0], -1).float()


def _layer(n_in: int, n_out: int, std: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int, out_std: float) -> nn.Sequential:
    """Tanh MLP with orthogonal init (gain sqrt(2) inside, `out_std` on the last layer)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [_layer(n_in, h, math.sqrt(2)), nn.Tanh()]
        n_in = h
    layers.append(_layer(n_in, n_out, out_std))
    return nn.Sequential(*layers)


class MLPPolicy(nn.Module):
    """Separate actor and critic MLPs over the flattened observation."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space,
                 hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"action_space: MLPPolicy needs Discrete actions, got {action_space}")
        self.observation_space = observation_space
        n_in = _flat_dim(observation_space)
        self.actor = mlp(n_in, tuple(hidden), int(action_space.n), out_std=0.01)
        self.critic = mlp(n_in, tuple(hidden), 1, out_std=1.0)

    def forward(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """(action logits [B, A], state value [B]) for a batch of observations."""
        x = flatten_obs(obs, self.observation_space)
        return self.actor(x), self.critic(x).squeeze(-1)
