"""Scoring a chip policy on held-out validation designs: what pre-training keeps its best checkpoint by.

The score of a policy is the mean over the validation designs of its greedy episode's proxy cost
divided by that design's reference cost (by default the untrained wire-mask policy's greedy cost),
so designs of any size weigh alike and 1.0 means "as good as the prior". Greedy episodes are
deterministic, so the score is too. Validation designs must not be in the training corpus (a
generated corpus of another seed) and never Ariane133, the held-out test design.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from moeplace.place.chip.problem import ChipProblem


class Validator:
    """Greedy costs of a policy on fixed validation designs, normalised by reference costs.

    `policy` gets the designs registered once (`add_design`) and is the one scored: load the weights
    to judge into it, then call `score()` (one greedy episode per design).
    """

    def __init__(self, named: list[tuple[str, ChipProblem]], policy: Any,
                 reference: list[float] | None = None) -> None:
        from moeplace.place.chip.batched import BatchedChipEnv

        self.policy = policy
        self.names = [n for n, _ in named]
        self.problems = [p for _, p in named]
        self.envs = [BatchedChipEnv(p, 1, design=policy.add_design(p)) for p in self.problems]
        self.reference = list(reference) if reference is not None else None

    @torch.no_grad()
    def costs(self) -> list[float]:
        """Greedy proxy cost of the validator's policy on every validation design."""
        from moeplace.place.chip.transfer import policy_episodes

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [float(policy_episodes(p, self.policy, 1, greedy=True, env=env)[0]["cost"])
                    for p, env in zip(self.problems, self.envs)]
        finally:
            torch.set_num_threads(threads)

    def score(self) -> tuple[float, list[float]]:
        """(mean normalised greedy cost, raw costs); the first call without a reference sets it."""
        costs = self.costs()
        if self.reference is None:
            self.reference = costs
        ratios = [c / max(r, 1e-9) for c, r in zip(costs, self.reference)]
        return float(np.mean(ratios)), costs
