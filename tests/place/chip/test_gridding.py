"""Grid selection (Circuit Training's gridding) on hand-made netlists whose right grid is worked out by
hand, the waste ratio against hand arithmetic, and the packer against the placer's own legality."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from moeplace.errors import InfeasibleError
from moeplace.place.chip.canvas import default_canvas, default_header
from moeplace.place.chip.cost import Grid
from moeplace.place.chip.gridding import (
    GriddingOptions,
    GridScore,
    check_canvas,
    choose_grid,
    grid_scores,
    movable_hard_macros,
    pack,
    select_grid,
    static_obstacles,
    waste_ratio,
)
from moeplace.place.chip.netlist import load_netlist
from moeplace.place.chip.plc import PlcHeader
from moeplace.place.chip.problem import ChipProblem


# small sweeps a hand can follow: columns and rows in {lo .. hi}, no cell-count or aspect bounds
def _small(lo: int, hi: int, tolerance: float = 0.05) -> GriddingOptions:
    return GriddingOptions(min_num=lo, max_num=hi + 1, min_cells=1, max_cells=10_000,
                           max_aspect_ratio=math.inf, tolerance=tolerance)


def _attr(key: str, value: object) -> str:
    v = f'placeholder: "{value}"' if isinstance(value, str) else f"f: {value}"
    return f'  attr {{\n    key: "{key}"\n    value {{\n      {v}\n    }}\n  }}\n'


def _node(name: str, typ: str, **attrs: object) -> str:
    return "node {\n" + f'  name: "{name}"\n' + _attr("type", typ) + "".join(
        _attr(k, v) for k, v in attrs.items()) + "}\n"


def _netlist(tmp_path: Path, macros: list[tuple[float, float]], canvas: tuple[float, float] | None = None,
             soft: list[tuple[float, float]] = (), bloat: float | None = None, name: str = "n.pb.txt"):
    """Hard macros of the given sizes (and soft macros), optional canvas and bloating metadata."""
    meta = {}
    if canvas:
        meta.update(canvas_width=canvas[0], canvas_height=canvas[1])
    if bloat:
        meta["soft_macro_area_bloating_ratio"] = bloat
    text = ('node {\n  name: "__metadata__"\n' + "".join(_attr(k, v) for k, v in meta.items()) + "}\n"
            if meta else "")
    for k, (w, h) in enumerate(macros):
        text += _node(f"m{k}", "MACRO", width=w, height=h, x=0, y=0, orientation="N")
    for k, (w, h) in enumerate(soft):
        text += _node(f"s{k}", "macro", width=w, height=h, x=0, y=0)
    path = tmp_path / name
    path.write_text(text)
    return load_netlist(path)


# ---- waste ratio: Circuit Training's get_waste_ratio, by hand -------------------------------------

@pytest.mark.parametrize("segments, cell, expect", [
    ([10], 10, 0.0),                 # one cell, filled
    ([10, 10], 10, 0.0),             # two cells, filled
    ([4, 4], 10, (20 - 8) / 20),     # 7 of each cell's 10 taken from the centre: no sharing
    ([15], 10, 15 / 30),             # centred on a cell it spans 3 cells
    ([15, 15], 10, (50 - 30) / 50),  # 2.5 + 2.5 <= 10: the two share a cell, 5 cells in all
    ([10], 4, 2 / 12),               # 3 cells of 4
    ([30], 10, 0.0),                 # exactly 3 cells
])
def test_waste_ratio_by_hand(segments, cell, expect) -> None:
    assert waste_ratio(np.array(segments, float), cell) == pytest.approx(expect, abs=1e-12)


# ---- packing -------------------------------------------------------------------------------------

def test_pack_first_legal_cell_in_row_major_order() -> None:
    # 100 x 100 canvas, 10 x 10 cells; 20 x 20 macros need a centre >= 10 from each edge
    grid = Grid(10, 10, 100.0, 100.0)
    x, y = pack(grid, np.array([20.0, 20.0, 20.0]), np.array([20.0, 20.0, 20.0]))
    # first at cell (1, 1); the next must be 20 away in x (touching is legal): (35, 15), then (55, 15)
    np.testing.assert_allclose(x, [15, 35, 55])
    np.testing.assert_allclose(y, [15, 15, 15])
    assert pack(Grid(10, 10, 100.0, 100.0), np.array([60.0, 60.0]), np.array([60.0, 60.0])) is None


def test_pack_matches_the_placers_packing_with_fixed_macros_and_blockages(tmp_path) -> None:
    """The fast packer agrees with ChipProblem.pack (whose legality mask the placer tests by brute force)."""
    sizes = [(30, 20), (12, 40), (30, 20), (10, 10), (10, 10), (25, 5), (8, 8), (8, 8), (8, 8), (40, 12)]
    nl = _netlist(tmp_path, sizes + [(20, 20)])
    fixed = nl.hard_macros[-1]
    nl.fixed[fixed], nl.x[fixed], nl.y[fixed] = True, 70.0, 30.0
    blockages = [(0.0, 80.0, 30.0, 100.0, 1.0), (50, 50, 60, 60, 0.0)]  # the second has rate 0: ignored
    order = movable_hard_macros(nl)
    w, h = nl.width[order], nl.height[order]
    agreed = failed = 0
    for cols, rows in [(10, 10), (7, 9), (13, 11), (4, 4), (16, 5), (3, 3)]:
        header = PlcHeader(columns=cols, rows=rows, width=100.0, height=100.0, blockages=blockages)
        problem = ChipProblem(nl, header, soft="fixed")
        packed = pack(problem.grid, w, h, static_obstacles(nl, blockages))
        try:
            placement = problem.pack()
        except InfeasibleError:
            assert packed is None
            failed += 1
            continue
        assert packed is not None
        px, py, _ = problem.positions(placement)
        np.testing.assert_allclose(packed[0], px[problem.macros])
        np.testing.assert_allclose(packed[1], py[problem.macros])
        agreed += 1
    assert agreed >= 3 and failed >= 1


# ---- the chosen grid, by hand ---------------------------------------------------------------------

def test_two_half_canvas_macros_need_two_columns_and_an_odd_row_count(tmp_path) -> None:
    """Two 50 x 100 macros on 100 x 100: centred at x = 25 and 75 (2 columns; 1, 3 or 4 columns leave
    one legal centre only), y = 50 (an odd row count). Both 2 x 1 and 2 x 3 fill every cell with no
    waste (score 2); the fewer cells win."""
    nl = _netlist(tmp_path, [(50, 100), (50, 100)])
    scores, tried = grid_scores(nl, 100.0, 100.0, opts=_small(1, 4))
    assert tried == 16
    assert sorted((s.columns, s.rows) for s in scores) == [(2, 1), (2, 3)]
    assert all(s.metric == pytest.approx(2.0) for s in scores)
    result = choose_grid(nl, 100.0, 100.0, opts=_small(1, 4))
    assert (result.columns, result.rows) == (2, 1)


def test_scores_of_one_square_macro_by_hand(tmp_path) -> None:
    """A 50 x 50 macro on 100 x 100, 2..4 columns and rows. Covered columns: 1 of 2 (centre 25),
    3 of 3 (centre 50), 3 of 4 (centre 37.5); likewise rows. Waste of one 50 segment: cell 50 -> 0,
    cell 33.3 -> 3 cells -> 0.5, cell 25 -> 3 cells -> 1/3."""
    nl = _netlist(tmp_path, [(50, 50)])
    covered = {2: 1, 3: 3, 4: 3}
    waste = {2: 0.0, 3: 0.5, 4: 1 / 3}
    scores, _ = grid_scores(nl, 100.0, 100.0, opts=_small(2, 4))
    assert len(scores) == 9
    for s in scores:
        empty = 1 - covered[s.columns] * covered[s.rows] / (s.columns * s.rows)
        assert s.empty_ratio == pytest.approx(empty)
        assert (s.hor_waste, s.ver_waste) == pytest.approx((waste[s.columns], waste[s.rows]))
        assert s.metric == pytest.approx(empty + 2 - waste[s.columns] - waste[s.rows])
    result = choose_grid(nl, 100.0, 100.0, opts=_small(2, 4))
    assert (result.columns, result.rows) == (2, 2) and result.best.metric == pytest.approx(2.75)
    # --columns 3 pins the columns: rows 2 (score 0.5 + 0.5 + 1 = 2.0) beat 3 (1.0) and 4 (1.4167)
    pinned = choose_grid(nl, 100.0, 100.0, opts=_small(2, 4), columns=3)
    assert (pinned.columns, pinned.rows) == (3, 2)


def test_selection_prefers_fewer_cells_within_the_tolerance() -> None:
    a, b, c = (GridScore(10, 10, 2.0, 0, 0, 0), GridScore(20, 20, 2.1, 0, 0, 0),
               GridScore(12, 12, 2.0, 0, 0, 0))
    # 5 %: every score >= 2.1 * 0.95 = 1.995 qualifies; score per cell: 0.02, 0.00525, 0.0139
    assert select_grid([a, b, c], 0.05) == (a, b)
    assert select_grid([a, b, c], 0.01) == (b, b)  # only b is within 1 % of itself


def test_circuit_training_bounds_and_widening(tmp_path) -> None:
    """Within Circuit Training's bounds (10..127 per side, 500..4096 cells, cells within 1.5:1)
    the chosen grid has 500 cells or more; a macro exactly the canvas size needs an odd count both
    ways and still finds one."""
    nl = _netlist(tmp_path, [(20, 20)] * 4)
    result = choose_grid(nl, 100.0, 100.0)
    assert 500 <= result.chosen.cells <= 4096 and 10 <= result.columns <= 127 and 10 <= result.rows <= 127
    assert not result.relaxed
    whole = _netlist(tmp_path, [(100, 80)], name="w.pb.txt")
    r = choose_grid(whole, 100.0, 80.0)
    assert r.columns % 2 == 1 and r.rows % 2 == 1
    # columns pinned at 3 leave no grid of >= 500 cells within 1.5:1: the bounds widen
    pinned = choose_grid(nl, 100.0, 100.0, columns=3)
    assert pinned.relaxed and pinned.columns == 3


def test_macros_that_fit_no_grid_raise(tmp_path) -> None:
    two = _netlist(tmp_path, [(60, 60), (60, 60)], name="two.pb.txt")  # area fits, but they always overlap
    with pytest.raises(InfeasibleError, match="no grid"):
        choose_grid(two, 100.0, 100.0)
    three = _netlist(tmp_path, [(60, 60)] * 3, name="three.pb.txt")
    with pytest.raises(InfeasibleError, match=r"three\.pb\.txt: the 3 hard macros cover 10800"):
        check_canvas(three, 100.0, 100.0)
    with pytest.raises(InfeasibleError, match="larger than the 100 x 50 canvas"):
        check_canvas(two, 100.0, 50.0)


# ---- the canvas of a netlist alone ---------------------------------------------------------------

def test_default_canvas_uses_the_unbloated_cell_area(tmp_path) -> None:
    nl = _netlist(tmp_path, [(60, 60)], soft=[(40, 40)], bloat=2.0)
    w, h = default_canvas(nl)
    assert w == h == pytest.approx(math.sqrt((3600 + 1600 / 2) / 0.6))
    stated = _netlist(tmp_path, [(60, 60)], canvas=(300.0, 200.0), name="c.pb.txt")
    assert default_canvas(stated) == (300.0, 200.0)
    header = default_header(stated)  # the grid from gridding, on the netlist's canvas
    assert (header.width, header.height) == (300.0, 200.0) and header.columns * header.rows >= 500
    assert default_header(stated, columns=7, rows=5).columns == 7


def test_ariane133_sized_macros_get_the_grid_of_the_published_flow(tmp_path) -> None:
    """Ariane133's 133 hard macros (57.57 x 133 um) on its 1433.406 um square canvas: Circuit Training's
    internal flow used 24 columns x 21 rows for this design (TILOS MacroPlacement, Docs/OurProgress,
    August 5 2022; the grid of the shipped legalized.plc)."""
    nl = _netlist(tmp_path, [(57.57, 133.0)] * 133)
    result = choose_grid(nl, 1433.406, 1433.406)
    assert (result.columns, result.rows) == (24, 21)
    assert result.best.metric > result.chosen.metric >= 0.95 * result.best.metric
