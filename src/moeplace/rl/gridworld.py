"""The grid robot: an N x M grid with walls, a start and a target; reach the target in few moves.

Layouts come from a seed (random walls, resampled until breadth-first search finds a path) or
from a text file, one row per line: '#' wall, 'S' start, 'T' target, '.' free. The observation
is a Dict: `image` [3, N, M] (walls, robot, target channels) and `position` [2] (row, column
scaled to [0, 1]), so a policy can read any layout. Rewards: `step_cost` (negative) per move,
`target_reward` on reaching the target (terminated); the episode is truncated after
`max_steps` moves. `info["action_mask"]` marks moves that stay inside the grid and off walls
(with `mask_walls=False` every move is legal and bumping into a wall leaves the robot in place).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from moeplace.errors import InputError

# Actions: 0 up, 1 down, 2 left, 3 right (row, column deltas).
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
ACTION_NAMES = ("up", "down", "left", "right")


@dataclass(frozen=True)
class Layout:
    """A grid: bool walls [N, M], start and target cells (row, column)."""

    walls: np.ndarray
    start: tuple[int, int]
    target: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return int(self.walls.shape[0]), int(self.walls.shape[1])

    def free(self, cell: tuple[int, int]) -> bool:
        """True when `cell` is inside the grid and not a wall."""
        r, c = cell
        return 0 <= r < self.shape[0] and 0 <= c < self.shape[1] and not self.walls[r, c]

    def to_text(self, path: list[tuple[int, int]] | None = None) -> str:
        """The layout in the file format; cells of `path` (between S and T) drawn as '*'."""
        rows = [["#" if w else "." for w in row] for row in self.walls]
        for r, c in path or []:
            rows[r][c] = "*"
        rows[self.start[0]][self.start[1]] = "S"
        rows[self.target[0]][self.target[1]] = "T"
        return "\n".join("".join(row) for row in rows)


def shortest_path(layout: Layout) -> list[tuple[int, int]] | None:
    """Breadth-first shortest path of cells from start to target (inclusive), None if unreachable."""
    prev: dict[tuple[int, int], tuple[int, int] | None] = {layout.start: None}
    queue = deque([layout.start])
    while queue:
        cell = queue.popleft()
        if cell == layout.target:
            path = []
            node: tuple[int, int] | None = cell
            while node is not None:
                path.append(node)
                node = prev[node]
            return path[::-1]
        for dr, dc in MOVES:
            nxt = (cell[0] + int(dr), cell[1] + int(dc))
            if nxt not in prev and layout.free(nxt):
                prev[nxt] = cell
                queue.append(nxt)
    return None


def shortest_path_length(layout: Layout) -> int | None:
    """Number of moves of the shortest path, None if the target is unreachable."""
    path = shortest_path(layout)
    return None if path is None else len(path) - 1


def random_layout(rows: int = 10, cols: int = 10, wall_fraction: float = 0.2, seed: int = 0,
                  min_path_length: int = 0, max_tries: int = 1000) -> Layout:
    """A random solvable layout: walls on `wall_fraction` of the cells, start and target distinct,
    resampled until the shortest path has at least `min_path_length` moves."""
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise InputError(f"--size: a grid needs at least 2 cells, got {rows}x{cols}")
    if not 0.0 <= wall_fraction < 1.0:
        raise InputError(f"--walls: wall fraction must be in [0, 1), got {wall_fraction}")
    rng = np.random.default_rng(seed)
    n_cells = rows * cols
    n_walls = min(int(round(wall_fraction * n_cells)), n_cells - 2)
    for _ in range(max_tries):
        order = rng.permutation(n_cells)
        walls = np.zeros(n_cells, dtype=bool)
        walls[order[:n_walls]] = True
        start, target = (divmod(int(i), cols) for i in order[n_walls:n_walls + 2])
        layout = Layout(walls.reshape(rows, cols), start, target)
        path = shortest_path(layout)
        if path is not None and len(path) - 1 >= min_path_length:
            return layout
    raise InputError(f"no solvable {rows}x{cols} layout with wall fraction {wall_fraction} and a "
                     f"shortest path of at least {min_path_length} moves in {max_tries} tries")


def parse_layout(text: str, source: str = "<layout>") -> Layout:
    """Parse the text format ('#', 'S', 'T', '.'); errors name `source` and the line number."""
    lines = [(i + 1, line.rstrip("\r\n").rstrip()) for i, line in enumerate(text.splitlines())]
    lines = [(n, line) for n, line in lines if line]
    if not lines:
        raise InputError(f"{source}: empty layout")
    width = len(lines[0][1])
    walls, start, target = [], None, None
    for row, (n, line) in enumerate(lines):
        if len(line) != width:
            raise InputError(f"{source}:{n}: row has {len(line)} cells, expected {width} like line "
                             f"{lines[0][0]}")
        for col, ch in enumerate(line):
            if ch not in "#ST.":
                raise InputError(f"{source}:{n}: unexpected character {ch!r} in column {col + 1} "
                                 "(use '#', 'S', 'T' or '.')")
            if ch == "S":
                if start is not None:
                    raise InputError(f"{source}:{n}: second start 'S' (first on line {start[2]})")
                start = (row, col, n)
            if ch == "T":
                if target is not None:
                    raise InputError(f"{source}:{n}: second target 'T' (first on line {target[2]})")
                target = (row, col, n)
        walls.append([ch == "#" for ch in line])
    if start is None:
        raise InputError(f"{source}: no start 'S'")
    if target is None:
        raise InputError(f"{source}: no target 'T'")
    layout = Layout(np.array(walls, dtype=bool), (start[0], start[1]), (target[0], target[1]))
    if shortest_path(layout) is None:
        raise InputError(f"{source}:{target[2]}: target 'T' cannot be reached from start 'S' "
                         f"(line {start[2]})")
    return layout


def load_layout(path: str | os.PathLike[str]) -> Layout:
    """Read a layout file (see parse_layout); a missing file is an InputError."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read layout ({e.__class__.__name__}: {e})") from None
    return parse_layout(text, source=str(p))


class GridWorldEnv(gym.Env):
    """Gymnasium env of the grid robot on one layout (or a fresh random layout per reset)."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, layout: Layout | None = None, rows: int = 10, cols: int = 10,
                 wall_fraction: float = 0.2, step_cost: float = -0.01, target_reward: float = 1.0,
                 max_steps: int | None = None, mask_walls: bool = True,
                 render_mode: str | None = None) -> None:
        self.fixed_layout = layout
        self.rows, self.cols = layout.shape if layout is not None else (rows, cols)
        self.wall_fraction = wall_fraction
        self.step_cost, self.target_reward = float(step_cost), float(target_reward)
        self.max_steps = int(max_steps) if max_steps is not None else 4 * self.rows * self.cols
        self.mask_walls = mask_walls
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(4)
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0.0, 1.0, (3, self.rows, self.cols), dtype=np.float32),
            "position": gym.spaces.Box(0.0, 1.0, (2,), dtype=np.float32),
        })
        self.layout = layout if layout is not None else random_layout(rows, cols, wall_fraction, 0)
        self.pos = self.layout.start
        self.steps = 0

    def _obs(self) -> dict[str, np.ndarray]:
        image = np.zeros((3, self.rows, self.cols), dtype=np.float32)
        image[0] = self.layout.walls
        image[1][self.pos] = 1.0
        image[2][self.layout.target] = 1.0
        scale = np.array([max(self.rows - 1, 1), max(self.cols - 1, 1)], dtype=np.float32)
        return {"image": image, "position": np.asarray(self.pos, dtype=np.float32) / scale}

    def _mask(self) -> np.ndarray:
        if not self.mask_walls:
            return np.ones(4, dtype=bool)
        return np.array([self.layout.free((self.pos[0] + int(dr), self.pos[1] + int(dc)))
                         for dr, dc in MOVES], dtype=bool)

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self._mask(), "position": self.pos}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Put the robot on the start; without a fixed layout, draw a new random solvable one."""
        super().reset(seed=seed)
        if self.fixed_layout is None:
            layout_seed = int(self.np_random.integers(2**31))
            self.layout = random_layout(self.rows, self.cols, self.wall_fraction, layout_seed)
        self.pos = self.layout.start
        self.steps = 0
        return self._obs(), self._info()

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Move one cell (a blocked move stays in place); reward, terminated at the target."""
        if not self.action_space.contains(action):
            raise ValueError(f"action: expected 0..3, got {action!r}")
        dr, dc = MOVES[int(action)]
        nxt = (self.pos[0] + int(dr), self.pos[1] + int(dc))
        if self.layout.free(nxt):
            self.pos = nxt
        self.steps += 1
        terminated = self.pos == self.layout.target
        reward = self.step_cost + (self.target_reward if terminated else 0.0)
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), reward, terminated, truncated, self._info()

    def render(self) -> str | None:
        """The grid as text with the robot as 'R' (render_mode 'ansi')."""
        if self.render_mode != "ansi":
            return None
        rows = self.layout.to_text().splitlines()
        r, c = self.pos
        rows[r] = rows[r][:c] + "R" + rows[r][c + 1:]
        return "\n".join(rows)


def greedy_path(predict: Any, env: GridWorldEnv, max_steps: int | None = None
                ) -> tuple[list[tuple[int, int]], bool]:
    """Follow `predict(obs, action_mask=...)` from the start; (cells visited, reached target)."""
    obs, info = env.reset(seed=0)
    path = [env.pos]
    for _ in range(max_steps or env.max_steps):
        obs, _, terminated, truncated, info = env.step(predict(obs, action_mask=info["action_mask"]))
        path.append(env.pos)
        if terminated:
            return path, True
        if truncated:
            break
    return path, False
