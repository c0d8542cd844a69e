"""What PPO and REINFORCE share: construction from (policy, env, **hparams), predict, save and load.

A policy is any nn.Module whose forward maps a batch of observations (a tensor, or a dict of
tensors for Dict spaces) to `(logits [B, A], value [B])`; REINFORCE ignores the value (it may be
None). Checkpoints are one safetensors file plus a JSON sidecar (moeplace.checkpoint): policy
weights, optimizer state, RNG state, hyperparameters and step count; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from moeplace.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from moeplace.errors import CheckpointError, NonFiniteError
from moeplace.numerics import check_finite, clip_and_check, diverged
from moeplace.rl.distributions import MaskedCategorical
from moeplace.rl.vec import is_single_obs, map_obs, obs_shapes, obs_to_tensor, to_vector_env
from moeplace.utils import progress

# callback(algo, stats) is called after every update; returning False stops training.
Callback = Callable[[Any, dict[str, float]], Any]


def progress_bar_for(total: int, desc: str, enabled: bool) -> Any:
    """A progress bar over environment steps (moeplace.utils.progress), or a silent stand-in."""
    if enabled:
        return progress(total=total, desc=desc, unit="step")
    return _NoBar()


class _NoBar:
    """Does nothing; stands in for a progress bar when it is switched off."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def divergence_guard(learn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a `learn` method: a NonFiniteError raised inside it (NaN logits met while sampling an
    action) becomes a DivergenceError naming the update and the learning rate."""

    @functools.wraps(learn)
    def guarded(self: OnPolicyAlgorithm, *args: Any, **kwargs: Any) -> Any:
        try:
            return learn(self, *args, **kwargs)
        except NonFiniteError as e:
            raise diverged(self._at(), str(e), self.config.learning_rate) from None

    return guarded


class OnPolicyAlgorithm:
    """Base of PPO and REINFORCE: holds policy, optimizer, vector env, RNG and training history."""

    config_cls: ClassVar[type]

    def __init__(self, policy: torch.nn.Module, env: gym.Env | VectorEnv | None = None,
                 **hparams: Any) -> None:
        names = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(hparams) - names)
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown hyperparameter(s) {unknown}; "
                             f"known: {sorted(names)}")
        self.config = self.config_cls(**hparams)
        self.policy = policy
        self.env: VectorEnv | None = to_vector_env(env) if env is not None else None
        self.obs_shapes: Any = obs_shapes(self.env.single_observation_space) if self.env else None
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=self.config.learning_rate,
                                          eps=self.config.adam_eps)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.num_timesteps = 0
        self.history: list[dict[str, float]] = []  # one dict of diagnostics per update
        self.episodes: list[tuple[int, float, int]] = []  # (env step at end, return, length)
        self._obs: Any = None  # the vector env's current observation (None: reset needed)

    # -- helpers for subclasses ------------------------------------------------------------
    @property
    def n_envs(self) -> int:
        """Number of sub-environments of the vector env."""
        self._require_env()
        return int(self.env.num_envs)

    @property
    def n_actions(self) -> int:
        """Number of discrete actions."""
        self._require_env()
        return int(self.env.single_action_space.n)

    def _require_env(self) -> None:
        if self.env is None:
            raise ValueError(f"{type(self).__name__}: no env given (pass env= to use learn)")

    def _reset(self) -> tuple[Any, dict[str, Any]]:
        """Reset the vector env; seeded on the first reset only, so later episodes differ."""
        first = not getattr(self, "_seeded", False)
        obs, info = self.env.reset(seed=self.config.seed if first else None)
        self._seeded = True
        return obs, info

    def _at(self) -> str:
        """The update being computed and the env steps so far (for divergence errors)."""
        return f"update {len(self.history) + 1} (env step {self.num_timesteps})"

    def _backward(self, loss: torch.Tensor, max_grad_norm: float | None) -> None:
        """zero_grad, backward and gradient clipping; DivergenceError (before any optimizer step) when
        the loss or the gradient norm is NaN or infinite."""
        lr = self.config.learning_rate
        check_finite(self._at(), lr, loss=loss)
        self.optimizer.zero_grad()
        loss.backward()
        clip_and_check(self.policy.parameters(), max_grad_norm, self._at(), lr)

    def _log_episode(self, ret: float, length: int) -> None:
        self.episodes.append((self.num_timesteps, float(ret), int(length)))

    def recent_return(self, n: int = 20) -> float:
        """Mean return of the last `n` finished training episodes (nan before the first)."""
        if not self.episodes:
            return float("nan")
        return float(np.mean([r for _, r, _ in self.episodes[-n:]]))

    # -- user API ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, obs: Any, deterministic: bool = True,
                action_mask: np.ndarray | None = None) -> Any:
        """Action(s) for an observation: an int for a single one, an int64 array `[B]` for a batch."""
        single = is_single_obs(obs, self.obs_shapes)
        obs_t = obs_to_tensor(obs)
        if single:
            obs_t = map_obs(obs_t, lambda t: t.unsqueeze(0))
        logits, _ = self.policy(obs_t)
        mask = None
        if action_mask is not None:
            mask = torch.as_tensor(np.asarray(action_mask, dtype=bool)).reshape(logits.shape)
        dist = MaskedCategorical(logits, mask)
        actions = dist.mode if deterministic else dist.sample(self.generator)
        return int(actions[0]) if single else actions.numpy()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write policy, optimizer, RNG, hyperparameters and progress to `path` (.safetensors + .json);
        CheckpointError (nothing written) if the policy or optimizer holds NaN or infinity."""
        state = {
            "algo": type(self).__name__,
            "config": dataclasses.asdict(self.config),
            "policy": dict(self.policy.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "num_timesteps": self.num_timesteps,
            "obs_shapes": self.obs_shapes,
            "extra": self._extra_state(),
        }
        return save_checkpoint(path, state)

    @classmethod
    def load(cls, path: str | os.PathLike[str], policy: torch.nn.Module,
             env: gym.Env | VectorEnv | None = None) -> OnPolicyAlgorithm:
        """Rebuild an algorithm from `save`'s checkpoint into `policy` (same architecture)."""
        state = load_checkpoint(path)
        if state.get("algo") != cls.__name__:
            raise CheckpointError(f"{path}: checkpoint of {state.get('algo')!r}, not {cls.__name__}")
        try:  # a checkpoint that is well-formed but not ours is a CheckpointError, not a traceback
            names = {f.name for f in dataclasses.fields(cls.config_cls)}
            config = {k: v for k, v in state["config"].items() if k in names}
            algo = cls(policy, env, **config)
            load_model_state(policy, state["policy"], source=str(path))
            algo.optimizer.load_state_dict(state["optimizer"])
            algo.generator.set_state(state["generator"])
            algo.num_timesteps = int(state["num_timesteps"])
            algo._seeded = algo.num_timesteps > 0
            if algo.obs_shapes is None:
                algo.obs_shapes = state.get("obs_shapes")
            algo._load_extra_state(state.get("extra") or {})
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
            why = str(e).splitlines()[0] if str(e) else ""
            raise CheckpointError(f"{path}: checkpoint does not fit {cls.__name__} "
                                  f"({type(e).__name__}: {why})") from None
        return algo

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        pass
