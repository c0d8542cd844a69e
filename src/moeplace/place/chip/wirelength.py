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


class PaddedNets:
    """Nets grouped by size into a few dense `[B, n]` matrices of pin nodes (column = net, row 0 =
    driver), short nets padded with their driver, which changes no bounding box and no cell set.

    Reductions along axis 0 of such a matrix run across all its nets at once, which is several
    times faster than `reduceat` over CSR segments when most nets have 2-6 pins.
    """

    SIZES = (2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)

    def __init__(self, net_ptr: np.ndarray, net_pins: np.ndarray) -> None:
        degree = np.diff(net_ptr)
        size = np.asarray(self.SIZES)[np.minimum(np.searchsorted(self.SIZES, degree), len(self.SIZES) - 1)]
        big = degree > self.SIZES[-1]
        size[big] = 2 ** np.ceil(np.log2(degree[big])).astype(np.int64)
        self.buckets: list[tuple[np.ndarray, np.ndarray]] = []  # (net ids [n], pin nodes [B, n])
        for b in np.unique(size):
            nets = np.flatnonzero(size == b)
            k = np.arange(b)[:, None]
            start, deg = net_ptr[nets][None, :], degree[nets][None, :]
            self.buckets.append((nets, net_pins[np.where(k < deg, start + k, start)]))
        self.num_nets = len(degree)

    def hpwl(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """HPWL of every net (same as hpwl_per_net over the CSR arrays)."""
        out = np.empty(self.num_nets)
        for nets, idx in self.buckets:
            xs, ys = px[idx], py[idx]
            out[nets] = xs.max(axis=0) - xs.min(axis=0) + ys.max(axis=0) - ys.min(axis=0)
        return out
