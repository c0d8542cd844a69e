"""The PlacementProblem protocol that device placement and chip placement both implement.

A placement problem is a set of nodes placed one by one in a fixed order onto slots (devices, or
grid cells of a canvas), a legality mask for the next node given what is placed so far, and the
cost of a finished placement (lower is better). A placement is an int64 array `[num_nodes]` of
slot indices, -1 where a node is not placed yet. The environment, the policy, the RL trainer and
the problem-agnostic baselines (random, simulated annealing) see only this protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

UNPLACED = -1


@runtime_checkable
class PlacementProblem(Protocol):
    """What every placement problem provides to the shared environment, policy and search."""

    @property
    def num_nodes(self) -> int:
        """Number of nodes to place (placed in order 0 .. num_nodes-1)."""
        ...

    @property
    def num_slots(self) -> int:
        """Number of slots a node can go to (devices, or grid cells)."""
        ...

    def node_features(self) -> np.ndarray:
        """Static per-node features `[num_nodes, F]` (float32) for the policy's graph encoder."""
        ...

    def node_edges(self) -> np.ndarray:
        """Undirected node graph `[2, num_edges]` (int64) for the graph encoder."""
        ...

    def slot_features(self) -> np.ndarray:
        """Static per-slot features `[num_slots, G]` (float32): device speed, cell coordinates, ..."""
        ...

    def legal_mask(self, placement: np.ndarray, node: int) -> np.ndarray:
        """Bool mask `[num_slots]`: where `node` may go given the other placed nodes."""
        ...

    def cost(self, placement: np.ndarray) -> float:
        """Cost of a complete placement (lower is better); infeasible ones get a finite penalty."""
        ...


def empty_placement(problem: PlacementProblem) -> np.ndarray:
    """A placement with no node placed."""
    return np.full(problem.num_nodes, UNPLACED, dtype=np.int64)
