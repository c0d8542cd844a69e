"""Proximal Policy Optimization (Schulman et al. 2017), written out in order, CleanRL style.

One update: roll out `n_steps` in each of the vector env's sub-environments, compute GAE(lambda)
advantages (bootstrapping from the value of the final observation on truncation, from zero on
termination), then run `n_epochs` passes of shuffled minibatches over the clipped surrogate
objective, the (optionally clipped) value loss and an entropy bonus, with gradient clipping,
optional linear learning-rate annealing and an optional target-KL early stop. With `risk_quantile`
the update is risk-seeking: it trains on the rollout's best episodes only (`risk_seeking_advantages`).
With `ref_kl_coef` > 0 the loss adds that weight times KL(policy || reference) on each minibatch's
observations, `reference` a frozen policy given to PPO (e.g. a prior the policy should not forget).

    algo = PPO(policy, envs, n_steps=32, n_epochs=20)
    algo.learn(100_000)
    action = algo.predict(obs)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from moeplace.rl.base import Callback, OnPolicyAlgorithm, divergence_guard, progress_bar_for
from moeplace.rl.distributions import MaskedCategorical
from moeplace.rl.rollout import Rollout, RolloutWorker, flatten_rollout
from moeplace.rl.vec import index_obs

if TYPE_CHECKING:
    from moeplace.rl.collectors import Collector


@dataclass
class PPOConfig:
    """Every PPO hyperparameter, with the defaults of CleanRL's ppo.py unless noted."""

    learning_rate: float = 2.5e-4
    """Adam learning rate (the start value when annealed)."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over the `learn` call."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    n_steps: int = 128
    """Steps per sub-environment per rollout (batch = n_envs * n_steps)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (1 = Monte-Carlo returns, 0 = one-step TD)."""
    n_minibatches: int = 4
    """Minibatches per epoch (minibatch = batch / n_minibatches)."""
    n_epochs: int = 4
    """Passes over each rollout."""
    norm_adv: bool = True
    """Normalise advantages to mean 0, std 1 within each minibatch."""
    clip_coef: float = 0.2
    """Surrogate clipping range epsilon."""
    clip_vloss: bool = True
    """Clip the value loss around the rollout's values as well."""
    ent_coef: float = 0.01
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    target_kl: float | None = None
    """Stop the epochs of an update early once approx KL exceeds this (None: never)."""
    max_samples: int | None = None
    """Train each update on at most this many real transitions, drawn at random after GAE (None: all);
    bounds update time when rollouts are long and their steps strongly correlated (chip episodes)."""
    risk_quantile: float | None = None
    """Risk-seeking policy gradient (Petersen et al. 2021): train only on the complete episodes whose
    return is in the rollout's top `risk_quantile` fraction, with advantage return − that quantile
    (no critic in the advantage): for problems where the best episode, not the mean, counts."""
    ref_kl_coef: float = 0.0
    """Weight of KL(policy || reference) in the loss (0: no reference); needs PPO's `reference`."""
    seed: int = 0
    """Seed of the env resets, action sampling and minibatch shuffling."""

    def __post_init__(self) -> None:
        if self.risk_quantile is not None and not 0.0 < self.risk_quantile <= 1.0:
            raise ValueError(f"PPO: risk_quantile must be in (0, 1], got {self.risk_quantile}")
        if not self.ref_kl_coef >= 0.0:
            raise ValueError(f"PPO: ref_kl_coef must be >= 0, got {self.ref_kl_coef}")


class PPO(OnPolicyAlgorithm):
    """PPO over a Gymnasium (vector) env with discrete, optionally masked, actions."""

    config_cls = PPOConfig
    config: PPOConfig
    _worker: RolloutWorker | None = None  # steps self.env (built on the first learn)
    last_rollout: Rollout | None = None
    reference: torch.nn.Module | None = None  # the frozen policy of the ref_kl_coef term

    @divergence_guard
    def learn(self, total_timesteps: int, callback: Callback | None = None,
              progress_bar: bool = True, collector: Collector | None = None) -> PPO:
        """Train for `total_timesteps` environment steps (rounded down to whole rollouts, at least one).

        Rollouts come from the algorithm's own env, or from `collector` (moeplace.rl.collectors:
        batched envs in this process, worker processes or Ray actors), which is sent the current
        policy weights before each rollout. `self.last_rollout` holds the latest one.
        """
        cfg = self.config
        if collector is None:
            self._require_env()
            if self._worker is None:
                first = not getattr(self, "_seeded", False)
                self._worker = RolloutWorker(self.env, self.policy, self.generator,
                                             seed=cfg.seed if first else None)
                self._seeded = True
            n_envs = self._worker.n_envs
        else:
            n_envs = collector.n_envs
        n_steps = cfg.n_steps
        batch_size = n_envs * n_steps
        num_updates = max(1, total_timesteps // batch_size)
        bar = progress_bar_for(num_updates * batch_size, "ppo", progress_bar)
        start_steps, start_time = self.num_timesteps, time.perf_counter()

        for update in range(num_updates):
            if cfg.anneal_lr:
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.learning_rate * (1.0 - update / num_updates)

            # 1. Rollout.
            if collector is None:
                rollout = self._worker.collect(n_steps)
            else:
                weights = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
                rollout = collector.collect(weights, n_steps)
            self.last_rollout = rollout
            real_per_step = rollout.valid.sum(dim=1).cumsum(0)
            for t, ret, length in rollout.episodes:
                self.episodes.append((self.num_timesteps + int(real_per_step[t]), float(ret), int(length)))
            self.num_timesteps += rollout.steps
            bar.update(batch_size)
            stats = self.update(rollout)
            elapsed = time.perf_counter() - start_time
            stats["steps_per_second"] = (self.num_timesteps - start_steps) / max(elapsed, 1e-9)
            self.history.append(stats)
            bar.set_postfix(ret=f"{stats['mean_return']:.3g}", kl=f"{stats['approx_kl']:.3f}")
            if callback is not None and callback(self, stats) is False:
                break
        bar.close()
        return self

    def update(self, rollout: Rollout) -> dict[str, float]:
        """One PPO update (GAE, epochs of clipped-objective minibatches) from a rollout; its diagnostics."""
        cfg, policy = self.config, self.policy
        if cfg.ref_kl_coef > 0 and self.reference is None:
            raise ValueError("PPO: ref_kl_coef > 0 needs a reference policy (set algo.reference)")
        n_steps = rollout.actions.shape[0]
        n_envs = rollout.n_envs
        same_step = rollout.same_step
        values, rewards, dones = rollout.values, rollout.rewards, rollout.dones
        terminated, final_values, next_value = rollout.terminated, rollout.final_values, rollout.next_value
        # 2. GAE(lambda). next_v is V(s_{t+1}); on an episode end the bootstrap is 0 when
        # terminated and V(final obs) when truncated (NEXT_STEP: s_{t+1} *is* the final obs).
        advantages = torch.zeros(n_steps, n_envs)
        last_gae = torch.zeros(n_envs)
        for t in reversed(range(n_steps)):
            next_v = next_value.flatten() if t == n_steps - 1 else values[t + 1]
            if same_step:
                boot = torch.where(dones[t].bool(), final_values[t] * (1 - terminated[t]), next_v)
            else:
                boot = next_v * (1 - terminated[t])
            delta = rewards[t] + cfg.gamma * boot - values[t]
            last_gae = delta + cfg.gamma * cfg.gae_lambda * (1 - dones[t]) * last_gae
            advantages[t] = last_gae
        returns = advantages + values
        if cfg.risk_quantile is not None:
            advantages, elite = risk_seeking_advantages(rewards, dones, rollout.valid.bool(),
                                                        cfg.risk_quantile)

        # 3. Flatten the batch, keep the real transitions.
        b_obs, b_mask, keep = flatten_rollout(rollout)
        if cfg.risk_quantile is not None:
            top = elite.flatten()[keep]
            b_obs, keep = index_obs(b_obs, top.nonzero().flatten()), keep[top]
            b_mask = b_mask[top] if b_mask is not None else None
        if cfg.max_samples is not None and len(keep) > cfg.max_samples:
            pick = torch.randperm(len(keep), generator=self.generator)[:cfg.max_samples].sort().values
            b_obs, keep = index_obs(b_obs, pick), keep[pick]
            b_mask = b_mask[pick] if b_mask is not None else None
        b_actions, b_logprobs = rollout.actions.flatten()[keep], rollout.logprobs.flatten()[keep]
        b_adv, b_returns = advantages.flatten()[keep], returns.flatten()[keep]
        b_values = values.flatten()[keep]

        # 4. Epochs of minibatches over the clipped objective.
        n = len(keep)  # 0 when risk-seeking and no episode ended: no minibatch, NaN losses below
        minibatch_size = max(1, -(-n // cfg.n_minibatches))
        clipfracs, approx_kl = [], torch.tensor(0.0)
        v_loss = pg_loss = entropy_loss = ref_kl = torch.tensor(float("nan"))
        for _epoch in range(cfg.n_epochs):
            perm = torch.randperm(n, generator=self.generator)
            for start in range(0, n, minibatch_size):
                mb = perm[start:start + minibatch_size]
                logits, new_value = policy(index_obs(b_obs, mb))
                dist = MaskedCategorical(logits, b_mask[mb] if b_mask is not None else None)
                new_logprob, entropy = dist.log_prob(b_actions[mb]), dist.entropy()
                log_ratio = new_logprob - b_logprobs[mb]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()  # the k3 estimator
                    clipfracs.append(((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item())

                mb_adv = b_adv[mb]
                if cfg.norm_adv and cfg.risk_quantile is not None:  # advantages >= 0: scaled, not centred
                    mb_adv = mb_adv / (mb_adv.pow(2).mean().sqrt() + 1e-8)
                elif cfg.norm_adv and len(mb) > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()

                new_value = new_value.flatten()
                if cfg.clip_vloss:
                    v_delta = (new_value - b_values[mb]).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_clipped = b_values[mb] + v_delta
                    v_loss = 0.5 * torch.max((new_value - b_returns[mb]) ** 2,
                                             (v_clipped - b_returns[mb]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((new_value - b_returns[mb]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
                if cfg.ref_kl_coef > 0:
                    with torch.no_grad():
                        ref_logits, _ = self.reference(index_obs(b_obs, mb))
                    ref_kl = dist.kl(MaskedCategorical(ref_logits, dist.mask)).mean()
                    loss = loss + cfg.ref_kl_coef * ref_kl
                self._backward(loss, cfg.max_grad_norm)  # DivergenceError if not finite
                self.optimizer.step()
            if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                break

        # 5. Diagnostics.
        var_y = b_returns.var().item() if n > 1 else 0.0
        explained_var = float("nan") if var_y == 0 else 1 - (b_returns - b_values).var().item() / var_y
        return {
            "global_step": float(self.num_timesteps),
            "mean_return": self.recent_return(),
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "value_loss": v_loss.item(), "policy_loss": pg_loss.item(),
            "entropy": entropy_loss.item(), "approx_kl": approx_kl.item(), "ref_kl": ref_kl.item(),
            "clipfrac": float(np.mean(clipfracs)) if clipfracs else 0.0, "explained_variance": explained_var,
        }


def risk_seeking_advantages(rewards: torch.Tensor, dones: torch.Tensor, valid: torch.Tensor,
                            quantile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """([T, N] advantages, [T, N] elite mask): each transition of a complete episode gets its episode's
    return minus the (1 − quantile) quantile of the rollout's episode returns where that return is at
    least the quantile (elite), and is left out otherwise; episodes still running at the end are left out."""
    n_steps, n_envs = rewards.shape
    total = torch.full((n_steps, n_envs), float("nan"))
    acc = torch.zeros(n_envs)
    for t in range(n_steps):  # the return so far of each env's current episode; its total where it ends
        acc = acc + rewards[t] * valid[t]
        ends = dones[t].bool()
        total[t, ends] = acc[ends]
        acc = torch.where(ends, torch.zeros_like(acc), acc)
    episode = torch.full((n_envs,), float("nan"))
    for t in reversed(range(n_steps)):  # carry each total back over its episode's steps
        ends = dones[t].bool()
        episode = torch.where(ends, total[t], episode)
        total[t] = episode
    complete = valid & ~total.isnan()
    advantages, elite = torch.zeros(n_steps, n_envs), torch.zeros(n_steps, n_envs, dtype=torch.bool)
    if dones.bool().any():
        threshold = torch.quantile(total[dones.bool()], 1.0 - quantile)  # over episodes, not steps
        elite = complete & (total >= threshold)
        advantages = torch.where(elite, total - threshold, torch.zeros(()))
    return advantages, elite
