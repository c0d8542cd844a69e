"""The RL agent for chips: moeplace.rl's PPO over batched episodes, with the size-independent ChipPolicy.

As in Circuit Training, the policy places the hard macros one per step (largest first) on grid
cells, the soft macros are then placed by force-directed placement, and the reward is −proxy
cost. Each PPO rollout is `n_envs` whole episodes stepped together (BatchedChipEnv: one batched
policy forward and one batched legality mask per step), made by a collector: in this process
("local"), in worker processes ("process") or in Ray actors ("ray"). Training runs for a wall-time
or episode budget (checked between rollouts); the best placement of any episode is kept.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from moeplace.place.chip.anneal import ChipSearchResult, soft_only
from moeplace.place.chip.problem import ChipProblem

# risk-seeking PPO: only a placement's best episodes matter, so each update trains on the top quarter
PPO_DEFAULTS = dict(n_minibatches=4, n_epochs=2, gamma=1.0, gae_lambda=1.0, learning_rate=1e-3,
                    risk_quantile=0.25, anneal_lr=False, ent_coef=0.01, max_samples=512)


def make_env(problem: ChipProblem, n_envs: int, design: int = 0, improve: bool = False,
             incumbent: tuple[np.ndarray, float] | None = None):
    """A BatchedChipEnv over `problem` (module level, so collectors in other processes can build it)."""
    from moeplace.place.chip.batched import BatchedChipEnv

    return BatchedChipEnv(problem, n_envs, design=design, improve=improve, incumbent=incumbent)


def make_policy(problem: ChipProblem, hidden: int = 64, rounds: int = 3, channels: int = 8,
                temperature: float = 1.0, incumbent_logit: float = 0.0):
    """A ChipPolicy (sampling at `temperature`, `incumbent_logit` on the incumbent's cell) with `problem`
    registered as design 0."""
    from moeplace.place.chip.policy import ChipPolicy

    policy = ChipPolicy(hidden=hidden, rounds=rounds, channels=channels)
    policy.temperature, policy.incumbent_logit = temperature, incumbent_logit
    policy.add_design(problem)
    return policy


def make_collector(kind: str, problem: ChipProblem, n_envs: int, policy_fn: Any, seed: int,
                   workers: int = 2, improve: bool = False,
                   incumbent: tuple[np.ndarray, float] | None = None) -> Any:
    """A collector of `kind` (local, process, ray) whose workers each step `n_envs` episodes (in
    improvement mode, each worker's env from `incumbent`, then its own best)."""
    from moeplace.rl.collectors import LocalCollector
    from moeplace.rl.collectors import make_collector as collector_of

    env_fn = functools.partial(make_env, problem, n_envs, improve=improve, incumbent=incumbent)
    return collector_of(kind, functools.partial(LocalCollector, env_fn, policy_fn), workers, seed)


def train_chip_rl(problem: ChipProblem, *, budget_s: float | None = None, max_episodes: int | None = None,
                  seed: int = 0, hidden: int = 64, rounds: int = 3, channels: int = 8, n_envs: int = 16,
                  collector: str = "local", workers: int = 2, progress: bool = True,
                  init_weights: dict | None = None, greedy_every: int = 2, temperature: float = 1.0,
                  incumbent_logit: float = 0.0, incumbent: tuple[np.ndarray, float] | None = None,
                  **ppo_hparams) -> ChipSearchResult:
    """Train PPO on the chip problem (soft='fd', no orientations) and return its best placement.

    `init_weights` (a ChipPolicy state dict of the same hidden/rounds/channels, e.g. a pre-trained
    policy's) starts PPO from those weights instead of a fresh initialisation (fine-tuning);
    `temperature` divides the policy's logits (learner and collectors alike). `incumbent_logit` > 0
    runs improvement mode: the envs show their best placement so far (from `incumbent`, a (placement,
    cost), if given; ignored when the mode is off) and the policy adds that many logits to its cell
    for each macro. Every
    `greedy_every` updates (0: never) one greedy episode of the current policy is scored too (it
    counts as an evaluation; the result is the best placement of any episode)."""
    if problem.orientations or problem.soft != "fd":
        raise ValueError("train_chip_rl needs a ChipProblem with orientations=False and soft='fd'")
    if problem.num_nodes == 0:
        return soft_only(problem, problem.fd_iterations)
    import torch

    from moeplace.place.search import _Budget
    from moeplace.rl import PPO

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors on a busy machine: extra threads only spin
    policy_fn = functools.partial(make_policy, problem, hidden, rounds, channels, temperature,
                                  incumbent_logit)
    policy = policy_fn()
    if init_weights is not None:
        policy.load_state_dict(init_weights)
    hp = dict(PPO_DEFAULTS, n_steps=problem.num_nodes, seed=seed)
    hp.update(ppo_hparams)
    algo = PPO(policy, None, **hp)
    budget = _Budget(budget_s, max_episodes, "ppo", progress)
    improve = incumbent_logit > 0
    source = make_collector(collector, problem, n_envs, policy_fn, seed, workers, improve=improve,
                            incumbent=incumbent if improve else None)

    from moeplace.place.chip.transfer import policy_episodes

    updates = [0]
    greedy_env = make_env(problem, 1) if greedy_every else None  # design 0: the learner's problem

    def after_update(algo: PPO, _stats: dict[str, float]) -> bool:
        for end in algo.last_rollout.ends:
            budget.record(end["placement"], end["cost"])
        updates[0] += 1
        if greedy_every and (updates[0] - 1) % greedy_every == 0 and budget.fraction() < 1.0:
            # the policy's most likely placement: what training converges to, found before sampling does
            end = policy_episodes(problem, policy, 1, greedy=True, env=greedy_env)[0]
            budget.record(end["placement"], end["cost"])
        return budget.fraction() < 1.0

    try:
        with budget.running():
            algo.learn(10**15, callback=after_update, progress_bar=False, collector=source)
    finally:
        source.close()
        torch.set_num_threads(threads)
    best = np.asarray(budget.best)
    x, y, _ = problem.place_soft(best)
    soft = problem.netlist.soft_macros
    terms = problem.terms(best)
    return ChipSearchResult(best, x[soft].copy(), y[soft].copy(), terms, budget.evaluations,
                            budget.elapsed(), budget.history, budget.interrupted)
