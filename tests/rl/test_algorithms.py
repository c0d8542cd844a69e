"""PPO and REINFORCE find the known optimal policies of a bandit and a chain MDP; truncation, masks,
vector-env autoreset modes, checkpoints and seeding behave as documented."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from moeplace.errors import CheckpointError
from moeplace.rl import PPO, REINFORCE, MLPPolicy, make_vec_env

from .envs import BanditEnv, ChainEnv, ConstantRewardEnv

MEANS = [0.1, 0.5, 1.0, 0.3, 2.0]
LEGAL = [True, True, True, True, False]  # the richest arm (4) is illegal: the best legal arm is 2


def _policy(env, seed=0, hidden=(32,)):
    torch.manual_seed(seed)
    return MLPPolicy(env.single_observation_space, env.single_action_space, hidden=hidden)


def _bandit_algo(cls, seed=0, **kw):
    envs = make_vec_env(lambda: BanditEnv(MEANS, legal=LEGAL), 4)
    if cls is PPO:
        hp = dict(n_steps=8, n_minibatches=2, n_epochs=4, learning_rate=3e-2, ent_coef=0.0, seed=seed)
    else:
        hp = dict(episodes_per_batch=16, learning_rate=5e-2, seed=seed)
    return cls(_policy(envs, seed), envs, **(hp | kw))


@pytest.mark.parametrize("cls", [PPO, REINFORCE])
def test_masked_bandit_optimal_arm(cls):
    algo = _bandit_algo(cls).learn(1500, progress_bar=False)
    obs = np.zeros(1, dtype=np.float32)
    assert algo.predict(obs, action_mask=np.array(LEGAL)) == 2
    # The learned distribution puts most mass on the best legal arm and none on the illegal one.
    logits, _ = algo.policy(torch.zeros(1, 1))
    from moeplace.rl import MaskedCategorical
    probs = MaskedCategorical(logits, torch.tensor([LEGAL])).probs[0]
    assert probs[2] > 0.9 and probs[4] == 0.0
    # The env asserts on an illegal pull, so reaching here also means none was ever sampled.


def _chain_algo(cls, seed=0, **kw):
    envs = make_vec_env(lambda: ChainEnv(n=5, trap=0.2), 4)
    if cls is PPO:
        hp = dict(n_steps=16, n_minibatches=2, n_epochs=4, learning_rate=1e-2, gamma=0.95, seed=seed)
    else:
        hp = dict(episodes_per_batch=16, learning_rate=3e-2, gamma=0.95, seed=seed)
    return cls(_policy(envs, seed), envs, **(hp | kw))


@pytest.mark.parametrize("cls, kw", [(PPO, {}), (REINFORCE, {}), (REINFORCE, {"reward_to_go": True})])
def test_chain_mdp_optimal_policy(cls, kw):
    algo = _chain_algo(cls, **kw).learn(6000, progress_bar=False)
    # Optimal: 'right' (1) in every non-terminal state, although 'left' at state 0 pays at once.
    states = np.eye(5, dtype=np.float32)[:4]
    assert algo.predict(states).tolist() == [1, 1, 1, 1]
    # A greedy episode reaches the end in 4 steps for the reward 1.
    env = ChainEnv(n=5, trap=0.2)
    obs, _ = env.reset(seed=0)
    total, done, steps = 0.0, False, 0
    while not done:
        obs, r, term, trunc, _ = env.step(algo.predict(obs))
        total, done, steps = total + r, term or trunc, steps + 1
    assert (total, steps) == (1.0, 4)


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_truncation_bootstraps_value(mode):
    """Reward 1 forever, cut by a time limit of 5: V must approach 1/(1-gamma) = 10, not ~3.7."""
    envs = SyncVectorEnv([lambda: ConstantRewardEnv(limit=5)] * 4, autoreset_mode=mode)
    algo = PPO(_policy(envs), envs, n_steps=10, n_minibatches=1, n_epochs=10, learning_rate=2e-2,
               gamma=0.9, gae_lambda=0.95, clip_vloss=False, anneal_lr=False, seed=0)
    algo.learn(4000, progress_bar=False)
    _, value = algo.policy(torch.ones(1, 1))
    assert 9.0 < value.item() < 11.0
    # Training episodes are logged with their true length: 5 steps, return 5.
    assert {(ret, length) for _, ret, length in algo.episodes} == {(5.0, 5)}


def test_next_step_autoreset_ignores_reset_transitions():
    """In NEXT_STEP mode the step after a done only resets; it must not count as an env step."""
    envs = SyncVectorEnv([lambda: ConstantRewardEnv(limit=3)] * 2, autoreset_mode=AutoresetMode.NEXT_STEP)
    algo = PPO(_policy(envs), envs, n_steps=8, n_minibatches=1, n_epochs=1, seed=0)
    algo.learn(16, progress_bar=False)
    # 8 vector steps per env: steps 1-3 episode, 4 reset, 5-7 episode, 8 reset -> 6 real steps each.
    assert algo.num_timesteps == 12
    assert len(algo.episodes) == 4


def test_single_env_is_wrapped_and_dict_obs_work():
    from moeplace.rl.gridworld import GridWorldEnv, parse_layout
    env = GridWorldEnv(parse_layout("S.#\n..T\n"))
    torch.manual_seed(0)
    policy = MLPPolicy(env.observation_space, env.action_space, hidden=(16,))
    algo = PPO(policy, env, n_steps=16, seed=0).learn(32, progress_bar=False)
    assert algo.n_envs == 1 and algo.num_timesteps == 32
    obs, info = env.reset()
    assert algo.predict(obs, action_mask=info["action_mask"]) in (1, 3)  # legal moves: down, right
    batch = {k: np.stack([v, v]) for k, v in obs.items()}
    assert algo.predict(batch).shape == (2,)


def test_non_discrete_env_rejected():
    with pytest.raises(ValueError, match="Discrete"):
        PPO(torch.nn.Linear(1, 1), gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        PPO(torch.nn.Linear(1, 1), None, n_step=3)


@pytest.mark.parametrize("cls", [PPO, REINFORCE])
def test_save_load_round_trip(cls, tmp_path):
    algo = _chain_algo(cls).learn(800, progress_bar=False)
    path = algo.save(tmp_path / "chain")
    assert path.exists() and path.with_suffix(".json").exists()
    other = _policy(algo.env, seed=123)  # different initial weights
    loaded = cls.load(path, other)
    obs = torch.rand(32, 5).numpy()
    np.testing.assert_array_equal(loaded.predict(obs), algo.predict(obs))
    with torch.no_grad():
        torch.testing.assert_close(other(torch.as_tensor(obs))[0], algo.policy(torch.as_tensor(obs))[0],
                                   rtol=0, atol=0)
    assert loaded.num_timesteps == algo.num_timesteps
    assert loaded.config == algo.config
    assert loaded.predict(obs[0]) == algo.predict(obs[0])  # single obs known from the checkpoint
    wrong = REINFORCE if cls is PPO else PPO
    with pytest.raises(CheckpointError):
        wrong.load(path, _policy(algo.env))
    with pytest.raises(CheckpointError):
        cls.load(path, _policy(algo.env, hidden=(8,)))


@pytest.mark.parametrize("cls", [PPO, REINFORCE])
def test_same_seed_same_result(cls):
    def run(seed):
        algo = _chain_algo(cls, seed=seed).learn(600, progress_bar=False)
        return torch.cat([p.detach().flatten() for p in algo.policy.parameters()]), algo.episodes

    (p1, e1), (p2, e2), (p3, _) = run(0), run(0), run(1)
    assert torch.equal(p1, p2) and e1 == e2
    assert not torch.equal(p1, p3)


def test_callback_can_stop_and_sees_diagnostics():
    algo = _chain_algo(PPO)
    seen = []

    def cb(a, stats):
        seen.append(stats)
        return len(seen) < 3

    algo.learn(10_000, callback=cb, progress_bar=False)
    assert len(seen) == 3 and len(algo.history) == 3
    for key in ("approx_kl", "clipfrac", "explained_variance", "entropy", "steps_per_second"):
        assert key in seen[-1]


def test_reinforce_with_next_step_autoreset_sees_whole_episodes():
    envs = SyncVectorEnv([lambda: ConstantRewardEnv(limit=3)] * 2, autoreset_mode=AutoresetMode.NEXT_STEP)
    algo = REINFORCE(_policy(envs), envs, episodes_per_batch=4, seed=0)
    algo.learn(60, progress_bar=False)
    assert algo.episodes and {(ret, length) for _, ret, length in algo.episodes} == {(3.0, 3)}
    assert algo.num_timesteps == 3 * len(algo.episodes)  # reset-only steps are not counted


@pytest.mark.parametrize("cls", [PPO, REINFORCE])
def test_episode_log_records_the_env_step_of_its_last_step(cls):
    """algo.episodes holds (env step at the episode's end, return, length): with one env and
    episodes of exactly 5 steps, the k-th episode ends at env step 5k (REINFORCE once logged 5k - 1)."""
    env = ConstantRewardEnv(limit=5)
    torch.manual_seed(0)
    policy = MLPPolicy(env.observation_space, env.action_space, hidden=(8,))
    kw = {"n_steps": 20, "n_minibatches": 1, "n_epochs": 1} if cls is PPO else {"episodes_per_batch": 2}
    algo = cls(policy, env, seed=0, **kw)
    algo.learn(20)
    assert len(algo.episodes) >= 2
    for k, (step, ret, length) in enumerate(algo.episodes, start=1):
        assert (step, ret, length) == (5 * k, 5.0, 5)
