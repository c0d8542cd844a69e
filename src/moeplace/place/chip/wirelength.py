"""Half-perimeter wirelength (HPWL) of nets, vectorised over CSR net arrays."""

from __future__ import annotations

import numpy as np


def hpwl_per_net(px: np.ndarray, py: np.ndarray, net_ptr: np.ndarray, net_pins: np.ndarray) -> np.ndarray:
    """HPWL of each net: (max x - min x) + (max y - min y) over its pins (driver and sinks)."""
    if len(net_ptr) <= 1:
        return np.zeros(0)
    starts = net_ptr[:-1]
    xy = np.stack([px[net_pins], py[net_pins]], axis=1)
    span = np.maximum.reduceat(xy, starts, axis=0) - np.minimum.reduceat(xy, starts, axis=0)
    return span.sum(axis=1)


def wirelength_cost(hpwl: np.ndarray, net_weight: np.ndarray, canvas_width: float,
                    canvas_height: float) -> float:
    """Circuit Training's wirelength cost: sum(weight * HPWL) / ((W + H) * sum(weight))."""
    total_weight = float(net_weight.sum())
    if total_weight == 0:
        return 0.0
    return float((net_weight * hpwl).sum()) / ((canvas_width + canvas_height) * total_weight)


def subset_csr(net_ptr: np.ndarray, nets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a subset of nets: (new CSR pointer, positions into net_pins of their pins, in net order)."""
    lengths = net_ptr[nets + 1] - net_ptr[nets]
    ptr = np.zeros(len(nets) + 1, np.int64)
    np.cumsum(lengths, out=ptr[1:])
    # position of each pin = start of its net + rank inside the net
    pos = np.repeat(net_ptr[nets] - ptr[:-1], lengths) + np.arange(ptr[-1])
    return ptr, pos
