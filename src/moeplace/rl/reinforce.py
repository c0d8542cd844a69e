"""REINFORCE with a moving-average baseline: the algorithm of the 2017 device-placement paper.

One episode is one sample. Each update collects at least `episodes_per_batch` complete episodes
with the current policy (episodes started before the previous update are discarded, so every
sample is on-policy), gives each its return R (discounted by `gamma`, 1 by default), and follows
the gradient of  mean_i (R_i - b) * sum_t log pi(a_t | s_t)  (+ an optional entropy bonus), where
the baseline b is an exponential moving average of past batch-mean returns:
b <- decay * b + (1 - decay) * mean_i R_i  (initialised with the first batch's mean). Episodes
cut by a time limit count with the return they collected (no critic to bootstrap from).

`SequenceREINFORCE` is the same gradient without an environment: a policy that samples whole
sequences (placements) at once, a batch scored by a cost function, as the 2017 device-placement
paper trains its seq2seq placer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from moeplace.rl.base import Callback, OnPolicyAlgorithm, divergence_guard, progress_bar_for
from moeplace.rl.distributions import MaskedCategorical
from moeplace.rl.vec import action_mask, autoreset_mode, index_obs, map_obs, obs_to_tensor, stack_obs


@dataclass
class REINFORCEConfig:
    """Every REINFORCE hyperparameter."""

    learning_rate: float = 1e-3
    """Adam learning rate."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    episodes_per_batch: int = 8
    """Complete episodes per update (at least; all episodes finished by then are used)."""
    gamma: float = 1.0
    """Discount of rewards within an episode when forming its return."""
    baseline_decay: float = 0.9
    """Decay of the exponential moving-average baseline (0: the last batch's mean)."""
    reward_to_go: bool = False
    """Weight each step's log-probability by the return from that step on, G_t - b, instead of the
    whole episode's R - b (same expectation, less variance; the paper's setting is False)."""
    normalize_advantage: bool = False
    """Divide the advantages by their standard deviation over the batch."""
    ent_coef: float = 0.0
    """Entropy bonus weight (mean entropy per step)."""
    max_grad_norm: float | None = 1.0
    """Global gradient-norm clip (None: no clipping)."""
    seed: int = 0
    """Seed of the env resets and action sampling."""


class REINFORCE(OnPolicyAlgorithm):
    """Monte-Carlo policy gradient with an exponential moving-average baseline; masks supported."""

    config_cls = REINFORCEConfig
    config: REINFORCEConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.baseline: float | None = None

    def _extra_state(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.baseline = extra.get("baseline")

    def _collect(self, budget: int) -> tuple[Any, torch.Tensor, torch.Tensor | None, list, list]:
        """Run the policy until enough episodes finish; return their flattened steps and returns.

        Returns (obs [S, ...], actions [S], masks [S, A] or None, episode of each step as a list of
        index arrays into the S steps, discounted returns).
        """
        cfg, env = self.config, self.env
        n_envs, n_actions = self.n_envs, self.n_actions
        same_step = autoreset_mode(env) == AutoresetMode.SAME_STEP
        obs, info = self._reset()
        mask = action_mask(info, n_envs, n_actions)
        after_done = np.zeros(n_envs, dtype=bool)
        obs_buf, mask_buf, act_buf = [], [], []
        open_steps: list[list[int]] = [[] for _ in range(n_envs)]  # flat indices t * n_envs + i
        open_rewards: list[list[float]] = [[] for _ in range(n_envs)]
        episodes, returns, to_go = [], [], []
        steps = 0
        while len(episodes) < cfg.episodes_per_batch and steps < budget:
            obs_t = obs_to_tensor(obs)
            mask_t = torch.as_tensor(mask) if mask is not None else None
            with torch.no_grad():
                logits, _ = self.policy(obs_t)
                action = MaskedCategorical(logits, mask_t).sample(self.generator)
            t = len(obs_buf)
            obs_buf.append(obs_t)
            mask_buf.append(mask_t)
            act_buf.append(action)
            obs, reward, term, trunc, info = env.step(action.numpy())
            done = np.logical_or(term, trunc)
            real = int((~after_done).sum())
            steps += real
            self.num_timesteps += real  # before logging, so an episode's end step counts its last step
            for i in np.flatnonzero(~after_done):
                open_steps[i].append(t * n_envs + i)
                open_rewards[i].append(float(reward[i]))
                if done[i]:
                    rews = np.asarray(open_rewards[i])
                    g = np.zeros(len(rews))
                    acc = 0.0
                    for k in range(len(rews) - 1, -1, -1):
                        acc = rews[k] + cfg.gamma * acc
                        g[k] = acc
                    episodes.append(np.asarray(open_steps[i]))
                    returns.append(float(g[0]))
                    to_go.append(g)
                    self._log_episode(float(rews.sum()), len(rews))
                    open_steps[i], open_rewards[i] = [], []
            after_done = done.copy() if not same_step else np.zeros(n_envs, dtype=bool)
            mask = action_mask(info, n_envs, n_actions)
        self._last_collect_steps = steps
        self._to_go = to_go
        if not obs_buf:
            return None, torch.zeros(0), None, [], []
        b_obs = map_obs(stack_obs(obs_buf), lambda x: x.flatten(0, 1))
        b_act = torch.stack(act_buf).flatten()
        b_mask = torch.stack(mask_buf).flatten(0, 1) if mask_buf[0] is not None else None
        return b_obs, b_act, b_mask, episodes, returns

    @divergence_guard
    def learn(self, total_timesteps: int, callback: Callback | None = None,
              progress_bar: bool = True) -> REINFORCE:
        """Train for `total_timesteps` environment steps (the last, incomplete batch is dropped)."""
        self._require_env()
        cfg = self.config
        bar = progress_bar_for(total_timesteps, "reinforce", progress_bar)
        start_steps, start_time = self.num_timesteps, time.perf_counter()
        end = self.num_timesteps + total_timesteps
        while self.num_timesteps < end:
            b_obs, b_act, b_mask, episodes, returns = self._collect(end - self.num_timesteps)
            bar.update(self._last_collect_steps)
            if len(episodes) < cfg.episodes_per_batch:
                break  # budget ran out before a full batch finished

            # Advantage of each episode against the moving-average baseline (before this batch).
            r = torch.tensor(returns, dtype=torch.float32)
            if self.baseline is None:
                self.baseline = float(r.mean())
            episode_of_step = torch.repeat_interleave(
                torch.arange(len(episodes)), torch.tensor([len(e) for e in episodes]))
            if cfg.reward_to_go:  # one advantage per step: G_t - b
                adv = torch.as_tensor(np.concatenate(self._to_go), dtype=torch.float32) - self.baseline
            else:  # one advantage per episode, shared by its steps: R - b
                adv = (r - self.baseline)[episode_of_step]
            if cfg.normalize_advantage and len(r) > 1:
                adv = adv / (adv.std() + 1e-8)

            # Log-probabilities of every step of every episode, in one forward pass; the loss is
            # -mean over episodes of sum_t advantage_t * log pi(a_t | s_t).
            idx = torch.as_tensor(np.concatenate(episodes), dtype=torch.long)
            logits, _ = self.policy(index_obs(b_obs, idx))
            dist = MaskedCategorical(logits, b_mask[idx] if b_mask is not None else None)
            logp = dist.log_prob(b_act[idx])
            entropy = dist.entropy().mean()
            pg_loss = -(adv * logp).sum() / len(episodes)
            loss = pg_loss - cfg.ent_coef * entropy
            self._backward(loss, cfg.max_grad_norm)  # DivergenceError if not finite
            self.optimizer.step()
            self.baseline = cfg.baseline_decay * self.baseline + (1 - cfg.baseline_decay) * float(r.mean())

            elapsed = time.perf_counter() - start_time
            stats = {
                "global_step": float(self.num_timesteps),
                "mean_return": self.recent_return(),
                "batch_return": float(r.mean()),
                "baseline": self.baseline,
                "policy_loss": pg_loss.item(),
                "entropy": entropy.item(),
                "episodes": float(len(episodes)),
                "steps_per_second": (self.num_timesteps - start_steps) / max(elapsed, 1e-9),
            }
            self.history.append(stats)
            bar.set_postfix(ret=f"{stats['mean_return']:.3g}", b=f"{self.baseline:.3g}")
            if callback is not None and callback(self, stats) is False:
                break
        bar.close()
        return self


# -- REINFORCE over whole sequences: one batch of sampled placements, scored by a cost function ------


class SequencePolicy(Protocol):
    """A policy over whole action sequences given a context (e.g. a problem's node features)."""

    def sample_with_logp(self, ctx: Any, batch: int, greedy: bool = False,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences `[B, N]` (int64) and their log-probabilities `[B]`, without gradients."""
        ...

    def score(self, ctx: Any, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities `[B]` and entropies `[B]` of `actions` `[B, N]`, with gradients."""
        ...


@dataclass
class SequenceREINFORCEConfig:
    """Every hyperparameter of `SequenceREINFORCE`."""

    learning_rate: float = 3e-3
    """Adam learning rate."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    batch: int = 32
    """Sequences sampled per update."""
    grad_batch: int | None = None
    """Sequences of the batch the gradient is computed on (None: all): a random subset, their
    advantages still against the whole batch's mean and deviation (sampling a sequence costs far less
    than scoring it with gradients, so a large batch gives a better baseline and more placements)."""
    reward: str = "neg_sqrt"
    """Reward of a cost c: "neg_sqrt" (-sqrt(c), the 2017 device-placement paper's) or "neg" (-c)."""
    ent_coef: float = 0.3
    """Entropy bonus weight (entropy of the whole sequence) at the start of training."""
    ent_coef_end: float | None = 3e-3
    """Entropy weight at the end, reached geometrically over the training fraction (None: constant)."""
    epochs: int = 1
    """Gradient steps per batch; the first is the plain REINFORCE gradient, later ones are clipped."""
    clip_coef: float = 0.2
    """PPO clip of the probability ratio in epochs after the first."""
    sil_coef: float = 0.3
    """Self-imitation weight (0: off): log-probability of buffered sequences that beat the batch mean."""
    sil_size: int = 16
    """How many of the buffer's best sequences self-imitation may use."""
    max_grad_norm: float | None = 1.0
    """Global gradient-norm clip (None: no clipping)."""
    seed: int = 0
    """Seed of the sampling generator."""


class EliteBuffer:
    """The `capacity` cheapest distinct sequences seen, as (cost, sequence), cheapest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self._items = capacity, {}

    def add(self, sequences: np.ndarray, costs: np.ndarray) -> None:
        """Add a batch (a sequence already held keeps its first entry); keep the cheapest."""
        for s, c in zip(sequences, costs):
            self._items.setdefault(s.tobytes(), (float(c), s))
        self._items = dict(sorted(self._items.items(), key=lambda kv: kv[1][0])[:self.capacity])

    def best(self, n: int | None = None) -> list[tuple[float, np.ndarray]]:
        """The `n` cheapest entries (all when None)."""
        return list(self._items.values())[:n]


def reward_of(costs: np.ndarray, kind: str) -> np.ndarray:
    """Rewards of costs: -sqrt(cost) ("neg_sqrt") or -cost ("neg")."""
    if kind == "neg_sqrt":
        return -np.sqrt(costs)
    if kind == "neg":
        return -np.asarray(costs, dtype=float)
    raise ValueError(f"reward must be 'neg_sqrt' or 'neg', got {kind!r}")


def sil_targets(elite: list[tuple[float, np.ndarray]], reward: np.ndarray,
                kind: str = "neg_sqrt") -> tuple[torch.Tensor, torch.Tensor] | None:
    """Self-imitation targets (Oh et al., ICML 2018): the (cost, sequence) pairs whose reward beats
    the batch's mean reward, weighted by the margin in batch standard deviations; None when none does."""
    if not elite:
        return None
    e_reward = reward_of(np.array([c for c, _ in elite]), kind)
    w = np.maximum(e_reward - reward.mean(), 0.0) / (reward.std() + 1e-12)
    if not (w > 0).any():
        return None
    actions = np.stack([p for _, p in elite])[w > 0]
    return torch.as_tensor(actions, dtype=torch.long), torch.as_tensor(w[w > 0], dtype=torch.float32)


@dataclass
class SequenceBatch:
    """One update's samples and what was found: the sampled sequences and costs, plus any improved
    sequence the caller's `improve` hook added (`found`, `found_costs`)."""

    sequences: np.ndarray
    costs: np.ndarray
    found: np.ndarray
    found_costs: np.ndarray


class SequenceREINFORCE(OnPolicyAlgorithm):
    """REINFORCE on a batch of whole sequences: reward = f(cost), baseline = the batch's mean reward,
    advantages divided by the batch's standard deviation, an entropy bonus annealed over training,
    optional PPO-clipped extra epochs on the batch and a self-imitation term over an `EliteBuffer`.

    No environment: `step(ctx, cost_fn)` samples `batch` sequences from `policy` for context `ctx`
    (one problem), scores them with `cost_fn`, and updates. Checkpoints as every algorithm here.
    """

    config_cls = SequenceREINFORCEConfig
    config: SequenceREINFORCEConfig

    def entropy_coef(self, frac: float) -> float:
        """The entropy weight after fraction `frac` of training (geometric from start to end)."""
        cfg = self.config
        if cfg.ent_coef_end is None:
            return cfg.ent_coef
        return cfg.ent_coef * (cfg.ent_coef_end / cfg.ent_coef) ** min(frac, 1.0)

    @divergence_guard
    def step(self, ctx: Any, cost_fn: Callable[[np.ndarray], float], frac: float = 0.0,
             elite: EliteBuffer | None = None,
             improve: Callable[[np.ndarray, float], tuple[np.ndarray, float]] | None = None) -> SequenceBatch:
        """One update on `ctx`: sample, cost, optionally `improve` the cheapest sample (it joins what
        was found and the buffer, not the gradient), add to `elite`, then `epochs` gradient steps."""
        cfg, policy = self.config, self.policy
        actions, old_logp = policy.sample_with_logp(ctx, cfg.batch, generator=self.generator)
        seqs = actions.numpy()
        costs = np.array([cost_fn(s) for s in seqs])
        found, found_costs = seqs, costs
        if improve is not None:  # expert iteration: the batch's best sample, improved by the caller
            k = int(np.argmin(costs))
            better, c = improve(seqs[k], float(costs[k]))
            found, found_costs = np.concatenate([seqs, better[None]]), np.append(costs, c)
        reward = reward_of(costs, cfg.reward)
        adv = reward - reward.mean()
        adv_t = torch.as_tensor(adv / (adv.std() + 1e-12), dtype=torch.float32)
        coef = self.entropy_coef(frac)
        sil = None
        if elite is not None:
            elite.add(found, found_costs)
            if cfg.sil_coef > 0:  # the best sequences so far that beat this batch's mean
                sil = sil_targets(elite.best(cfg.sil_size), reward, cfg.reward)
        n = cfg.batch
        if cfg.grad_batch is not None and cfg.grad_batch < n:  # an unbiased random subset
            pick = torch.randperm(n, generator=self.generator)[:cfg.grad_batch]
            actions, old_logp, adv_t, n = actions[pick], old_logp[pick], adv_t[pick], cfg.grad_batch
        for _ in range(cfg.epochs):  # epoch 1 = the plain REINFORCE gradient (ratio 1)
            if sil is None:
                logp, ent = policy.score(ctx, actions)
            else:  # the batch and the self-imitation targets in one scoring pass
                logp, ent = policy.score(ctx, torch.cat([actions, sil[0]]))
                sil_logp, logp, ent = logp[n:], logp[:n], ent[:n]
            ratio = torch.exp(logp - old_logp)
            clipped = ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
            surrogate = torch.minimum(ratio * adv_t, clipped * adv_t)
            loss = -surrogate.mean() - coef * ent.mean()
            if sil is not None:
                loss = loss - cfg.sil_coef * (sil[1] * sil_logp).sum() / n
            self._backward(loss, cfg.max_grad_norm)  # DivergenceError if not finite
            self.optimizer.step()
        self.num_timesteps += cfg.batch
        self.history.append({"global_step": float(self.num_timesteps), "batch_cost": float(costs.mean()),
                             "best_cost": float(found_costs.min()), "entropy_coef": coef,
                             "loss": float(loss.detach())})
        return SequenceBatch(seqs, costs, found, found_costs)
