"""Collectors (in-process, worker processes, Ray actors) return the same kind of Rollout, equal for a
seed wherever they run; PPO learns from a collector; Rollout.cat lays rollouts side by side."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from moeplace.rl import PPO, MLPPolicy, make_vec_env
from moeplace.rl.collectors import LocalCollector, ProcessCollector, RayCollector
from moeplace.rl.rollout import Rollout

from .envs import BanditEnv, ChainEnv

MEANS = [0.1, 0.5, 1.0, 0.3, 2.0]
LEGAL = [True, True, True, True, False]


def bandit_envs(n: int = 4):
    return make_vec_env(functools.partial(BanditEnv, MEANS, legal=LEGAL), n)


def chain_envs(n: int = 2):
    return make_vec_env(functools.partial(ChainEnv, n=5, trap=0.2), n)


def chain_policy():
    torch.manual_seed(0)
    envs = chain_envs()
    return MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(16,))


def _same(a: Rollout, b: Rollout) -> None:
    assert a.obs.shape == b.obs.shape and torch.equal(a.obs, b.obs)
    for name in ("actions", "logprobs", "values", "rewards", "dones", "valid", "next_value"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.episodes == b.episodes


def test_local_collector_rollout_has_the_documented_shapes() -> None:
    c = LocalCollector(chain_envs, chain_policy, seed=0)
    r = c.collect(dict(chain_policy().state_dict()), 7)
    assert r.actions.shape == (7, 2) and r.obs.shape == (7, 2, 5) and r.next_value.shape == (2,)
    assert r.steps == 14 and r.same_step
    ends = r.dones.sum().item()
    assert len(r.episodes) == ends  # every finished episode logged once


@pytest.mark.slow
def test_process_collector_equals_local_collectors_side_by_side() -> None:
    weights = dict(chain_policy().state_dict())
    local = [LocalCollector(chain_envs, chain_policy, seed=s) for s in (5, 6)]
    want = Rollout.cat([c.collect(weights, 9) for c in local])
    with ProcessCollector(chain_envs, chain_policy, workers=2, seed=5) as pc:
        assert pc.n_envs == 4
        got = pc.collect(weights, 9)
    _same(got, want)


def test_ray_collector_equals_local_collectors_side_by_side() -> None:
    ray = pytest.importorskip("ray")
    weights = dict(chain_policy().state_dict())
    want = Rollout.cat([LocalCollector(chain_envs, chain_policy, seed=s).collect(weights, 9) for s in (5, 6)])
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with RayCollector(chain_envs, chain_policy, workers=2, seed=5, num_cpus=0.5) as rc:
            got = rc.collect(weights, 9)
    finally:
        if started:
            ray.shutdown()
    _same(got, want)


def test_process_collector_repeats_and_matches_local_for_one_worker() -> None:
    weights = dict(chain_policy().state_dict())
    want = LocalCollector(chain_envs, chain_policy, seed=2).collect(weights, 6)
    with ProcessCollector(chain_envs, chain_policy, workers=1, seed=2) as pc:
        got = pc.collect(weights, 6)
    _same(got, want)


def test_ppo_learns_the_best_legal_arm_from_a_collector() -> None:
    envs = bandit_envs()
    torch.manual_seed(0)

    def policy_fn():
        return MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(32,))

    policy = policy_fn()
    algo = PPO(policy, None, n_steps=8, n_minibatches=2, n_epochs=4, learning_rate=3e-2, ent_coef=0.0)
    algo.learn(1500, progress_bar=False, collector=LocalCollector(bandit_envs, policy_fn, seed=0))
    assert algo.num_timesteps == (1500 // 32) * 32
    assert algo.predict(np.zeros(1, np.float32)[None], action_mask=np.array([LEGAL]))[0] == 2


def test_rollout_cat_puts_envs_side_by_side() -> None:
    w = dict(chain_policy().state_dict())
    a = LocalCollector(chain_envs, chain_policy, seed=0).collect(w, 5)
    b = LocalCollector(functools.partial(chain_envs, 3), chain_policy, seed=1).collect(w, 5)
    c = Rollout.cat([a, b])
    assert c.n_envs == 5 and c.obs.shape == (5, 5, 5) and c.steps == a.steps + b.steps
    assert torch.equal(c.actions[:, 2:], b.actions) and torch.equal(c.next_value[:2], a.next_value)
    a.ends, b.ends = [{"env": 1}], [{"env": 0}, {"cost": 1.0}]
    assert Rollout.cat([a, b]).ends == [{"env": 1}, {"env": 2}, {"cost": 1.0}]  # env = column
    with pytest.raises(ValueError, match="same n_steps"):
        Rollout.cat([a, LocalCollector(chain_envs, chain_policy, seed=0).collect(w, 4)])


def test_max_samples_trains_each_update_on_that_many_transitions() -> None:
    envs = bandit_envs()
    torch.manual_seed(0)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(8,))
    sizes: list[int] = []
    policy.register_forward_hook(lambda _m, args, _out: sizes.append(len(args[0])) if torch.is_grad_enabled()
                                 else None)
    algo = PPO(policy, envs, n_steps=8, n_minibatches=2, n_epochs=3, max_samples=10)
    algo.learn(32, progress_bar=False)
    assert algo.num_timesteps == 32  # 4 envs x 8 steps collected ...
    assert sizes == [5, 5] * 3  # ... of which 10 trained on, in 2 minibatches, 3 epochs
