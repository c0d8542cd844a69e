"""On-policy rollouts as data: a worker steps a vector env with a policy and returns a `Rollout`.

PPO trains from Rollouts whether they come from its own env (in-process) or from collectors in
worker processes or Ray actors (moeplace.rl.collectors): the worker keeps its env's state between
rollouts, so episodes may span rollouts. Besides the Gymnasium conventions of moeplace.rl.vec, a
vector env may put `info["active"]` (bool [n_envs]: whose next step is a real transition; envs
that wait for the others of a lockstep batch are not) and `info["episode_end"]` (a list of dicts
describing finished episodes: they travel back to the learner in `Rollout.ends`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from moeplace.rl.distributions import MaskedCategorical
from moeplace.rl.vec import (
    Obs,
    action_mask,
    autoreset_mode,
    final_obs_batch,
    map_obs,
    obs_to_tensor,
    stack_obs,
    to_vector_env,
)


@dataclass
class Rollout:
    """`n_steps` steps of `n_envs` envs: tensors [T, N] (obs and masks [T, N, ...]), as PPO needs them."""

    obs: Obs
    masks: torch.Tensor | None
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    dones: torch.Tensor
    final_values: torch.Tensor  # V(final obs) where truncated (SAME_STEP)
    valid: torch.Tensor  # real transitions (not NEXT_STEP resets, not waiting envs)
    next_value: torch.Tensor  # [N]: V of the observation after the last step
    same_step: bool
    episodes: list[tuple[int, float, int]] = field(default_factory=list)  # (step t, return, length)
    ends: list[dict[str, Any]] = field(default_factory=list)  # the envs' info["episode_end"] entries

    @property
    def steps(self) -> int:
        """Number of real transitions."""
        return int(self.valid.sum())

    @property
    def n_envs(self) -> int:
        """Number of envs (the second dimension)."""
        return int(self.actions.shape[1])

    @staticmethod
    def cat(parts: list[Rollout]) -> Rollout:
        """Rollouts of equal length from different envs, side by side (env dimension concatenated)."""
        if len(parts) == 1:
            return parts[0]
        if len({p.actions.shape[0] for p in parts}) != 1 or len({p.same_step for p in parts}) != 1:
            raise ValueError("Rollout.cat: parts need the same n_steps and autoreset mode")
        out: dict[str, Any] = {}
        for f in fields(Rollout):
            items = [getattr(p, f.name) for p in parts]
            if f.name == "obs":
                out[f.name] = ({k: torch.cat([it[k] for it in items], 1) for k in items[0]}
                               if isinstance(items[0], dict) else torch.cat(items, 1))
            elif f.name == "masks":
                out[f.name] = None if items[0] is None else torch.cat(items, 1)
            elif f.name == "next_value":
                out[f.name] = torch.cat(items, 0)
            elif f.name == "episodes":
                out[f.name] = [e for it in items for e in it]
            elif f.name == "ends":  # an entry's "env" becomes its column in the joined rollout
                offsets = np.cumsum([0] + [p.n_envs for p in parts[:-1]])
                out[f.name] = [dict(e, env=e["env"] + int(off)) if "env" in e else e
                               for off, it in zip(offsets, items) for e in it]
            elif f.name == "same_step":
                out[f.name] = items[0]
            else:
                out[f.name] = torch.cat(items, 1)
        return Rollout(**out)


class RolloutWorker:
    """Steps a vector env with a policy (sampling with `generator`), `n_steps` at a time."""

    def __init__(self, env: gym.Env | VectorEnv, policy: torch.nn.Module,
                 generator: torch.Generator | None = None, seed: int | None = None) -> None:
        self.env = to_vector_env(env)
        self.policy = policy
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed or 0)
        self.seed = seed  # seed of the first reset (None: unseeded)
        self.n_envs = int(self.env.num_envs)
        self.n_actions = int(self.env.single_action_space.n)
        self.same_step = autoreset_mode(self.env) == AutoresetMode.SAME_STEP
        self._obs: Any = None

    def _start(self) -> None:
        obs, info = self.env.reset(seed=self.seed)
        self._obs, self._mask = obs, action_mask(info, self.n_envs, self.n_actions)
        self._active = _active(info, self.n_envs)
        self._after_done = np.zeros(self.n_envs, dtype=bool)  # NEXT_STEP: this step only resets
        self._ep_ret, self._ep_len = np.zeros(self.n_envs), np.zeros(self.n_envs, dtype=np.int64)

    @torch.no_grad()
    def collect(self, n_steps: int) -> Rollout:
        """Run `n_steps` steps of every env with the current policy."""
        if self._obs is None:
            self._start()
        env, policy, n_envs = self.env, self.policy, self.n_envs
        obs_buf, mask_buf = [], []
        actions = torch.zeros(n_steps, n_envs, dtype=torch.long)
        logprobs, values, rewards = (torch.zeros(n_steps, n_envs) for _ in range(3))
        terminated, dones, final_values = (torch.zeros(n_steps, n_envs) for _ in range(3))
        valid = torch.ones(n_steps, n_envs, dtype=torch.bool)
        episodes: list[tuple[int, float, int]] = []
        ends: list[dict[str, Any]] = []
        for t in range(n_steps):
            obs_t = obs_to_tensor(self._obs)
            mask_t = torch.as_tensor(self._mask) if self._mask is not None else None
            logits, value = policy(obs_t)
            dist = MaskedCategorical(logits, mask_t)
            action = dist.sample(self.generator)
            obs_buf.append(obs_t)
            mask_buf.append(mask_t)
            actions[t], logprobs[t], values[t] = action, dist.log_prob(action), value.flatten()
            real = ~self._after_done & self._active
            valid[t] = torch.as_tensor(real)

            obs, reward, term, trunc, info = env.step(action.numpy())
            done = np.logical_or(term, trunc)
            rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
            terminated[t] = torch.as_tensor(term, dtype=torch.float32)
            dones[t] = torch.as_tensor(done, dtype=torch.float32)
            if self.same_step:
                boot = np.flatnonzero(trunc & ~term)
                if len(boot):
                    _, v_final = policy(obs_to_tensor(final_obs_batch(info, boot)))
                    final_values[t, boot] = v_final.flatten()
            self._ep_ret[real] += reward[real]
            self._ep_len[real] += 1
            for i in np.flatnonzero(done & real):
                episodes.append((t, float(self._ep_ret[i]), int(self._ep_len[i])))
                self._ep_ret[i], self._ep_len[i] = 0.0, 0
            ends.extend(info.get("episode_end", ()))
            self._after_done = done.copy() if not self.same_step else np.zeros(n_envs, dtype=bool)
            self._obs, self._mask = obs, action_mask(info, n_envs, self.n_actions)
            self._active = _active(info, n_envs)
        _, next_value = policy(obs_to_tensor(self._obs))
        return Rollout(stack_obs(obs_buf), torch.stack(mask_buf) if mask_buf[0] is not None else None,
                       actions, logprobs, values, rewards, terminated, dones, final_values, valid,
                       next_value.flatten(), self.same_step, episodes, ends)


def _active(info: dict[str, Any], n_envs: int) -> np.ndarray:
    """info["active"] as bool [n_envs] (all True when the env does not say)."""
    if "active" not in info:
        return np.ones(n_envs, dtype=bool)
    return np.asarray(info["active"], dtype=bool).reshape(n_envs)


def flatten_rollout(r: Rollout) -> tuple[Obs, torch.Tensor | None, torch.Tensor]:
    """The rollout's observations and masks flattened to [T * N, ...], with the indices of real steps."""
    keep = r.valid.flatten().nonzero().squeeze(-1)
    obs = map_obs(r.obs, lambda x: x.flatten(0, 1)[keep])
    masks = r.masks.flatten(0, 1)[keep] if r.masks is not None else None
    return obs, masks, keep
