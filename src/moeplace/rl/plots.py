"""PNG figures of RL runs: a learning curve, and a grid layout with the robot's path."""

from __future__ import annotations

import os

import numpy as np

from moeplace.rl.gridworld import Layout
from moeplace.utils import save_figure


def plot_learning_curve(episodes: list[tuple[int, float, int]], path: str | os.PathLike[str],
                        title: str = "learning curve", window: int = 20,
                        target: float | None = None) -> None:
    """Episode returns against environment steps, with a moving average over `window` episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if episodes:
        steps = np.array([s for s, _, _ in episodes], dtype=float)
        rets = np.array([r for _, r, _ in episodes], dtype=float)
        ax.plot(steps, rets, ".", ms=3, alpha=0.4, color="tab:blue", label="episode return")
        w = max(1, min(window, len(rets)))
        avg = np.convolve(rets, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], avg, color="tab:blue", lw=2, label=f"mean of last {w}")
    if target is not None:
        ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def plot_grid_path(layout: Layout, path_cells: list[tuple[int, int]], out: str | os.PathLike[str],
                   shortest: list[tuple[int, int]] | None = None, title: str = "") -> None:
    """The grid (walls black), start (green) and target (red), the learned path and the BFS one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = layout.shape
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * cols + 1), max(3.0, 0.45 * rows + 1)))
    ax.imshow(layout.walls, cmap="Greys", vmin=0, vmax=1.3, origin="upper")
    if shortest:
        ys, xs = zip(*shortest)
        ax.plot(xs, ys, color="tab:orange", lw=5, alpha=0.45, label=f"BFS shortest ({len(shortest) - 1})")
    if path_cells:
        ys, xs = zip(*path_cells)
        ax.plot(xs, ys, color="tab:blue", lw=2, marker="o", ms=3,
                label=f"learned greedy ({len(path_cells) - 1})")
    ax.plot(layout.start[1], layout.start[0], "s", color="tab:green", ms=12, label="start")
    ax.plot(layout.target[1], layout.target[0], "*", color="tab:red", ms=16, label="target")
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(which="minor", color="0.8", lw=0.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=7, frameon=False)
    save_figure(fig, out)
