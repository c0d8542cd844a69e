"""N chip-placement episodes of one netlist stepped together: a Gymnasium vector env for fast RL rollouts.

All N episodes place the same macro at the same step (macros go largest first, one per step), so
the legality masks of all N envs for that macro are one batched array computation: a placed macro j
blocks the cells whose centre lies closer than (w + w_j) / 2 in x and (h + h_j) / 2 in y, tested per
column and per row and combined by one batched matrix product (the test of `ChipProblem.legal_mask`,
for all envs at once). Occupancy maps are updated by one outer product per step. An env that meets
a dead end (no legal cell) stops there with the problem's penalty and waits, inactive, until the
others finish; after the last macro the soft macros of every finished placement are placed by
force-directed placement and its reward is −proxy cost, then all N envs start over (SAME_STEP).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from moeplace.place.chip.legality import EPS, coverage
from moeplace.place.chip.problem import ChipProblem
from moeplace.place.chip.wiremask import WireMask
from moeplace.place.core import UNPLACED

BIG = 1e9


class BatchedChipEnv(VectorEnv):
    """`num_envs` episodes of one ChipProblem (no orientations) stepped in lockstep.

    Observations (dict, leading dim N): placement [n] (cell per macro, -1 unplaced), current_node [1],
    slot_occupancy [cells] (covered fraction), action_mask [cells], wiremask [cells] (the weighted HPWL
    each cell would add for the current macro: `WireMask`), incumbent [1] (the current macro's cell in
    the incumbent placement, -1 without one) and design [1] (an id the policy
    uses to look up the netlist's static graph). `info["action_mask"]` carries the mask for PPO,
    `info["active"]` which envs' next step is a real transition, and at episode ends
    `info["episode_end"]` a list of dicts (env, cost, terms, placement) for the envs that finished.

    Improvement mode (Placeto's formulation; `improve=True`): the env keeps the cheapest complete
    placement of its episodes (or `incumbent`, a (placement, cost) to start from) and shows it in the
    observation, so a policy can place each macro given where the best placement so far has it.
    A new incumbent takes effect from the next episodes; each step's observation records the one used.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, problem: ChipProblem, num_envs: int, design: int = 0, improve: bool = False,
                 incumbent: tuple[np.ndarray, float] | None = None) -> None:
        if problem.orientations:
            raise ValueError("BatchedChipEnv needs a ChipProblem with orientations=False")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if problem.num_nodes < 1:
            raise ValueError("BatchedChipEnv needs at least one movable hard macro")
        self.problem, self.num_envs, self.design = problem, int(num_envs), int(design)
        g = problem.grid
        self.n, self.cells, self.rows, self.cols = problem.num_nodes, g.num_cells, g.rows, g.columns
        self.col_x, self.row_y = g.col_centers(), g.row_centers()
        self.static_ok = np.stack([problem._static_mask(w, h) for w, h in zip(problem.w, problem.h)])
        self.base_occ = coverage(g, *problem._obst).astype(np.float32)
        # Covered length of column c' (row r') by macro i centred on column c (row r): [n, C, C], [n, R, R].
        self.x_cover = _axis_cover(self.col_x, problem.w, g.cell_width, self.cols) / g.cell_width
        self.y_cover = _axis_cover(self.row_y, problem.h, g.cell_height, self.rows) / g.cell_height
        self.single_action_space = spaces.Discrete(self.cells)
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, self.cells))
        self.single_observation_space = spaces.Dict({
            "placement": spaces.Box(UNPLACED, self.cells - 1, (self.n,), np.int64),
            "current_node": spaces.Box(0, self.n - 1, (1,), np.int64),
            "slot_occupancy": spaces.Box(0.0, BIG, (self.cells,), np.float32),
            "action_mask": spaces.Box(0, 1, (self.cells,), np.int8),
            "wiremask": spaces.Box(0.0, np.inf, (self.cells,), np.float32),
            "incumbent": spaces.Box(UNPLACED, self.cells - 1, (1,), np.int64),
            "design": spaces.Box(0, 2**31 - 1, (1,), np.int64),
        })
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.wires = WireMask(problem)
        self.improve = bool(improve or incumbent is not None)
        self.best: np.ndarray | None = None
        self.best_cost = np.inf
        if incumbent is not None:
            self.offer(*incumbent)
        self._start()

    def offer(self, placement: np.ndarray, cost: float) -> bool:
        """Make a complete `placement` of `cost` the incumbent if it is the cheapest so far (improvement
        mode only); returns whether it was taken."""
        placement = np.asarray(placement, dtype=np.int64).reshape(-1)
        if not self.improve or cost >= self.best_cost or len(placement) != self.n or (placement < 0).any():
            return False
        self.best, self.best_cost = placement.copy(), float(cost)
        return True

    # --- state -----------------------------------------------------------------------------------
    def _start(self) -> None:
        """Nothing placed in any env."""
        n_env = self.num_envs
        self.placement = np.full((n_env, self.n), UNPLACED, dtype=np.int64)
        self.t = 0
        self.active = np.ones(n_env, dtype=bool)
        self.occupancy = np.tile(self.base_occ, (n_env, 1))
        self.mask = self.masks(self.placement, 0)
        self.wires.reset(n_env)

    def masks(self, placement: np.ndarray, node: int) -> np.ndarray:
        """Legality masks [N, cells] of macro `node` given the macros placed before it in each env."""
        p = self.problem
        before = placement[:, :node]  # [N, k]: macros are placed in order, so only these can be set
        placed = before != UNPLACED
        if node == 0 or not placed.any():
            return np.broadcast_to(self.static_ok[node], (len(placement), self.cells)).copy()
        cell = np.where(placed, before, 0)
        x, y = self.col_x[cell % self.cols], self.row_y[cell // self.cols]  # [N, k]
        half_w = (p.w[node] + p.w[:node]) / 2 - EPS  # [k]
        half_h = (p.h[node] + p.h[:node]) / 2 - EPS
        cols = np.abs(self.col_x[None, None, :] - x[:, :, None]) < half_w[None, :, None]
        cols &= placed[:, :, None]
        rows = np.abs(self.row_y[None, None, :] - y[:, :, None]) < half_h[None, :, None]
        blocked = np.matmul(rows.transpose(0, 2, 1).astype(np.float32), cols.astype(np.float32)) > 0
        return self.static_ok[node][None, :] & ~blocked.reshape(len(placement), -1)

    def _obs(self) -> dict[str, np.ndarray]:
        node = min(self.t, self.n - 1)
        return {"placement": self.placement.copy(),
                "current_node": np.full((self.num_envs, 1), node, dtype=np.int64),
                "slot_occupancy": self.occupancy.copy(),
                "action_mask": self.mask.astype(np.int8),
                "wiremask": self.wires.mask(node).astype(np.float32),
                "incumbent": np.full((self.num_envs, 1), UNPLACED if self.best is None else self.best[node],
                                     dtype=np.int64),
                "design": np.full((self.num_envs, 1), self.design, dtype=np.int64)}

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self.mask.copy(), "active": self.active.copy()}

    # --- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start N new episodes (the envs are deterministic; `seed` is accepted for the API)."""
        self._start()
        return self._obs(), self._info()

    def step(self, actions):
        """Place the current macro in every active env on its chosen cell; rewards at episode ends."""
        a = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        ended: list[dict[str, Any]] = []
        act = np.flatnonzero(self.active)
        legal = (a[act] >= 0) & (a[act] < self.cells)
        legal[legal] = self.mask[act[legal], a[act[legal]]]
        if not legal.all():
            raise ValueError(f"step: illegal action for envs {act[~legal].tolist()} (masked cells)")
        node = self.t
        self.placement[act, node] = a[act]
        row, col = a[act] // self.cols, a[act] % self.cols
        cover = self.y_cover[node][row][:, :, None] * self.x_cover[node][col][:, None, :]  # [k, R, C]
        self.occupancy[act] += cover.reshape(len(act), -1).astype(np.float32)
        self.wires.place(act, node, a[act])
        self.t += 1
        if self.t < self.n:
            self.mask = self.masks(self.placement, self.t)
            self.mask[~self.active] = True
            dead = self.active & ~self.mask.any(axis=1)
            for i in np.flatnonzero(dead):  # dead end: the problem's penalty for an incomplete placement
                cost = self.problem.cost(self.placement[i])
                ended.append({"env": int(i), "cost": float(cost), "terms": None,
                              "placement": self.placement[i].copy()})
                rewards[i], terminated[i] = -cost, True
            self.active &= ~dead
            self.mask[dead] = True
        else:
            for i in act:
                terms = self.problem.terms(self.placement[i])
                ended.append({"env": int(i), "cost": terms["proxy"], "terms": terms,
                              "placement": self.placement[i].copy()})
                rewards[i], terminated[i] = -terms["proxy"], True
                self.offer(self.placement[i], terms["proxy"])  # the next episodes improve on it
            self._start()
        if not self.active.any() and self.t < self.n:  # every env hit a dead end: start over
            self._start()
        info = self._info()
        if ended:
            info["episode_end"] = ended
        return self._obs(), rewards, terminated, np.zeros(self.num_envs, dtype=bool), info


def _axis_cover(centers: np.ndarray, sizes: np.ndarray, step: float, count: int) -> np.ndarray:
    """[n, P, count]: overlap length with each cell of an axis of an interval of size sizes[i] centred
    on centers[p] (the per-axis factor of a macro's coverage of the grid)."""
    lo = centers[None, :, None] - sizes[:, None, None] / 2
    hi = centers[None, :, None] + sizes[:, None, None] / 2
    edges = np.arange(count + 1) * step
    return np.clip(np.minimum(hi, edges[1:]) - np.maximum(lo, edges[:-1]), 0.0, None)
