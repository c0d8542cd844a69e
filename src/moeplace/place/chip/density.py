"""Grid-cell overlap of rectangles: the density map and the macro routing allocation maps.

A rectangle's overlap with grid cell (row r, column c) factors into its overlap with column c
(a width) times its overlap with row r (a height), so the map of many rectangles is one small
matrix product: sum over rectangles of row_overlap[:, r] * col_overlap[:, c].
"""

from __future__ import annotations

import numpy as np


def axis_overlaps(lo: np.ndarray, hi: np.ndarray, count: int, step: float) -> np.ndarray:
    """Overlap length `[K, count]` of intervals [lo, hi) with the cells [c*step, (c+1)*step) of one axis."""
    edges = np.arange(count + 1, dtype=np.float64) * step
    left = np.maximum(lo[:, None], edges[None, :-1])
    right = np.minimum(hi[:, None], edges[None, 1:])
    return np.clip(right - left, 0.0, None)


def rect_overlaps(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray, columns: int, rows: int,
                  cell_w: float, cell_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-rectangle overlaps with columns `[K, columns]` and rows `[K, rows]` (centre-based rectangles)."""
    xo = axis_overlaps(cx - w / 2, cx + w / 2, columns, cell_w)
    yo = axis_overlaps(cy - h / 2, cy + h / 2, rows, cell_h)
    return xo, yo


def overlap_area_map(xo: np.ndarray, yo: np.ndarray) -> np.ndarray:
    """Summed overlap area of all rectangles with each cell, `[rows, columns]`."""
    return np.einsum("kr,kc->rc", yo, xo)  # no BLAS: its threads spin and stall a busy machine


def density_cost(density: np.ndarray) -> float:
    """Circuit Training's density cost: 0.5 x mean of the densest floor(0.1 x cells) cells (at least 1)."""
    flat = density.ravel()
    k = max(1, int(np.floor(0.1 * flat.size)))
    top = np.partition(flat, flat.size - k)[flat.size - k:]
    return 0.5 * float(top.mean())


def edge_cells(lo: np.ndarray, hi: np.ndarray, count: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """First and last cell index `[K]` of intervals [lo, hi] on one axis, as the reference tool finds
    them: floor(edge / step), clamped to the grid (an edge exactly on a grid line names the cell
    above/right of it, which the interval does not cover)."""
    first = np.minimum(np.maximum(np.floor(lo / step), 0), count - 1).astype(np.int64)
    last = np.minimum(np.maximum(np.floor(hi / step), 0), count - 1).astype(np.int64)
    return first, last


PARTIAL_TOLERANCE = 1e-5  # microns: a cell covered to within this is covered in full


def macro_allocation_maps(xo: np.ndarray, yo: np.ndarray, cols: tuple[np.ndarray, np.ndarray],
                          rows: tuple[np.ndarray, np.ndarray], cell_w: float, cell_h: float,
                          partial_rule: bool = True, weight: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Routing demand of hard macros in raw route units: (H [rows, cols], V [rows, cols]) before scaling.

    A macro covering a cell blocks vertical routes in proportion to its overlap width there and
    horizontal routes in proportion to its overlap height. `cols` and `rows` are each macro's first
    and last cell per axis (`edge_cells`). As the reference tool does, a macro whose first and last
    row differ drops the vertical demand of its last row when that row or its first row is not
    covered in full, or when one of its columns is not covered at all (an edge on a grid line makes
    the last cell an empty one, so nothing is dropped there); horizontal demand likewise, with the
    last column. (Checked on Ariane133: this reproduces the reference congestion 0.7259; zeroing
    single-row/column macros too, or never zeroing, gives 0.564 / 1.053.)
    """
    xin, yin = xo > 0, yo > 0
    ymask, xmask = yin, xin
    if partial_rule and len(xo):
        (c0, c1), (r0, r1) = cols, rows
        k = np.arange(len(xo))
        ci = np.arange(xo.shape[1])[None, :]
        ri = np.arange(yo.shape[1])[None, :]
        in_cols = (ci >= c0[:, None]) & (ci <= c1[:, None])
        in_rows = (ri >= r0[:, None]) & (ri <= r1[:, None])
        empty_col = np.any(in_cols & ~xin, axis=1)  # a column with no overlap: overlap heights read 0
        empty_row = np.any(in_rows & ~yin, axis=1)
        tol = PARTIAL_TOLERANCE
        partial_v = (r1 != r0) & ((np.abs(yo[k, r0] - cell_h) > tol) | (np.abs(yo[k, r1] - cell_h) > tol)
                                  | empty_col)
        partial_h = (c1 != c0) & ((np.abs(xo[k, c0] - cell_w) > tol) | (np.abs(xo[k, c1] - cell_w) > tol)
                                  | empty_row)
        ymask = yin.copy()
        ymask[k[partial_v], r1[partial_v]] = False
        xmask = xin.copy()
        xmask[k[partial_h], c1[partial_h]] = False
    w = np.ones(len(xo)) if weight is None else weight  # +-1 lets a move add and remove in one pass
    v = np.einsum("k,kr,kc->rc", w, ymask.astype(np.float64), xo)  # overlap width, on covered rows
    h = np.einsum("k,kr,kc->rc", w, yo, xmask.astype(np.float64))  # overlap height, on covered columns
    return h, v
