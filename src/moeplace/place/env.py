"""A Gymnasium environment over any PlacementProblem: one node per step, reward −cost at the end.

The observation is a Dict of the problem's static node and slot features, the current partial
placement, which node is next, the occupancy of every slot and the legality mask. The mask also
travels in `info["action_mask"]` (the sb3-contrib convention the RL trainers read).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from moeplace.place.core import UNPLACED, PlacementProblem, empty_placement

BIG = 1e9  # finite bound of the feature boxes (features are expected to be normalised)


def slot_occupancy(problem: PlacementProblem, placement: np.ndarray) -> np.ndarray:
    """The problem's slot occupancy if it defines one, else the number of nodes on each slot."""
    hook = getattr(problem, "slot_occupancy", None)
    if hook is not None:
        return np.asarray(hook(placement), dtype=np.float32)
    placed = placement[placement != UNPLACED]
    return np.bincount(placed, minlength=problem.num_slots).astype(np.float32)


class PlacementEnv(gym.Env):
    """Place the problem's nodes one by one (in order) onto slots; reward is −cost when done."""

    metadata = {"render_modes": []}

    def __init__(self, problem: PlacementProblem, penalty: float | None = None) -> None:
        self.problem = problem
        self.n = int(problem.num_nodes)
        self.s = int(problem.num_slots)
        if self.n < 1 or self.s < 1:
            raise ValueError(f"problem needs >= 1 node and slot, got {self.n} nodes, {self.s} slots")
        self.penalty = penalty
        self._node_features = np.asarray(problem.node_features(), dtype=np.float32)
        self._slot_features = np.asarray(problem.slot_features(), dtype=np.float32)
        f, g = self._node_features.shape[1], self._slot_features.shape[1]
        self.observation_space = spaces.Dict({
            "node_features": spaces.Box(-BIG, BIG, (self.n, f), np.float32),
            "placement": spaces.Box(UNPLACED, self.s - 1, (self.n,), np.int64),
            "current_node": spaces.Box(0, self.n - 1, (1,), np.int64),
            "slot_features": spaces.Box(-BIG, BIG, (self.s, g), np.float32),
            "slot_occupancy": spaces.Box(0.0, BIG, (self.s,), np.float32),
            "action_mask": spaces.Box(0, 1, (self.s,), np.int8),
        })
        self.action_space = spaces.Discrete(self.s)
        self.placement = empty_placement(problem)
        self.t = 0
        self._mask = np.zeros(self.s, dtype=bool)

    def _obs(self) -> dict[str, np.ndarray]:
        """The observation of the current state."""
        return {
            "node_features": self._node_features.copy(),
            "placement": self.placement.copy(),
            "current_node": np.array([min(self.t, self.n - 1)], dtype=np.int64),
            "slot_features": self._slot_features.copy(),
            "slot_occupancy": slot_occupancy(self.problem, self.placement),
            "action_mask": self._mask.astype(np.int8),
        }

    def _compute_mask(self) -> None:
        """Legality mask for the node to place next (all True once every node is placed)."""
        if self.t < self.n:
            self._mask = np.asarray(self.problem.legal_mask(self.placement, self.t), dtype=bool)
        else:
            self._mask = np.ones(self.s, dtype=bool)

    def action_masks(self) -> np.ndarray:
        """The current legality mask (sb3-contrib's MaskablePPO calls this)."""
        return self._mask.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new episode with nothing placed."""
        super().reset(seed=seed)
        self.placement = empty_placement(self.problem)
        self.t = 0
        self._compute_mask()
        return self._obs(), {"action_mask": self._mask.copy()}

    def _final_cost(self) -> float:
        """The problem's cost of the current (maybe incomplete) placement; the penalty if given."""
        if self.penalty is not None and (self.placement == UNPLACED).any():
            return float(self.penalty)
        return float(self.problem.cost(self.placement))

    def step(self, action: Any):
        """Place the current node on slot `action`; an illegal action or dead end ends the episode."""
        if self.t >= self.n:
            raise RuntimeError("step() called after the episode ended; call reset()")
        a = int(action)
        info: dict[str, Any] = {}
        if not (0 <= a < self.s) or not self._mask[a]:
            info["illegal_action"] = True
            return self._end(info)
        self.placement[self.t] = a
        self.t += 1
        self._compute_mask()
        if self.t == self.n:
            return self._end(info)
        if not self._mask.any():
            info["dead_end"] = True
            return self._end(info)
        info["action_mask"] = self._mask.copy()
        return self._obs(), 0.0, False, False, info

    def _end(self, info: dict[str, Any]):
        """Finish the episode: reward −cost (the problem's penalty for an incomplete placement)."""
        cost = self._final_cost()
        self.t = self.n
        # After the end no action matters; an all-True mask keeps a masked softmax finite if a
        # vector env evaluates the policy on this final observation before resetting.
        self._mask = np.ones(self.s, dtype=bool)
        info.update(cost=cost, placement=self.placement.copy(), action_mask=self._mask.copy())
        return self._obs(), -cost, True, False, info
