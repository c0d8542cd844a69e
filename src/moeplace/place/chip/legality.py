"""Where a hard macro may go on the grid: inside the canvas, off blockages, overlapping no placed macro.

A macro placed on a cell has its centre at the cell centre. Rows and columns are tested apart and
combined with one small matrix product, so a mask over every cell costs O(macros x (rows + cols)).
Sizes are shrunk by a tiny tolerance so macros that merely touch (abut) do not count as overlapping.
"""

from __future__ import annotations

import numpy as np

from moeplace.place.chip.cost import Grid

EPS = 1e-6  # microns of tolerance: touching edges are legal


def coverage(grid: Grid, x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Fraction of each cell's area covered by the rectangles (summed; overlaps count twice) [rows*cols]."""
    if len(x) == 0:
        return np.zeros(grid.num_cells)
    c0 = np.arange(grid.columns) * grid.cell_width
    r0 = np.arange(grid.rows) * grid.cell_height
    ox = np.clip(np.minimum(x[:, None] + w[:, None] / 2, c0 + grid.cell_width)
                 - np.maximum(x[:, None] - w[:, None] / 2, c0), 0, None)
    oy = np.clip(np.minimum(y[:, None] + h[:, None] / 2, r0 + grid.cell_height)
                 - np.maximum(y[:, None] - h[:, None] / 2, r0), 0, None)
    return (oy.T @ ox).reshape(-1) / (grid.cell_width * grid.cell_height)


def blocked_by(grid: Grid, w: float, h: float, x: np.ndarray, y: np.ndarray, ow: np.ndarray,
               oh: np.ndarray) -> np.ndarray:
    """Cells where a w x h macro centred on the cell would overlap any of the given rectangles."""
    if len(x) == 0:
        return np.zeros(grid.num_cells, dtype=bool)
    cols = np.abs(grid.col_centers()[None, :] - x[:, None]) < (w + ow[:, None]) / 2 - EPS  # [K, C]
    rows = np.abs(grid.row_centers()[None, :] - y[:, None]) < (h + oh[:, None]) / 2 - EPS  # [K, R]
    return ((rows.T.astype(np.float32) @ cols.astype(np.float32)) > 0).reshape(-1)


def inside_canvas(grid: Grid, w: float, h: float) -> np.ndarray:
    """Cells where a w x h macro centred on the cell stays inside the canvas."""
    cx, cy = grid.col_centers(), grid.row_centers()
    ok_c = (cx - w / 2 >= -EPS) & (cx + w / 2 <= grid.width + EPS)
    ok_r = (cy - h / 2 >= -EPS) & (cy + h / 2 <= grid.height + EPS)
    return (ok_r[:, None] & ok_c[None, :]).reshape(-1)


def blockage_rects(blockages: list[tuple[float, float, float, float, float]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Blockages (x0, y0, x1, y1, rate) with rate > 0 as centre/size arrays."""
    b = np.array([r[:4] for r in blockages if r[4] > 0], dtype=np.float64).reshape(-1, 4)
    return (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
