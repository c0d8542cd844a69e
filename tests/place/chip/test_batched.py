"""BatchedChipEnv against the per-env reference code paths: masks (ChipProblem.legal_mask), occupancy
(ChipProblem.slot_occupancy), rewards (a fresh ProxyCost on the finished placement), dead ends; the
size-independent ChipPolicy; the chip agent repeats exactly for a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moeplace.data import CHIP_DIR
from moeplace.place.chip.agent import train_chip_rl
from moeplace.place.chip.batched import BatchedChipEnv
from moeplace.place.chip.cost import ProxyCost
from moeplace.place.chip.policy import ChipPolicy
from moeplace.place.chip.problem import ChipProblem

CT = CHIP_DIR / "circuit_training"


@pytest.fixture(scope="module")
def ariane() -> ChipProblem:
    p = CHIP_DIR / "ariane133"
    return ChipProblem.from_files(p / "netlist.pb.txt.gz", p / "legalized.plc", fd_iterations=2)


def toy(**kw) -> ChipProblem:
    d = CT / "toy_macro_stdcell"
    return ChipProblem.from_files(d / "netlist.pb.txt", d / "initial.plc", fd_iterations=3, **kw)


def blockage() -> ChipProblem:
    d = CT / "simple_grouped_with_coords_with_blockage"
    return ChipProblem.from_files(d / "netlist.pb.txt", d / "initial.plc", columns=6, rows=6, fd_iterations=2)


def _random_episode(env: BatchedChipEnv, rng: np.random.Generator, check) -> list[dict]:
    """Step every env with uniformly random legal actions to the end; `check(env)` before each step."""
    env.reset()
    for _ in range(env.n):
        check(env)
        actions = [rng.choice(np.flatnonzero(m)) for m in env.mask]
        _, rewards, terminated, _, info = env.step(actions)
        if "episode_end" in info:
            return info["episode_end"], rewards, terminated
    raise AssertionError("episode did not end")


@pytest.mark.parametrize("make", ["ariane", "toy", "blockage"])
def test_batched_masks_and_occupancy_equal_the_per_env_reference(make, request) -> None:
    makers = {"toy": toy, "blockage": blockage}
    problem = request.getfixturevalue("ariane") if make == "ariane" else makers[make]()
    env = BatchedChipEnv(problem, 4)
    steps = []

    def check(env: BatchedChipEnv) -> None:
        for i in np.flatnonzero(env.active):
            ref = problem.legal_mask(env.placement[i], env.t)
            assert np.array_equal(env.mask[i], ref), f"env {i}, macro {env.t}"
            np.testing.assert_allclose(env.occupancy[i], problem.slot_occupancy(env.placement[i]),
                                       rtol=1e-5, atol=1e-5)
        steps.append(env.t)

    _random_episode(env, np.random.default_rng(0), check)
    assert steps == list(range(len(steps))) and len(steps) >= 1


def test_batched_rewards_are_minus_proxy_cost_of_each_finished_placement(ariane) -> None:
    env = BatchedChipEnv(ariane, 3)
    ends, rewards, terminated = _random_episode(env, np.random.default_rng(1), lambda env: None)
    assert sorted(e["env"] for e in ends) == [0, 1, 2] and terminated.all()
    fresh = ProxyCost(ariane.netlist, ariane.header)
    for e in ends:
        assert ariane.is_legal(e["placement"])
        x, y, orient = ariane.place_soft(e["placement"])  # soft macros by force-directed placement
        assert e["cost"] == pytest.approx(fresh.evaluate(x, y, orient).proxy, rel=1e-12)
        assert rewards[e["env"]] == -e["cost"]
    assert len({e["cost"] for e in ends}) == 3  # three different random placements
    assert (env.placement == -1).all() and env.t == 0  # all envs started over (SAME_STEP)


def test_dead_end_gets_the_penalty_and_waits_inactive() -> None:
    problem = toy(columns=1, rows=1)  # one cell: the second macro can never fit beside the first
    env = BatchedChipEnv(problem, 2)
    env.reset()
    _, rewards, terminated, _, info = env.step([0, 0])
    assert terminated.all() and len(info["episode_end"]) == 2
    assert rewards == pytest.approx([-(problem.penalty + 0.5)] * 2)
    assert info["active"].all() and env.t == 0  # every env ended: all started over


def test_chip_policy_weights_serve_netlists_of_any_size(ariane) -> None:
    torch.manual_seed(0)
    policy = ChipPolicy(hidden=16, rounds=2, channels=4)
    ids = [policy.add_design(p) for p in (ariane, toy())]
    n_params = sum(p.numel() for p in policy.parameters())
    for d, problem in zip(ids, (ariane, toy())):
        env = BatchedChipEnv(problem, 2, design=d)
        obs, info = env.reset()
        logits, value = policy({k: torch.as_tensor(v) for k, v in obs.items()})
        assert logits.shape == (2, problem.num_cells) and value.shape == (2,)
        legal = torch.as_tensor(info["action_mask"])
        assert (logits[~legal] < -1e8).all() and (logits[legal] > -1e8).all()
    assert sum(p.numel() for p in policy.parameters()) == n_params  # designs add no weights
    mixed = {k: torch.as_tensor(v) for k, v in BatchedChipEnv(toy(), 2, design=ids[1]).reset()[0].items()}
    mixed["design"] = torch.tensor([[0], [1]])
    with pytest.raises(ValueError, match="one design"):
        policy(mixed)


def test_seeded_chip_rl_repeats_exactly() -> None:
    runs = [train_chip_rl(toy(), max_episodes=16, seed=3, n_envs=4, progress=False) for _ in range(2)]
    a, b = runs
    assert np.array_equal(a.placement, b.placement) and a.terms == b.terms
    assert [h[2] for h in a.history] == [h[2] for h in b.history]
    assert a.evaluations == b.evaluations == 16 + 2  # 4 updates of 4 episodes, greedy episodes after 1 and 3
    assert toy().is_legal(a.placement)
    plain = train_chip_rl(toy(), max_episodes=16, seed=3, n_envs=4, progress=False, greedy_every=0)
    assert plain.evaluations == 16


def test_policy_cache_follows_weight_updates() -> None:
    torch.manual_seed(0)
    policy = ChipPolicy(hidden=16, rounds=1, channels=4)
    policy.add_design(toy())
    obs = {k: torch.as_tensor(v) for k, v in BatchedChipEnv(toy(), 2).reset()[0].items()}
    with torch.no_grad():
        before = policy(obs)[1]
        assert torch.equal(policy(obs)[1], before)
    opt = torch.optim.SGD(policy.encoder.parameters(), lr=0.5)  # only the cached part changes
    policy(obs)[1].sum().backward()
    opt.step()  # in-place update of the encoder weights
    with torch.no_grad():
        cached = policy(obs)[1]
    assert torch.allclose(cached, policy(obs)[1].detach())  # no stale embeddings after the update
    assert not torch.allclose(cached, before)


def test_chip_policy_checkpoint_round_trips_onto_another_design(tmp_path, ariane) -> None:
    from moeplace.place.chip.agent import make_policy
    from moeplace.rl import PPO

    torch.manual_seed(0)
    algo = PPO(make_policy(toy(), hidden=16, rounds=1, channels=4), None)
    algo.save(tmp_path / "chip")  # safetensors + JSON: weights only, no netlist inside
    fresh = ChipPolicy(hidden=16, rounds=1, channels=4)
    fresh.add_design(ariane)  # a netlist of another size, registered after the fact
    PPO.load(tmp_path / "chip.safetensors", fresh)
    trained = algo.policy
    trained.add_design(ariane)  # design 1 of the trained policy, design 0 of the loaded one
    obs = {k: torch.as_tensor(v) for k, v in BatchedChipEnv(ariane, 2, design=0).reset()[0].items()}
    with torch.no_grad():
        want = trained(dict(obs, design=torch.ones_like(obs["design"])))
        got = fresh(obs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
