"""The RL agent for chips: PPO with the graph encoder and the convolutional per-cell head.

As in Circuit Training, the policy places the hard macros one per step (largest first) on grid
cells, the soft macros are then placed by force-directed placement, and the reward is −proxy
cost. Training runs for a wall-time or episode budget; the best placement of any episode is kept.
"""

from __future__ import annotations

import numpy as np

from moeplace.place.chip.anneal import ChipSearchResult, soft_only
from moeplace.place.chip.problem import ChipProblem
from moeplace.place.policy import PlacementPolicy
from moeplace.place.search import rl_search


def train_chip_rl(problem: ChipProblem, *, budget_s: float | None = None, max_episodes: int | None = None,
                  seed: int = 0, hidden: int = 64, rounds: int = 3, progress: bool = True,
                  **ppo_hparams) -> ChipSearchResult:
    """Train PPO on the chip problem (soft='fd', no orientations) and return its best placement."""
    if problem.orientations or problem.soft != "fd":
        raise ValueError("train_chip_rl needs a ChipProblem with orientations=False and soft='fd'")
    if problem.num_nodes == 0:
        return soft_only(problem, problem.fd_iterations)
    import torch

    torch.manual_seed(seed)
    policy = PlacementPolicy(problem, hidden=hidden, rounds=rounds, head="conv")
    evals0 = problem.evaluations
    res = rl_search(problem, policy=policy, budget_s=budget_s, max_episodes=max_episodes, seed=seed,
                    progress=progress, **ppo_hparams)
    x, y, _ = problem.place_soft(res.placement)
    soft = problem.netlist.soft_macros
    terms = problem.terms(res.placement)
    return ChipSearchResult(np.asarray(res.placement), x[soft].copy(), y[soft].copy(), terms,
                            problem.evaluations - evals0, res.wall_s, res.history, res.interrupted)
