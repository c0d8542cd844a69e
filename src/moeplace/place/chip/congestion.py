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
    """Horizontal runs on a row and vertical runs on a column, kept as difference-array entries.

    A run between a and b loads cells min(a, b) .. max(a, b) - 1. The H diff array is
    [rows, columns + 1] and the V one [columns, rows + 1]; both live in one flat index space so that
    one bincount adds every run.
    """

    def __init__(self, columns: int, rows: int) -> None:
        self.columns, self.rows = columns, rows
        self.h_size = rows * (columns + 1)
        self.index: list[np.ndarray] = []
        self.weight: list[np.ndarray] = []

    def _add(self, base: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        """+w at base + min(a, b) and -w at base + max(a, b)."""
        self.index += [base + np.minimum(a, b), base + np.maximum(a, b)]
        self.weight += [w, -w]

    def add_h(self, row: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        """Horizontal run on `row` between columns a and b."""
        self._add(row * (self.columns + 1), a, b, w)

    def add_v(self, col: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        """Vertical run on `col` between rows a and b."""
        self._add(self.h_size + col * (self.rows + 1), a, b, w)

    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Summed demand maps (H [rows, cols], V [rows, cols]) of all runs."""
        c, r = self.columns, self.rows
        size = self.h_size + c * (r + 1)
        if not self.index:
            return np.zeros((r, c)), np.zeros((r, c))
        diff = np.bincount(np.concatenate(self.index), np.concatenate(self.weight), size)
        h = np.cumsum(diff[:self.h_size].reshape(r, c + 1), axis=1)[:, :c]
        v = np.cumsum(diff[self.h_size:].reshape(c, r + 1), axis=1)[:, :r].T
        return h, v


def routed_weights(outside: np.ndarray, ptr: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Nets' weights (CSR pins, `outside` per pin), zero for nets with any pin outside."""
    m = len(ptr) - 1
    net_of = np.repeat(np.arange(m), np.diff(ptr))
    bad = np.bincount(net_of, outside.astype(np.float64), minlength=m) > 0
    return np.where(bad, 0.0, weight)


def route_nets(col: np.ndarray, row: np.ndarray, net_ptr: np.ndarray, net_weight: np.ndarray,
               columns: int, rows: int, net_of: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw routing demand (H, V) `[rows, cols]` of nets whose pins (CSR order, driver first) sit in
    grid cells (col, row); `net_of` (the net of each pin) may be passed precomputed."""
    m = len(net_ptr) - 1
    if m == 0:
        return Segments(columns, rows).maps()
    if net_of is None:
        net_of = np.repeat(np.arange(m), np.diff(net_ptr))
    cells = columns * rows
    cell = row * columns + col
    key = sorted_unique(net_of * cells + cell)  # distinct (net, cell), sorted by net then cell
    unet, ucell = key // cells, key % cells
    g = np.bincount(unet, minlength=m)
    src = cell[net_ptr[:-1]]
    star = np.flatnonzero((ucell != src[unet]) & (g[unet] != 3))
    three = np.flatnonzero(g[unet] == 3)
    return route_cells(src[unet[star]], ucell[star], net_weight[unet[star]],
                       ucell[three].reshape(-1, 3), net_weight[unet[three[::3]]], columns, rows)


def route_cells(src: np.ndarray, sink: np.ndarray, w: np.ndarray, three: np.ndarray, w3: np.ndarray,
                columns: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Demand maps of two-cell routes (source -> sink, weight w; stars are several of these) and of
    three-cell nets (`three` [K, 3] flat cells, weights w3)."""
    segs = Segments(columns, rows)
    segs.add_h(src // columns, src % columns, sink % columns, w)  # along the source's row
    segs.add_v(sink % columns, src // columns, sink // columns, w)  # then the sink's column
    if len(three):
        _route_three(three % columns, three // columns, w3, rows, segs)
    return segs.maps()


def _route_three(i: np.ndarray, j: np.ndarray, w: np.ndarray, rows: int, segs: Segments) -> None:
    """Routes of three-cell nets; i (columns) and j (rows) are `[K, 3]`, in any order.

    Sorted by column: a staircase (i1 < i2 < i3, j2 strictly between j1 and j3) is two Ls; two cells
    in one column right of and above the first make a corner; the two right cells on one row an L
    plus a run; anything else a T with its trunk on the middle row. Each case is at most two H and
    two V runs, chosen per net with np.where (an unused run has zero length).
    """
    order = np.argsort(i * (rows + 1) + j, axis=1, kind="stable")  # by column (ties by row)
    i = np.take_along_axis(i, order, axis=1)
    j = np.take_along_axis(j, order, axis=1)
    i1, i2, i3 = i.T
    j1, j2, j3 = j.T
    by_row = np.argsort(j, axis=1, kind="stable")  # for the T: a, b, c by row
    ia, ib, ic = np.take_along_axis(i, by_row, axis=1).T
    ja, jb, jc = np.take_along_axis(j, by_row, axis=1).T
    staircase = (i1 < i2) & (i2 < i3) & (np.minimum(j1, j3) < j2) & (np.maximum(j1, j3) > j2)
    corner = ~staircase & (i2 == i3) & (i1 < i2) & (j1 < np.minimum(j2, j3))
    flat = ~staircase & ~corner & (j2 == j3)
    tee = ~(staircase | corner | flat)
    # H1: row j1 from i1 to i2 (T: trunk on row jb from min to max column)
    segs.add_h(np.where(tee, jb, j1), np.where(tee, i.min(axis=1), i1), np.where(tee, i.max(axis=1), i2), w)
    # H2: row j2 from i2 to i3 (staircase and flat only)
    two = staircase | flat
    segs.add_h(j2, i2, np.where(two, i3, i2), w)
    # V1: column i2 from j1 to j2 (corner: to the higher sink; T: column ia from ja to jb)
    segs.add_v(np.where(tee, ia, i2), np.where(tee, ja, j1),
               np.where(tee, jb, np.where(corner, np.maximum(j2, j3), j2)), w)
    # V2: column i3 from j2 to j3 (staircase; T: column ic from jb to jc)
    segs.add_v(np.where(tee, ic, i3), np.where(tee, jb, j2),
               np.where(tee, jc, np.where(staircase, j3, j2)), w)
    del ib  # the T's middle cell lies on the trunk


def smooth(demand: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Spread each cell's value evenly over the in-grid cells within +-k along `axis` (the cost spreads
    H demand over rows, axis 0, and V demand over columns, axis 1)."""
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
