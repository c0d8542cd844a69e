"""Using a pre-trained chip policy on a new design: zero-shot rollouts, then PPO fine-tuning.

Zero-shot is one greedy episode (the most likely cell at every step) and the best of the sampled
episodes, `samples` at a time stepped together in one BatchedChipEnv, batch after batch until the
zero-shot budget is spent (at least one batch); no weight changes. Fine-tuning continues
PPO (train_chip_rl) from the policy's weights on the new design for its own budget. The result is
the cheapest placement of the three, as the one ChipSearchResult every method returns, and a
dict of what each phase found and how long it took. Zero-shot and fine-tuning sample at a
temperature (the logits divided by it; the greedy episode is unchanged), 1 by default: 2 helped
zero-shot on validation designs but not fine-tuning on held-out ones (docs/chip.md). With an
incumbent logit > 0 both run in improvement mode: the sampled episodes see the best placement so far
(first the greedy one), whose cell gets that many extra logits for each macro, so samples are
variations of it (no weight change in zero-shot; the policy gradient alone in fine-tuning).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from moeplace.place.chip.anneal import ChipSearchResult, soft_only
from moeplace.place.chip.problem import ChipProblem
from moeplace.rl.distributions import MaskedCategorical
from moeplace.rl.vec import obs_to_tensor


@torch.no_grad()
def policy_episodes(problem: ChipProblem, policy: Any, n: int, greedy: bool, seed: int = 0,
                    env: Any = None) -> list[dict[str, Any]]:
    """`n` episodes of `policy` on `problem` stepped together; their episode_end records (cost, placement).
    `env`: a BatchedChipEnv of `n` envs whose design the policy already has (else one is built and
    the problem registered)."""
    from moeplace.place.chip.batched import BatchedChipEnv

    if env is None:
        env = BatchedChipEnv(problem, n, design=policy.add_design(problem))
    gen = torch.Generator().manual_seed(seed)
    obs, _ = env.reset()
    ends: list[dict[str, Any]] = []
    for _ in range(problem.num_nodes):
        obs_t = obs_to_tensor(obs)
        logits, _ = policy(obs_t)
        dist = MaskedCategorical(logits, torch.as_tensor(obs["action_mask"]).bool())
        action = dist.mode if greedy else dist.sample(gen)
        obs, _, _, _, info = env.step(action.numpy())
        ends.extend(info.get("episode_end", ()))
        if len(ends) >= n:
            break
    return ends[:n]


def _result(problem: ChipProblem, placement: np.ndarray, evaluations: int, wall_s: float,
            history: list, interrupted: bool = False) -> ChipSearchResult:
    """A ChipSearchResult for a hard-macro placement (soft macros by force-directed placement)."""
    x, y, _ = problem.place_soft(placement)
    soft = problem.netlist.soft_macros
    return ChipSearchResult(placement, x[soft].copy(), y[soft].copy(), problem.terms(placement), evaluations,
                            wall_s, history, interrupted)


def sampled_episodes(problem: ChipProblem, policy: Any, env: Any, samples: int, seed: int,
                     budget_s: float | None) -> list[dict[str, Any]]:
    """Batches of `samples` sampled episodes (batch b seeded by (seed, b)) until `budget_s` seconds
    are spent, checked between batches (None or 0: one batch)."""
    start, ends = time.perf_counter(), []
    batch = 0
    while True:
        batch_seed = int(np.random.SeedSequence([seed, batch]).generate_state(1)[0]) if batch else seed
        ends.extend(policy_episodes(problem, policy, samples, greedy=False, seed=batch_seed, env=env))
        batch += 1
        spent = time.perf_counter() - start
        if not budget_s or spent + spent / batch > budget_s:  # the next batch would overrun
            return ends


def run_pretrained(problem: ChipProblem, policy: Any, *, finetune_s: float | None = None,
                   budget_s: float | None = None, samples: int = 16, zero_shot_s: float | None = None,
                   seed: int = 0, n_envs: int = 16, collector: str = "local", progress: bool = True,
                   temperature: float = 1.0, incumbent_logit: float = 0.0
                   ) -> tuple[ChipSearchResult, dict[str, Any]]:
    """Zero-shot (greedy, best of sampled episodes: `samples` per batch, batches for `zero_shot_s`
    seconds, None: one batch) then `finetune_s` seconds of PPO from the policy's weights (None: what
    `budget_s` leaves after the zero-shot rollouts; 0: no fine-tuning), sampling at `temperature`
    throughout, in improvement mode when `incumbent_logit` > 0. The zero-shot best is the incumbent,
    so the result is never worse than zero-shot."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not incumbent_logit >= 0:
        raise ValueError(f"incumbent_logit must be >= 0, got {incumbent_logit}")
    if problem.num_nodes == 0:
        return soft_only(problem, problem.fd_iterations), {}
    threads, warmth, bonus = torch.get_num_threads(), policy.temperature, policy.incumbent_logit
    torch.set_num_threads(1)
    policy.temperature, policy.incumbent_logit = temperature, incumbent_logit
    start = time.perf_counter()
    try:
        from moeplace.place.chip.batched import BatchedChipEnv

        t0 = time.perf_counter()
        design = policy.add_design(problem)  # once for both rollouts
        greedy = policy_episodes(problem, policy, 1, greedy=True, env=BatchedChipEnv(problem, 1, design))[0]
        t1 = time.perf_counter()
        improve = incumbent_logit > 0
        env = BatchedChipEnv(problem, samples, design, improve=improve,
                             incumbent=(greedy["placement"], greedy["cost"]) if improve else None)
        sampled = sampled_episodes(problem, policy, env, samples, seed,
                                   None if zero_shot_s is None else max(0.0, zero_shot_s - (t1 - t0)))
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
        policy.temperature, policy.incumbent_logit = warmth, bonus
    best_sample = min(sampled, key=lambda e: e["cost"])
    phases: dict[str, Any] = {
        "greedy": {"proxy": greedy["cost"], "wall_s": t1 - t0},
        "sampled": {"proxy": best_sample["cost"], "samples": len(sampled), "wall_s": t2 - t1}}
    candidates = [(greedy["cost"], greedy["placement"]), (best_sample["cost"], best_sample["placement"])]
    history = [(1, t1 - start, greedy["cost"])]
    if best_sample["cost"] < greedy["cost"]:
        history.append((1 + len(sampled), t2 - start, best_sample["cost"]))
    evaluations, interrupted = 1 + len(sampled), False
    if finetune_s is None:
        finetune_s = max(0.0, (budget_s or 0.0) - (time.perf_counter() - start))
    if finetune_s >= 1.0:
        from moeplace.place.chip.agent import train_chip_rl

        arch = {"hidden": policy.hidden, "rounds": policy.rounds, "channels": policy.channels}
        best, zero_best = min(candidates, key=lambda c: c[0])  # fine-tuning's incumbent
        tuned = train_chip_rl(problem, budget_s=finetune_s, seed=seed, n_envs=n_envs, collector=collector,
                              progress=progress, init_weights=dict(policy.state_dict()),
                              temperature=temperature, incumbent_logit=incumbent_logit,
                              incumbent=(np.asarray(zero_best), best), **arch)
        phases["finetuned"] = {"proxy": tuned.cost, "episodes": tuned.evaluations, "wall_s": tuned.wall_s}
        off = time.perf_counter() - start - tuned.wall_s
        for e, sec, c in tuned.history:  # fine-tuning's improvements on the zero-shot best
            if c < best:
                history.append((evaluations + e, off + sec, c))
                best = c
        candidates.append((tuned.cost, tuned.placement))
        evaluations += tuned.evaluations
        interrupted = tuned.interrupted
    _, placement = min(candidates, key=lambda c: c[0])
    return _result(problem, np.asarray(placement), evaluations, time.perf_counter() - start, history,
                   interrupted), phases
