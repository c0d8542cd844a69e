"""Chip improvement mode: the env shows its best placement so far, the policy lifts its cells' logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moeplace.place.chip.agent import train_chip_rl
from moeplace.place.chip.batched import BatchedChipEnv
from moeplace.place.chip.policy import ChipPolicy
from moeplace.place.chip.transfer import policy_episodes, run_pretrained
from moeplace.rl.vec import obs_to_tensor


def _episode(env: BatchedChipEnv, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """One episode of uniformly random legal actions in every env: (its observations, its episode ends)."""
    obs, _ = env.reset()
    seen, ends = [], []
    for _ in range(env.n):
        seen.append(obs)
        mask = obs["action_mask"].astype(bool)
        actions = [rng.choice(np.flatnonzero(m)) for m in mask]
        obs, _, _, _, info = env.step(np.array(actions))
        ends.extend(info.get("episode_end", ()))
        if len(ends) >= env.num_envs:
            break
    seen.append(obs)  # the first observation of the next episode
    return seen, ends


def test_env_shows_the_cheapest_complete_episode_from_the_next_episode_on(problem) -> None:
    rng = np.random.default_rng(0)
    plain = BatchedChipEnv(problem, 4)
    seen, _ = _episode(plain, rng)
    assert all((o["incumbent"] == -1).all() for o in seen)  # off by default
    env = BatchedChipEnv(problem, 4, improve=True)
    seen, ends = _episode(env, rng)
    assert all((o["incumbent"] == -1).all() for o in seen[:-1])  # nothing to improve on yet
    complete = [e for e in ends if (e["placement"] >= 0).all()]
    cheapest = min(complete, key=lambda e: problem.cost(e["placement"]))  # scored independently
    assert env.best_cost == pytest.approx(problem.cost(cheapest["placement"]))
    assert np.array_equal(env.best, cheapest["placement"])
    assert (seen[-1]["incumbent"][:, 0] == cheapest["placement"][0]).all()  # macro 0's incumbent cell
    start = env.best.copy()
    seen, _ = _episode(env, rng)
    for node, o in enumerate(seen[:-1]):  # each step shows the current macro's cell of the incumbent
        assert (o["current_node"][:, 0] == node).all()
        assert (o["incumbent"][:, 0] == start[node]).all()


def test_offer_keeps_only_cheaper_complete_placements(problem) -> None:
    env = BatchedChipEnv(problem, 2, improve=True)
    full = problem.pack()
    assert env.offer(full, 2.0) and env.best_cost == 2.0
    assert not env.offer(full, 3.0)  # not cheaper
    partial = full.copy()
    partial[-1] = -1
    assert not env.offer(partial, 0.1)  # incomplete
    assert not BatchedChipEnv(problem, 2).offer(full, 0.1)  # improvement mode off
    seeded = BatchedChipEnv(problem, 2, incumbent=(full, 1.5))
    obs, _ = seeded.reset()
    assert seeded.improve and (obs["incumbent"][:, 0] == full[0]).all()


def test_policy_adds_the_incumbent_logit_to_that_cell_only(problem) -> None:
    torch.manual_seed(0)
    policy = ChipPolicy(16, 2, 4)
    with torch.no_grad():
        policy.out.weight.normal_(0.0, 1.0)
    full = problem.pack()
    env = BatchedChipEnv(problem, 3, design=policy.add_design(problem), incumbent=(full, 1.0))
    obs, _ = env.reset()
    obs_t = obs_to_tensor(obs)
    with torch.no_grad():
        base, _ = policy(obs_t)
        policy.incumbent_logit = 2.5
        lifted, _ = policy(obs_t)
    delta = (lifted - base).numpy()
    expect = np.zeros_like(delta)
    expect[:, full[0]] = 2.5
    assert np.allclose(delta, expect, atol=1e-5)


def test_a_large_incumbent_logit_makes_the_greedy_episode_the_incumbent(problem) -> None:
    policy = ChipPolicy(16, 2, 4)
    design = policy.add_design(problem)
    own = policy_episodes(problem, policy, 1, greedy=True)[0]["placement"]
    packed = problem.pack()
    assert not np.array_equal(own, packed)  # the prior alone goes elsewhere
    policy.incumbent_logit = 1e4
    env = BatchedChipEnv(problem, 1, design=design, incumbent=(packed, 10.0))
    assert np.array_equal(policy_episodes(problem, policy, 1, greedy=True, env=env)[0]["placement"], packed)


def test_improvement_mode_reaches_zero_shot_and_fine_tuning(problem) -> None:
    policy = ChipPolicy(16, 2, 4)
    kw = dict(finetune_s=0.0, samples=4, seed=1, progress=False)
    plain = run_pretrained(problem, policy, **kw)[1]
    on = run_pretrained(problem, policy, incumbent_logit=3.0, **kw)[1]
    assert policy.incumbent_logit == 0.0  # the caller's policy is left as it was
    assert plain["greedy"]["proxy"] == on["greedy"]["proxy"]
    with pytest.raises(ValueError, match="incumbent_logit"):
        run_pretrained(problem, policy, incumbent_logit=-1.0, **kw)
    args = dict(max_episodes=8, seed=4, hidden=16, rounds=2, channels=4, n_envs=4, progress=False,
                greedy_every=0)
    off, lifted = train_chip_rl(problem, **args), train_chip_rl(problem, incumbent_logit=3.0, **args)
    assert [h[2] for h in off.history] != [h[2] for h in lifted.history]

