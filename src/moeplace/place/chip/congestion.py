"""Grid routing congestion as Circuit Training defines it, vectorised over all nets at once.

Each net becomes the set of distinct grid cells of its pins, the driver's cell being the source.
Two cells: a horizontal run along the source's row, then a vertical run along the sink's column.
Three cells: L, corner or T shapes by the cases of the TILOS MacroPlacement proxy-cost notes. More:
a star of two-cell routes from the source. A run from cell i to cell i+1 loads cell i only. Demand
is the driver's weight; runs are added with difference arrays, so all nets cost a few array passes.
"""

from __future__ import annotations

import numpy as np


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (np.unique's hash path is 20x slower here)."""
    a = np.sort(a)
    if len(a) == 0:
        return a
    keep = np.empty(len(a), bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


class Segments:
    """Horizontal runs (row, c0, c1, w) and vertical runs (col, r0, r1, w): cells [c0, c1) get w."""

    def __init__(self) -> None:
        self.h: list[tuple[np.ndarray, ...]] = []
        self.v: list[tuple[np.ndarray, ...]] = []

    def add_h(self, row: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        """Horizontal run on `row` between columns a and b (either order): cells min..max-1."""
        self.h.append((row, np.minimum(a, b), np.maximum(a, b), w))

    def add_v(self, col: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        """Vertical run on `col` between rows a and b (either order): cells min..max-1."""
        self.v.append((col, np.minimum(a, b), np.maximum(a, b), w))

    def maps(self, columns: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Summed demand maps (H [rows, cols], V [rows, cols]) of all runs."""
        return (_accumulate(self.h, rows, columns, horizontal=True),
                _accumulate(self.v, rows, columns, horizontal=False))


def _accumulate(runs: list[tuple[np.ndarray, ...]], rows: int, columns: int, horizontal: bool) -> np.ndarray:
    if not runs:
        return np.zeros((rows, columns))
    line, lo, hi, w = (np.concatenate(parts) for parts in zip(*runs))
    if horizontal:  # difference array along each row, one spare column
        stride, size = columns + 1, rows * (columns + 1)
        diff = (np.bincount(line * stride + lo, w, size) - np.bincount(line * stride + hi, w, size))
        return np.cumsum(diff.reshape(rows, stride), axis=1)[:, :columns]
    stride, size = rows + 1, columns * (rows + 1)  # along each column, stored transposed
    diff = (np.bincount(line * stride + lo, w, size) - np.bincount(line * stride + hi, w, size))
    return np.cumsum(diff.reshape(columns, stride), axis=1)[:, :rows].T


def route_nets(col: np.ndarray, row: np.ndarray, net_ptr: np.ndarray, net_weight: np.ndarray,
               columns: int, rows: int, net_of: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw routing demand (H, V) `[rows, cols]` of nets whose pins (CSR order, driver first) sit in
    grid cells (col, row); `net_of` (the net of each pin) may be passed precomputed."""
    segs = Segments()
    m = len(net_ptr) - 1
    if m == 0:
        return segs.maps(columns, rows)
    if net_of is None:
        net_of = np.repeat(np.arange(m), np.diff(net_ptr))
    cells = columns * rows
    cell = row * columns + col
    key = sorted_unique(net_of * cells + cell)  # distinct (net, cell), sorted by net then cell
    unet, ucell = key // cells, key % cells
    g = np.bincount(unet, minlength=m)
    src = cell[net_ptr[:-1]]
    # two cells and stars (> 3 cells): a two-cell route from the source to each other cell
    star = (ucell != src[unet]) & (g[unet] != 3)
    t, s = ucell[star], src[unet[star]]
    w = net_weight[unet[star]]
    segs.add_h(s // columns, s % columns, t % columns, w)
    segs.add_v(t % columns, s // columns, t // columns, w)
    # three cells
    three = g[unet] == 3
    if np.any(three):
        c3 = ucell[three].reshape(-1, 3)
        _route_three(c3 % columns, c3 // columns, net_weight[unet[three][::3]], rows, segs)
    return segs.maps(columns, rows)


def _route_three(i: np.ndarray, j: np.ndarray, w: np.ndarray, rows: int, segs: Segments) -> None:
    """Routes of three-cell nets; i (columns) and j (rows) are `[K, 3]`, in any order."""
    order = np.argsort(i * (rows + 1) + j, axis=1, kind="stable")  # by column (ties by row)
    i = np.take_along_axis(i, order, axis=1)
    j = np.take_along_axis(j, order, axis=1)
    i1, i2, i3 = i.T
    j1, j2, j3 = j.T
    lo13, hi13 = np.minimum(j1, j3), np.maximum(j1, j3)
    case_l = (i1 < i2) & (i2 < i3) & (lo13 < j2) & (hi13 > j2)  # a staircase
    case_c = ~case_l & (i2 == i3) & (i1 < i2) & (j1 < np.minimum(j2, j3))  # two sinks in one column
    case_f = ~case_l & ~case_c & (j2 == j3)  # the two right cells share a row
    case_t = ~(case_l | case_c | case_f)
    for mask in (case_l, case_f):  # H j1: i1..i2, H j2: i2..i3, V i2: j1..j2, (L only) V i3: j2..j3
        segs.add_h(j1[mask], i1[mask], i2[mask], w[mask])
        segs.add_h(j2[mask], i2[mask], i3[mask], w[mask])
        segs.add_v(i2[mask], j1[mask], j2[mask], w[mask])
    segs.add_v(i3[case_l], j2[case_l], j3[case_l], w[case_l])
    m = case_c
    segs.add_h(j1[m], i1[m], i2[m], w[m])
    segs.add_v(i2[m], j1[m], np.maximum(j2[m], j3[m]), w[m])
    if np.any(case_t):  # T: trunk along the middle row, branches up/down at the outer cells
        it, jt, wt = i[case_t], j[case_t], w[case_t]
        by_row = np.argsort(jt, axis=1, kind="stable")
        it = np.take_along_axis(it, by_row, axis=1)
        jt = np.take_along_axis(jt, by_row, axis=1)
        segs.add_h(jt[:, 1], it.min(axis=1), it.max(axis=1), wt)
        segs.add_v(it[:, 0], jt[:, 0], jt[:, 1], wt)
        segs.add_v(it[:, 2], jt[:, 1], jt[:, 2], wt)


def smooth(demand: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Spread each cell's value evenly over the in-grid cells within +-k along `axis` (1: H, 0: V)."""
    if k <= 0:
        return demand
    d = np.moveaxis(demand, axis, -1)
    n = d.shape[-1]
    idx = np.arange(n)
    count = np.minimum(idx + k, n - 1) - np.maximum(idx - k, 0) + 1
    share = d / count
    csum = np.concatenate([np.zeros(share.shape[:-1] + (1,)), np.cumsum(share, axis=-1)], axis=-1)
    hi = np.minimum(idx + k, n - 1) + 1
    lo = np.maximum(idx - k, 0)
    return np.moveaxis(csum[..., hi] - csum[..., lo], -1, axis)


def congestion_cost(h: np.ndarray, v: np.ndarray) -> float:
    """Mean of the most congested floor(5%) of the concatenated V and H maps (at least one value)."""
    flat = np.concatenate([v.ravel(), h.ravel()])
    k = max(1, int(np.floor(0.05 * flat.size)))
    return float(np.partition(flat, flat.size - k)[flat.size - k:].mean())
