"""Draw a chip placement as a PNG: canvas, grid, hard macros, soft macros, ports, optional congestion map."""

from __future__ import annotations

import os

import numpy as np

from moeplace.place.chip.netlist import Netlist, NodeKind, swaps_axes
from moeplace.place.chip.plc import PlcHeader
from moeplace.utils import save_figure


def _rects(netlist: Netlist, nodes: np.ndarray, x: np.ndarray, y: np.ndarray, orient: np.ndarray):
    """Lower-left corners and sizes of the nodes' footprints as placed."""
    w, h = netlist.width[nodes], netlist.height[nodes]
    swap = swaps_axes(orient[nodes]) & (netlist.kind[nodes] == NodeKind.HARD_MACRO)
    w, h = np.where(swap, h, w), np.where(swap, w, h)
    return x[nodes] - w / 2, y[nodes] - h / 2, w, h


def congestion_map(netlist: Netlist, header: PlcHeader, which: str, x=None, y=None,
                   orient=None) -> np.ndarray:
    """The congestion map to draw: 'H', 'V' or 'max' (cellwise max of the two) `[rows, cols]`."""
    from moeplace.place.chip.cost import ProxyCost

    h, v = ProxyCost(netlist, header).congestion_maps(x, y, orient)
    if which == "H":
        return h
    if which == "V":
        return v
    if which == "max":
        return np.maximum(h, v)
    raise ValueError(f"congestion: expected 'H', 'V', 'max' or an array, got {which!r}")


def render_placement(path: str | os.PathLike[str], netlist: Netlist, header: PlcHeader,
                     x: np.ndarray | None = None, y: np.ndarray | None = None,
                     orient: np.ndarray | None = None, congestion: str | np.ndarray | None = None,
                     title: str | None = None, label_hard: bool = False, dpi: int = 120) -> None:
    """Draw the canvas to a PNG (atomically): grid, soft macros (amber), hard macros (blue, fixed ones
    hatched), ports (red), and under them an optional congestion heat map ('H', 'V', 'max' or an array)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    x = netlist.x if x is None else x
    y = netlist.y if y is None else y
    orient = netlist.orient if orient is None else orient
    W, H = header.width, header.height
    cmap = None
    if congestion is not None:
        cmap = congestion_map(netlist, header, congestion, x, y, orient) if isinstance(congestion, str) \
            else np.asarray(congestion)
        grids = {(header.rows, header.columns), (header.congestion_rows, header.congestion_columns)}
        if cmap.shape not in grids:  # the placement grid, or a separate congestion grid
            raise ValueError(f"congestion: map shape {cmap.shape} does not match the grid "
                             f"({header.rows}, {header.columns})")
    fig, ax = plt.subplots(figsize=(8, 8 * H / W + 0.6) if W >= H else (8 * W / H + 1.5, 8))
    if cmap is not None:
        im = ax.imshow(cmap, origin="lower", extent=(0, W, 0, H), cmap="Reds", alpha=0.55,
                       vmin=0, vmax=max(1.0, float(cmap.max())), zorder=0, interpolation="nearest")
        label = f"routing congestion ({congestion})" if isinstance(congestion, str) else "congestion"
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)
    for c in range(header.columns + 1):
        ax.axvline(c * W / header.columns, color="0.8", lw=0.4, zorder=1)
    for r in range(header.rows + 1):
        ax.axhline(r * H / header.rows, color="0.8", lw=0.4, zorder=1)
    for x0, y0, x1, y1, _ in header.blockages:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor="0.3", alpha=0.4, hatch="xx", zorder=2))
    soft = netlist.soft_macros
    if len(soft):
        lx, ly, w, h = _rects(netlist, soft, x, y, orient)
        ax.add_collection(PatchCollection([Rectangle((a, b), c, d) for a, b, c, d in zip(lx, ly, w, h)],
                                          facecolor="#f4a300", edgecolor="#9a6700", linewidth=0.2,
                                          alpha=0.45, zorder=3))
    hard = netlist.hard_macros
    if len(hard):
        lx, ly, w, h = _rects(netlist, hard, x, y, orient)
        fixed = netlist.fixed[hard]
        ax.add_collection(PatchCollection([Rectangle((a, b), c, d) for a, b, c, d in zip(lx, ly, w, h)],
                                          facecolor="#3b6fd8", edgecolor="#102a66", linewidth=0.5,
                                          alpha=0.8 if congestion is None else 0.35, zorder=4))
        for a, b, c, d in zip(lx[fixed], ly[fixed], w[fixed], h[fixed]):
            ax.add_patch(Rectangle((a, b), c, d, fill=False, hatch="///", edgecolor="#102a66", lw=0,
                                   zorder=5))
        if label_hard:
            for i in hard:
                ax.text(x[i], y[i], str(i), fontsize=5, ha="center", va="center", color="white", zorder=6)
    ports = netlist.ports
    if len(ports):
        ax.scatter(x[ports], y[ports], s=6, c="#d62728", marker="s", linewidths=0, zorder=6)
    ax.add_patch(Rectangle((0, 0), W, H, fill=False, edgecolor="black", lw=1.0, zorder=7))
    pad = 0.03 * max(W, H)
    ax.set_xlim(-pad, W + pad)
    ax.set_ylim(-pad, H + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("x (um)")
    ax.set_ylabel("y (um)")
    counts = f"{len(hard)} hard macros, {len(soft)} soft macros, {len(ports)} ports, " \
             f"grid {header.columns}x{header.rows}"
    ax.set_title(f"{title}\n{counts}" if title else counts, fontsize=9)
    handles = [Rectangle((0, 0), 1, 1, facecolor="#3b6fd8", alpha=0.8, label="hard macro"),
               Rectangle((0, 0), 1, 1, facecolor="#f4a300", alpha=0.45, label="soft macro"),
               plt.Line2D([], [], marker="s", color="#d62728", lw=0, markersize=4, label="port")]
    ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.8)
    save_figure(fig, path, dpi=dpi)
