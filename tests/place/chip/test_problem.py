"""Chip problem: legality masks against a brute-force rectangle check, protocol, penalties, snapping."""

from __future__ import annotations

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.errors import InfeasibleError
from moeplace.place.chip.netlist import load_netlist
from moeplace.place.chip.plc import load_placement
from moeplace.place.chip.problem import ChipProblem
from moeplace.place.core import UNPLACED, PlacementProblem

CT = CHIP_DIR / "circuit_training"


def load(name: str, columns: int | None = None, rows: int | None = None, blockages=None, **kw) -> ChipProblem:
    """A ChipProblem for one of the shipped Circuit Training test netlists, grid optionally changed."""
    netlist = load_netlist(CT / name / "netlist.pb.txt")
    header = load_placement(netlist, CT / name / "initial.plc")
    if columns:
        header.columns, header.rows = columns, rows
    if blockages is not None:
        header.blockages = blockages
    return ChipProblem(netlist, header, **kw)


def brute_force_legal(problem: ChipProblem, placement: np.ndarray, node: int) -> np.ndarray:
    """Independent check, one cell at a time: inside the canvas, no positive-area overlap with any
    placed macro or blockage."""
    g, hd = problem.grid, problem.header
    w, h = problem.w[node], problem.h[node]
    rects = []
    for j in range(problem.num_nodes):
        if j != node and placement[j] != UNPLACED:
            c = placement[j] % g.num_cells
            cx, cy = (c % g.columns + 0.5) * g.width / g.columns, (c // g.columns + 0.5) * g.height / g.rows
            hw, hh = problem.w[j] / 2, problem.h[j] / 2
            rects.append((cx - hw, cy - hh, cx + hw, cy + hh))
    rects += [b[:4] for b in hd.blockages if b[4] > 0]
    out = np.zeros(g.num_cells, dtype=bool)
    for cell in range(g.num_cells):
        cx = (cell % g.columns + 0.5) * g.width / g.columns
        cy = (cell // g.columns + 0.5) * g.height / g.rows
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        ok = x0 >= -1e-9 and y0 >= -1e-9 and x1 <= g.width + 1e-9 and y1 <= g.height + 1e-9
        for a0, b0, a1, b1 in rects:
            if min(x1, a1) - max(x0, a0) > 1e-9 and min(y1, b1) - max(y0, b0) > 1e-9:
                ok = False
        out[cell] = ok
    return out


def test_chip_problem_implements_protocol() -> None:
    problem = load("toy_macro_stdcell")
    assert isinstance(problem, PlacementProblem)
    assert problem.num_slots == 200 and problem.grid_shape == (10, 20)
    assert problem.node_features().shape[0] == problem.num_nodes == 2
    assert problem.slot_features().shape[0] == problem.num_slots
    edges = problem.node_edges()
    assert edges.shape[0] == 2 and (edges < problem.num_nodes).all()


@pytest.mark.parametrize("grid", [(20, 10), (7, 3), (13, 9)])
def test_masks_match_brute_force_and_never_allow_overlap(grid: tuple[int, int]) -> None:
    blockages = [(60.0, 20.0, 95.0, 50.0, 1.0), (0.0, 0.0, 200.0, 5.0, 0.0)]  # rate 0: ignored
    problem = load("toy_macro_stdcell", *grid, blockages=blockages)
    rng = np.random.default_rng(0)
    for _ in range(15):
        placement = np.full(problem.num_nodes, UNPLACED, dtype=np.int64)
        for node in range(problem.num_nodes):
            mask = problem.legal_mask(placement, node)
            np.testing.assert_array_equal(mask, brute_force_legal(problem, placement, node))
            if not mask.any():
                break
            placement[node] = rng.choice(np.flatnonzero(mask))
        else:
            assert problem.is_legal(placement)


def test_masks_with_orientations_repeat_per_orientation() -> None:
    problem = load("toy_macro_stdcell", orientations=True)
    assert problem.num_slots == 4 * 200 and problem.grid_shape is None
    placement = np.array([3 * 200 + 55, UNPLACED])
    mask = problem.legal_mask(placement, 1)
    plain = load("toy_macro_stdcell").legal_mask(np.array([55, UNPLACED]), 1)
    np.testing.assert_array_equal(mask, np.tile(plain, 4))


def test_blockage_from_plc_file_is_respected() -> None:
    problem = load("simple_grouped_with_coords_with_blockage", 10, 10)
    assert problem.header.blockages
    mask = problem.legal_mask(np.full(problem.num_nodes, UNPLACED), 0)
    np.testing.assert_array_equal(mask, brute_force_legal(problem, np.full(problem.num_nodes, UNPLACED), 0))


def test_cost_penalises_incomplete_placements_and_matches_proxy() -> None:
    problem = load("toy_macro_stdcell")
    placement = problem.snap()
    full = problem.cost(placement)
    assert 0 < full < problem.penalty
    partial = placement.copy()
    partial[1] = UNPLACED
    assert problem.cost(partial) == pytest.approx(problem.penalty + 0.5)
    terms = problem.terms(placement)
    assert terms["proxy"] == pytest.approx(terms["wirelength"] + 0.5 * terms["density"]
                                           + 0.5 * terms["congestion"])


def test_macro_order_is_descending_area() -> None:
    problem = load("sample_clustered")
    area = problem.w * problem.h
    assert (np.diff(area) <= 0).all()


def test_snap_keeps_macros_on_nearest_legal_cells() -> None:
    problem = load("toy_macro_stdcell")
    placement = problem.snap()
    assert problem.is_legal(placement)
    x, y = problem.grid.index_center(placement)
    sx, sy = problem.start_x[problem.macros], problem.start_y[problem.macros]
    assert (np.abs(x - sx) <= problem.grid.cell_width).all()
    assert (np.abs(y - sy) <= problem.grid.cell_height).all()


def test_no_legal_cell_raises_infeasible() -> None:
    problem = load("sample_clustered", 1, 1)  # one cell: the second macro cannot fit
    with pytest.raises(InfeasibleError, match="no legal cell"):
        problem.snap()


def test_macro_larger_than_canvas_raises() -> None:
    netlist = load_netlist(CT / "toy_macro_stdcell" / "netlist.pb.txt")
    header = load_placement(netlist, CT / "toy_macro_stdcell" / "initial.plc")
    header.height = 30.0
    with pytest.raises(InfeasibleError, match="larger than the canvas"):
        ChipProblem(netlist, header)


def test_propose_move_keeps_placements_legal() -> None:
    problem = load("toy_macro_stdcell", orientations=True)
    rng = np.random.default_rng(1)
    placement = problem.snap()
    moved = 0
    for _ in range(300):
        cand = problem.propose_move(placement, rng)
        if cand is None:
            continue
        assert problem.is_legal(cand) and (cand != placement).sum() in (1, 2)
        placement, moved = cand, moved + 1
    assert moved > 100
