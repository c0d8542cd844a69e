"""The shared PlacementEnv and policy on a chip problem: Gymnasium checks, legal episodes, conv head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from moeplace.data import CHIP_DIR
from moeplace.place.chip.problem import ChipProblem
from moeplace.place.env import PlacementEnv
from moeplace.place.policy import PlacementPolicy

CT = CHIP_DIR / "circuit_training"


def toy(**kw) -> ChipProblem:
    return ChipProblem.from_files(CT / "toy_macro_stdcell" / "netlist.pb.txt",
                                  CT / "toy_macro_stdcell" / "initial.plc", fd_iterations=3, **kw)


def test_chip_env_passes_check_env() -> None:
    check_env(PlacementEnv(toy()), skip_render_check=True)


def test_masked_episodes_are_legal_and_rewarded_with_minus_proxy_cost() -> None:
    problem = toy()
    env = PlacementEnv(problem)
    rng = np.random.default_rng(0)
    for episode in range(5):
        obs, info = env.reset(seed=episode)
        done = False
        while not done:
            obs, reward, done, _, info = env.step(rng.choice(np.flatnonzero(info["action_mask"])))
        assert problem.is_legal(info["placement"])
        assert reward == pytest.approx(-problem.terms(info["placement"])["proxy"])


def test_occupancy_shows_the_placed_macro_area() -> None:
    problem = toy()
    env = PlacementEnv(problem)
    env.reset(seed=0)
    obs, *_ = env.step(int(np.flatnonzero(env.action_masks())[0]))
    cell_area = problem.grid.cell_width * problem.grid.cell_height
    assert obs["slot_occupancy"].sum() * cell_area == pytest.approx(problem.w[0] * problem.h[0])


def test_conv_policy_on_chip_observation() -> None:
    problem = toy()
    env = PlacementEnv(problem)
    policy = PlacementPolicy(problem, hidden=16, rounds=2)
    assert policy.head_kind == "conv"
    obs, info = env.reset(seed=0)
    logits, value = policy({k: torch.as_tensor(v) for k, v in obs.items()})
    assert logits.shape == (problem.num_slots,)
    legal = torch.as_tensor(info["action_mask"])
    assert (logits[~legal] < -1e8).all() and (logits[legal] > -1e8).all()
