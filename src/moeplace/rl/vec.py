"""Observation and vector-environment plumbing shared by PPO and REINFORCE.

Observations are NumPy arrays or dicts of them (Gymnasium Dict spaces); the policy sees torch
tensors of the same structure with a leading batch dimension. Any environment is turned into a
Gymnasium vector environment; its autoreset mode (Gymnasium >= 1.0) decides how episode ends
are read: SAME_STEP (the final observation sits in `info["final_obs"]`, every step is real) or
NEXT_STEP (the step after an episode end only resets that sub-environment and is not a real
transition). Action masks come from `info["action_mask"]` (stacked `[n_envs, A]` by the vector env).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

Obs = torch.Tensor | dict[str, torch.Tensor]


def obs_to_tensor(obs: Any) -> Obs:
    """NumPy observation (or dict of them) -> torch tensors; float64 becomes float32."""
    if isinstance(obs, dict):
        return {k: obs_to_tensor(v) for k, v in obs.items()}
    t = torch.as_tensor(np.asarray(obs))
    return t.float() if t.dtype == torch.float64 else t


def stack_obs(items: list[Obs]) -> Obs:
    """Stack a list of batched observations `[N, ...]` into `[len, N, ...]`."""
    if isinstance(items[0], dict):
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}
    return torch.stack(items)


def map_obs(obs: Obs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Obs:
    """Apply `fn` to every tensor of an observation (flatten, index, unsqueeze ...)."""
    if isinstance(obs, dict):
        return {k: fn(v) for k, v in obs.items()}
    return fn(obs)


def index_obs(obs: Obs, idx: torch.Tensor) -> Obs:
    """Select rows `idx` of a batched observation (tensor or dict of tensors)."""
    if isinstance(obs, dict):
        return {k: v[idx] for k, v in obs.items()}
    return obs[idx]


def obs_shapes(space: gym.Space) -> Any:
    """The per-observation shape(s) of a space: a list, or a dict of lists for Dict spaces."""
    if isinstance(space, gym.spaces.Dict):
        return {k: list(s.shape) for k, s in space.spaces.items()}
    return list(space.shape or ())


def is_single_obs(obs: Any, shapes: Any) -> bool:
    """True when `obs` is one observation (no batch dimension) of the given per-observation shapes."""
    if shapes is None:
        return False
    if isinstance(obs, dict):
        key = next(iter(shapes))
        return list(np.shape(obs[key])) == list(shapes[key])
    return list(np.shape(obs)) == list(shapes)


def to_vector_env(env: gym.Env | VectorEnv) -> VectorEnv:
    """Return `env` as a vector env with discrete actions (a plain Env becomes a 1-env SAME_STEP one)."""
    if not isinstance(env, VectorEnv):
        if not isinstance(env, gym.Env):
            raise ValueError(f"env: expected a gymnasium Env or VectorEnv, got {type(env).__name__}")
        env = SyncVectorEnv([lambda: env], autoreset_mode=AutoresetMode.SAME_STEP)
    if not isinstance(env.single_action_space, gym.spaces.Discrete):
        raise ValueError(f"env: needs a Discrete action space, got {env.single_action_space}")
    mode = autoreset_mode(env)
    if mode == AutoresetMode.DISABLED:
        raise ValueError("env: vector envs with autoreset_mode=DISABLED are not supported; "
                         "use SAME_STEP or NEXT_STEP")
    return env


def autoreset_mode(env: VectorEnv) -> AutoresetMode:
    """The vector env's autoreset mode (Gymnasium's default, NEXT_STEP, when it does not say)."""
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return AutoresetMode(mode) if not isinstance(mode, AutoresetMode) else mode


def action_mask(info: dict[str, Any], n_envs: int, n_actions: int) -> np.ndarray | None:
    """The stacked `info["action_mask"]` as bool `[n_envs, A]`, or None if the env gives no masks.

    Sub-environments whose info lacks the key (Gymnasium's `_action_mask` is False there) get
    an all-legal row.
    """
    if "action_mask" not in info:
        return None
    mask = np.asarray(info["action_mask"], dtype=bool)
    if mask.shape != (n_envs, n_actions):
        raise ValueError(f"info['action_mask']: expected shape {(n_envs, n_actions)}, got {mask.shape}")
    present = info.get("_action_mask")
    if present is not None and not np.all(present):
        mask = mask.copy()
        mask[~np.asarray(present, dtype=bool)] = True
    return mask


def final_obs_batch(info: dict[str, Any], envs: np.ndarray) -> Any:
    """Stack `info["final_obs"]` (SAME_STEP autoreset) of the given sub-env indices into a batch."""
    items = [info["final_obs"][i] for i in envs]
    if isinstance(items[0], dict):
        return {k: np.stack([it[k] for it in items]) for k in items[0]}
    return np.stack(items)


def make_vec_env(env_fn: Callable[[], gym.Env], n_envs: int) -> VectorEnv:
    """`n_envs` copies of an environment in one SyncVectorEnv with SAME_STEP autoreset."""
    return SyncVectorEnv([env_fn for _ in range(n_envs)], autoreset_mode=AutoresetMode.SAME_STEP)
