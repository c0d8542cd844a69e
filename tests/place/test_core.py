"""Shared placement core on a toy problem: env contract, search optimality, policy shapes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from moeplace.errors import InputError
from moeplace.place.core import UNPLACED, PlacementProblem
from moeplace.place.env import PlacementEnv
from moeplace.place.policy import PlacementPolicy
from moeplace.place.search import parse_budget, random_search, simulated_annealing

PENALTY = 1000.0


class ToyGrid:
    """Nodes on a rows x cols grid, one node per cell; cost = weighted Manhattan edge length + anchor pull."""

    def __init__(self, rows: int = 3, cols: int = 3, n: int = 4, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.rows, self.cols, self.n = rows, cols, n
        self.edges = np.array([[i, i + 1] for i in range(n - 1)] + [[0, n - 1]]).T
        self.w = rng.uniform(0.5, 2.0, self.edges.shape[1])
        self.anchor = rng.uniform(0, 1, (n, 2)) * [cols - 1, rows - 1]
        self.grid_shape = (rows, cols)

    @property
    def num_nodes(self) -> int:
        return self.n

    @property
    def num_slots(self) -> int:
        return self.rows * self.cols

    def xy(self, slots: np.ndarray) -> np.ndarray:
        return np.stack([slots % self.cols, slots // self.cols], axis=-1).astype(float)

    def node_features(self) -> np.ndarray:
        return np.concatenate([np.eye(self.n), self.anchor], axis=1).astype(np.float32)

    def node_edges(self) -> np.ndarray:
        return self.edges

    def slot_features(self) -> np.ndarray:
        return self.xy(np.arange(self.num_slots)).astype(np.float32)

    def legal_mask(self, placement: np.ndarray, node: int) -> np.ndarray:
        mask = np.ones(self.num_slots, dtype=bool)
        others = np.delete(placement, node)
        mask[others[others != UNPLACED]] = False
        return mask

    def cost(self, placement: np.ndarray) -> float:
        if (placement == UNPLACED).any() or len(set(placement.tolist())) < self.n:
            return PENALTY
        p = self.xy(placement)
        wl = (self.w * np.abs(p[self.edges[0]] - p[self.edges[1]]).sum(-1)).sum()
        return float(wl + 0.3 * np.abs(p - self.anchor).sum())


def brute_force(problem: ToyGrid) -> float:
    """The true optimum over every injective placement."""
    return min(problem.cost(np.array(p)) for p in itertools.permutations(range(problem.num_slots), problem.n))


def test_toy_implements_protocol() -> None:
    assert isinstance(ToyGrid(), PlacementProblem)


def test_check_env_passes() -> None:
    check_env(PlacementEnv(ToyGrid()), skip_render_check=True)


def test_env_episode_reward_is_minus_cost_and_masks_follow_legality() -> None:
    problem = ToyGrid()
    env = PlacementEnv(problem)
    obs, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    total, done, steps = 0.0, False, 0
    while not done:
        mask = info["action_mask"]
        assert (obs["action_mask"].astype(bool) == mask).all()
        occupied = obs["placement"][obs["placement"] >= 0]
        assert not mask[occupied].any() and mask.sum() == problem.num_slots - occupied.size
        assert obs["current_node"][0] == steps
        obs, reward, done, truncated, info = env.step(rng.choice(np.flatnonzero(mask)))
        total += reward
        steps += 1
    assert steps == problem.n and not truncated
    assert total == pytest.approx(-problem.cost(info["placement"]))
    assert total > -PENALTY


def test_env_illegal_action_ends_with_penalty() -> None:
    env = PlacementEnv(ToyGrid())
    env.reset(seed=0)
    env.step(4)
    _, reward, done, _, info = env.step(4)  # slot 4 is taken
    assert done and info["illegal_action"] and reward == -PENALTY


def test_simulated_annealing_finds_brute_force_optimum_and_is_deterministic() -> None:
    problem = ToyGrid(rows=3, cols=3, n=5, seed=1)
    best = brute_force(problem)
    r1 = simulated_annealing(problem, max_evals=4000, seed=3, progress=False)
    r2 = simulated_annealing(problem, max_evals=4000, seed=3, progress=False)
    assert r1.cost == pytest.approx(best)
    assert r1.cost == problem.cost(r1.placement)
    assert (r1.placement == r2.placement).all() and r1.evaluations == r2.evaluations == 4000
    assert r1.history[-1][2] == r1.cost and all(a[2] > b[2] for a, b in zip(r1.history, r1.history[1:]))


def test_simulated_annealing_uses_problem_move_hook() -> None:
    problem = ToyGrid()
    calls = []

    def propose_move(placement: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        calls.append(1)
        return None if len(calls) % 2 else np.roll(placement, 1)

    problem.propose_move = propose_move  # type: ignore[attr-defined]
    simulated_annealing(problem, max_evals=50, seed=0, progress=False)
    assert len(calls) >= 50


def test_random_search_respects_budget_and_is_legal() -> None:
    problem = ToyGrid()
    r = random_search(problem, max_evals=200, seed=0, progress=False)
    assert r.evaluations == 200 and r.cost < PENALTY
    assert len(set(r.placement.tolist())) == problem.n
    assert r.cost >= brute_force(problem) - 1e-9


def test_parse_budget() -> None:
    assert parse_budget("90s") == 90 and parse_budget("30m") == 1800 and parse_budget("1.5h") == 5400
    assert parse_budget("12") == 12
    for bad in ("abc", "0s", "-1m", "5d"):
        with pytest.raises(InputError):
            parse_budget(bad)


@pytest.mark.parametrize("head", ["attention", "conv"])
def test_policy_masks_and_shapes(head: str) -> None:
    problem = ToyGrid()
    env = PlacementEnv(problem)
    policy = PlacementPolicy(problem, hidden=16, rounds=2, head=head)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(0)
    logits, value = policy({k: torch.as_tensor(v) for k, v in obs.items()})
    assert logits.shape == (problem.num_slots,) and value.shape == ()
    assert (logits[0] < -1e8) and (logits[1:] > -1e8).all()
    batch = {k: torch.as_tensor(np.stack([v, v])) for k, v in obs.items()}
    logits_b, value_b = policy(batch)
    assert logits_b.shape == (2, problem.num_slots) and value_b.shape == (2,)
    torch.testing.assert_close(logits_b[0], logits)
    (logits_b[:, 1:].sum() + value_b.sum()).backward()
    assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)


def test_rl_search_trains_ppo_and_keeps_the_best_episode() -> None:
    from moeplace.place.search import rl_search

    problem = ToyGrid()
    r = rl_search(problem, max_episodes=16, seed=0, progress=False, episodes_per_update=4)
    assert r.evaluations >= 16
    assert r.cost == pytest.approx(problem.cost(r.placement))
    assert r.cost < PENALTY and len(set(r.placement.tolist())) == problem.n
    assert r.policy is not None
    assert r.cost >= brute_force(problem) - 1e-9


class Ladder:
    """One node on slots 0..999, cost = its slot; the only move is one slot up (every Δcost is +1)."""

    num_nodes, num_slots = 1, 1000

    def cost(self, placement: np.ndarray) -> float:
        return float(placement[0])

    def propose_move(self, placement: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.minimum(placement + 1, self.num_slots - 1)


def test_annealing_start_temperature_is_the_scaled_mean_probe_delta() -> None:
    # every probe |Δcost| is 1, so t0 = t0_scale: a tiny scale accepts no uphill move (exp(-1/t) = 0)
    # and a huge one accepts nearly all (t stays >= scale / 1000 >> 1 through the cooling)
    start = np.array([0])
    cold = simulated_annealing(Ladder(), max_evals=300, init=start, t0_scale=1e-6, probes=5, progress=False)
    hot = simulated_annealing(Ladder(), max_evals=300, init=start, t0_scale=1e6, probes=5, progress=False)
    proposals = 300 - 1 - 5  # the start and the probes are evaluations too
    assert cold.accepted == 0 and cold.cost == 0.0
    assert hot.accepted >= 0.95 * proposals
