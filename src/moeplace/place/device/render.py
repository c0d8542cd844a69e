"""PNG timeline of a simulated step: per device, forward (blue) and backward (orange) ops, and the
transfers arriving at it (grey), with peak memory against capacity in the labels."""

from __future__ import annotations

import os

import numpy as np

from moeplace.place.device.cluster import Cluster
from moeplace.place.device.simulator import SimResult
from moeplace.utils import save_figure


def render_timeline(
    result: SimResult, cluster: Cluster, path: str | os.PathLike[str], title: str = ""
) -> None:
    """Write the timeline of `result` as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    D = cluster.num_devices
    n = len(result.op_device)
    fig, ax = plt.subplots(figsize=(12, 0.9 * D + 1.5))
    dur = result.task_end - result.task_start
    scale = 1e3  # milliseconds
    for d in range(D):
        y = 2 * (D - 1 - d)
        for part, color in ((slice(0, n), "tab:blue"), (slice(n, 2 * n), "tab:orange")):
            sel = np.flatnonzero((result.op_device == d) & (dur[part] > 0))
            bars = [(result.task_start[part][i] * scale, dur[part][i] * scale) for i in sel]
            ax.broken_barh(bars, (y + 0.55, 0.9), facecolors=color, edgecolors="none")
        for src, dst, fs, fe, bs, be in result.copies:
            if int(dst) == d:
                ax.broken_barh([(fs * scale, (fe - fs) * scale)], (y + 0.1, 0.35), facecolors="grey")
            if int(result.op_device[int(src)]) == d and be > bs:
                ax.broken_barh([(bs * scale, (be - bs) * scale)], (y + 0.1, 0.35), facecolors="dimgrey")
    labels = [
        f"{dev.name}\n{result.peak_memory[i] / 1e9:.1f}/{dev.memory / 1e9:.0f} GB"
        + (" OOM" if result.peak_memory[i] > dev.memory else "")
        for i, dev in enumerate(cluster.devices)
    ]
    ax.set_yticks([2 * (D - 1 - d) + 0.75 for d in range(D)], labels)
    ax.set_xlabel("time (ms)")
    ax.set_xlim(0, result.step_time * scale * 1.01)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="tab:blue", label="forward"),
            Patch(color="tab:orange", label="backward"),
            Patch(color="grey", label="transfer in"),
        ],
        loc="upper right",
        fontsize=8,
    )
    ax.set_title(title or f"step time {result.step_time * scale:.2f} ms")
    save_figure(fig, path)
