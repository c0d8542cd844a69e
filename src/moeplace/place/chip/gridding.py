"""Grid selection for a netlist without a .plc grid: Circuit Training's gridding.

The method is Circuit Training's `grouping/grid_size_selection.py` (google-research/circuit_training),
as documented and re-implemented by TILOS MacroPlacement (`CodeElements/Gridding/README.md`,
Algorithms 1 and 2). For every grid of `columns x rows` cells within the sweep's bounds, the movable
hard macros are packed largest first, each centred on the first legal cell in row-major order
(the legality of `ChipProblem`: inside the canvas, overlapping no placed macro, fixed macro or
blockage); grids where a macro finds no cell are dropped. A packed grid scores
`empty_ratio + (1 - hor_waste) + (1 - ver_waste)`; among the grids within `tolerance` of the best
score, the one with the highest score per cell is chosen (fewer cells, nearly the same score).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from moeplace.errors import InfeasibleError
from moeplace.place.chip.cost import Grid
from moeplace.place.chip.legality import EPS, blockage_rects, blocked_by, coverage, inside_canvas
from moeplace.place.chip.netlist import Netlist
from moeplace.utils import progress

EMPTY_THRESHOLD = 1e-5  # a cell is empty when the macros cover less than this fraction of it (CT)


@dataclass(frozen=True)
class GriddingOptions:
    """The sweep's bounds and the selection tolerance; defaults are Circuit Training's flag defaults."""

    min_num: int = 10  # columns and rows run over range(min_num, max_num)
    max_num: int = 128
    min_cells: int = 500
    max_cells: int = 4096
    max_aspect_ratio: float = 1.5  # of a cell, w/h or h/w
    tolerance: float = 0.05  # a grid within this fraction of the best score may be chosen
    add_size: float = 0.0  # added to macro widths/heights in the waste ratios


RELAXED = GriddingOptions(min_num=1, min_cells=1, max_aspect_ratio=math.inf)


@dataclass(frozen=True)
class GridScore:
    """One packed grid and its score (higher is better)."""

    columns: int
    rows: int
    metric: float
    empty_ratio: float
    hor_waste: float
    ver_waste: float

    @property
    def cells(self) -> int:
        """Number of grid cells."""
        return self.columns * self.rows


@dataclass(frozen=True)
class GriddingResult:
    """The chosen grid, the best-scoring one, and how many grids were tried and packed."""

    chosen: GridScore
    best: GridScore
    tried: int
    packed: int
    relaxed: bool  # True when no grid within Circuit Training's bounds packed and the bounds were widened
    tolerance: float = GriddingOptions.tolerance

    @property
    def columns(self) -> int:
        """Columns of the chosen grid."""
        return self.chosen.columns

    @property
    def rows(self) -> int:
        """Rows of the chosen grid."""
        return self.chosen.rows

    def as_dict(self) -> dict:
        """Plain figures for JSON output."""
        return {"chosen": asdict(self.chosen), "best": asdict(self.best), "tried": self.tried,
                "packed": self.packed, "relaxed": self.relaxed, "tolerance": self.tolerance}


def waste_ratio(segments: np.ndarray, cell: float) -> float:
    """Fraction of the span left empty when segments (macro widths) are laid side by side, each
    centred on a cell centre, next to each other without overlap (TILOS Algorithm 2, CT `get_waste_ratio`).

    A segment centred on a cell spans the smallest odd number of cells that holds it; two neighbours
    share a cell when their ends in it fit together."""
    total = float(np.sum(segments))
    index, prev_piece = 0, 0.0
    for seg in np.asarray(segments, dtype=np.float64):
        k = max(0, math.ceil((seg / cell - 1.0) / 2.0))
        while (2 * k + 1) * cell < seg:  # the smallest odd span >= seg, whatever the rounding
            k += 1
        while k > 0 and (2 * k - 1) * cell >= seg:
            k -= 1
        span = 2 * k + 1
        piece = cell - (span * cell - seg) / 2.0  # how much of its last cell the segment fills
        index += span - (1 if piece + prev_piece <= cell else 0)
        prev_piece = piece
    length = (index + 1) * cell
    return (length - total) / length


def movable_hard_macros(netlist: Netlist) -> np.ndarray:
    """Movable hard macros in descending area, ties in node order (the placer's order)."""
    hard = netlist.hard_macros
    movable = hard[~netlist.fixed[hard]]
    area = netlist.width[movable] * netlist.height[movable]
    return movable[np.argsort(-area, kind="stable")]


def static_obstacles(netlist: Netlist, blockages) -> tuple[np.ndarray, ...]:
    """Centres and sizes of the fixed hard macros and the blockages (rate > 0)."""
    hard = netlist.hard_macros
    fixed = hard[netlist.fixed[hard]]
    bx, by, bw, bh = blockage_rects(list(blockages))
    return (np.concatenate([netlist.x[fixed], bx]), np.concatenate([netlist.y[fixed], by]),
            np.concatenate([netlist.width[fixed], bw]), np.concatenate([netlist.height[fixed], bh]))


def pack(grid: Grid, w: np.ndarray, h: np.ndarray, obstacles: tuple[np.ndarray, ...] | None = None
         ) -> tuple[np.ndarray, np.ndarray] | None:
    """Centres of macros (in the given order) packed on the first legal cell in row-major order,
    or None when one finds no cell. Legal as in `ChipProblem.legal_mask`: inside the canvas, no
    overlap with placed macros or obstacles (touching edges are fine)."""
    n = len(w)
    if obstacles is None:
        obstacles = (np.zeros(0),) * 4
    cc, rc = grid.col_centers(), grid.row_centers()
    xs, ys = np.zeros(n), np.zeros(n)
    free2d = np.zeros((grid.rows, grid.columns), dtype=bool)
    free = free2d.reshape(-1)
    key: tuple[float, float] | None = None
    start = kx = ky = 0
    for i in range(n):
        wi, hi = float(w[i]), float(h[i])
        if (wi, hi) != key:  # a new size: its legal cells given every macro placed so far
            key = (wi, hi)
            free2d[:] = (inside_canvas(grid, wi, hi) & ~blocked_by(grid, wi, hi, *obstacles)
                         & ~blocked_by(grid, wi, hi, xs[:i], ys[:i], w[:i], h[:i])).reshape(free2d.shape)
            # a macro of this size on a cell blocks the cells up to kx columns, ky rows away for the
            # next one of the same size (blocked_by's test, centres being a cell apart)
            kx = int(np.count_nonzero(np.abs(cc - cc[0]) < (wi + wi) / 2 - EPS)) - 1
            ky = int(np.count_nonzero(np.abs(rc - rc[0]) < (hi + hi) / 2 - EPS)) - 1
            start = 0
        # cells only get blocked, so within a run of equal sizes the first free cell only moves on
        j = start + int(free[start:].argmax())
        if not free[j]:
            return None
        start = j
        r, c = divmod(j, grid.columns)
        xs[i], ys[i] = cc[c], rc[r]
        if kx >= 0 and ky >= 0:
            free2d[max(r - ky, 0):r + ky + 1, max(c - kx, 0):c + kx + 1] = False
    return xs, ys


def _candidates(width: float, height: float, opts: GriddingOptions, columns: int | None,
                rows: int | None) -> list[tuple[int, int]]:
    """(columns, rows) within the bounds, in Circuit Training's sweep order (rows outer)."""
    row_range = [rows] if rows is not None else range(opts.min_num, opts.max_num)
    col_range = [columns] if columns is not None else range(opts.min_num, opts.max_num)
    out = []
    for r in row_range:
        for c in col_range:
            cw, ch = width / c, height / r
            if not opts.min_cells <= c * r <= opts.max_cells:
                continue
            if max(cw / ch, ch / cw) > opts.max_aspect_ratio:
                continue
            out.append((c, r))
    return out


def grid_scores(netlist: Netlist, width: float, height: float, blockages=(),
                opts: GriddingOptions = GriddingOptions(), columns: int | None = None,
                rows: int | None = None, show_progress: bool = False) -> tuple[list[GridScore], int]:
    """Every grid within the bounds on which all movable hard macros pack, scored; and how many
    grids were tried. `columns` or `rows` pins that dimension."""
    order = movable_hard_macros(netlist)
    w, h = netlist.width[order].astype(np.float64), netlist.height[order].astype(np.float64)
    obstacles = static_obstacles(netlist, blockages)
    hard = netlist.hard_macros
    fixed = hard[netlist.fixed[hard]]
    file_order = np.sort(order)  # Circuit Training takes the waste ratios over macros in node order
    seg_w = netlist.width[file_order] + opts.add_size
    seg_h = netlist.height[file_order] + opts.add_size
    hor: dict[int, float] = {}
    ver: dict[int, float] = {}
    cands = _candidates(width, height, opts, columns, rows)
    scores = []
    bar = progress(total=len(cands), desc="gridding", unit="grid", disable=not show_progress, leave=False)
    for c, r in cands:
        bar.update(1)
        grid = Grid(c, r, width, height)
        packed = pack(grid, w, h, obstacles)
        if packed is None:
            continue
        x = np.concatenate([packed[0], netlist.x[fixed]])
        y = np.concatenate([packed[1], netlist.y[fixed]])
        ww = np.concatenate([w, netlist.width[fixed]])
        hh = np.concatenate([h, netlist.height[fixed]])
        empty = float(np.mean(coverage(grid, x, y, ww, hh) < EMPTY_THRESHOLD))
        if len(order):
            if c not in hor:
                hor[c] = waste_ratio(seg_w, width / c)
            if r not in ver:
                ver[r] = waste_ratio(seg_h, height / r)
            hw, vw = hor[c], ver[r]
        else:
            hw = vw = 1.0  # no macro: nothing to pack, every grid scores its emptiness only
        scores.append(GridScore(c, r, empty + (1.0 - hw) + (1.0 - vw), empty, hw, vw))
    bar.close()
    return scores, len(cands)


def select_grid(scores: list[GridScore], tolerance: float) -> tuple[GridScore, GridScore]:
    """(chosen, best): best = the highest score; chosen = among the scores within `tolerance` of it,
    the highest score per cell (Circuit Training's `select_from_grid_choices`)."""
    ranked = sorted(scores, key=lambda s: -s.metric)  # stable: ties keep the sweep order
    best = ranked[0]
    qualified = [s for s in ranked if s.metric >= best.metric * (1.0 - tolerance)]
    chosen = max(qualified, key=lambda s: s.metric / s.cells)  # first of equals
    return chosen, best


def check_canvas(netlist: Netlist, width: float, height: float) -> None:
    """InfeasibleError naming the netlist when a hard macro is wider or taller than the canvas, or
    the hard macros' area exceeds the canvas: then they fit on no grid."""
    name = netlist.source or "netlist"
    hard = netlist.hard_macros
    w, h = netlist.width[hard], netlist.height[hard]
    big = np.flatnonzero((w > width + EPS) | (h > height + EPS))
    if len(big):
        i = int(big[0])
        raise InfeasibleError(f"{name}: hard macro {netlist.names[hard[i]]!r} ({w[i]:g} x {h[i]:g}) is "
                              f"larger than the {width:g} x {height:g} canvas; it fits on no grid")
    area = float(np.sum(w * h))
    if area > width * height * (1 + 1e-9):
        raise InfeasibleError(f"{name}: the {len(hard)} hard macros cover {area:.6g} um^2, more than "
                              f"the {width:g} x {height:g} canvas ({width * height:.6g} um^2); "
                              "they fit on no grid")


def choose_grid(netlist: Netlist, width: float, height: float, blockages=(),
                opts: GriddingOptions = GriddingOptions(), columns: int | None = None,
                rows: int | None = None, show_progress: bool = False) -> GriddingResult:
    """The grid Circuit Training's gridding picks for this netlist on a `width x height` canvas.

    Widens the bounds (any number of columns/rows from 1, any cell aspect ratio) when no grid
    within them packs; raises InfeasibleError when the macros fit on no grid at all."""
    check_canvas(netlist, width, height)
    scores, tried = grid_scores(netlist, width, height, blockages, opts, columns, rows, show_progress)
    relaxed = False
    if not scores:
        wide = GriddingOptions(min_num=RELAXED.min_num, max_num=opts.max_num, min_cells=RELAXED.min_cells,
                               max_cells=opts.max_cells, max_aspect_ratio=RELAXED.max_aspect_ratio,
                               tolerance=opts.tolerance, add_size=opts.add_size)
        scores, more = grid_scores(netlist, width, height, blockages, wide, columns, rows, show_progress)
        tried += more
        relaxed = True
    if not scores:
        name = netlist.source or "netlist"
        n = len(movable_hard_macros(netlist))
        pinned = "" if columns is None and rows is None else \
            f" with {'columns = ' + str(columns) if columns is not None else 'rows = ' + str(rows)}"
        raise InfeasibleError(f"{name}: no grid of up to {opts.max_num - 1} x {opts.max_num - 1} cells"
                              f"{pinned} packs all {n} hard macros on the {width:g} x {height:g} canvas "
                              "(largest first, centred on cell centres)")
    chosen, best = select_grid(scores, opts.tolerance)
    return GriddingResult(chosen=chosen, best=best, tried=tried, packed=len(scores), relaxed=relaxed,
                          tolerance=opts.tolerance)
