"""Proxy cost: the reference tool's figures on Ariane133, and small cases computed by hand."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.errors import InfeasibleError
from moeplace.place.chip.congestion import smooth
from moeplace.place.chip.cost import Grid, ProxyCost
from moeplace.place.chip.netlist import load_netlist
from moeplace.place.chip.plc import PlcHeader, load_placement, read_plc, write_plc

ARIANE = CHIP_DIR / "ariane133"


# ---- a tiny netlist writer (protobuf text) for hand-computed cases --------------------------------

def _attr(key: str, value: object) -> str:
    v = f'placeholder: "{value}"' if isinstance(value, str) else f"f: {value}"
    return f'  attr {{\n    key: "{key}"\n    value {{\n      {v}\n    }}\n  }}\n'


def _node(name: str, typ: str, inputs: tuple[str, ...] = (), **attrs: object) -> str:
    body = f'  name: "{name}"\n' + "".join(f'  input: "{s}"\n' for s in inputs)
    body += _attr("type", typ) + "".join(_attr(k, v) for k, v in attrs.items())
    return "node {\n" + body + "}\n"


def _ports_net(tmp_path: Path, cells: list[tuple[int, int]], weight: float = 1.0) -> Path:
    """One net of ports, one port at the centre of each (col, row) of 100x100 cells; the first drives."""
    names = [f"p{k}" for k in range(len(cells))]
    text = ""
    for k, (c, r) in enumerate(cells):
        attrs: dict[str, object] = {"x": 100 * c + 50, "y": 100 * r + 50}
        if k == 0 and weight != 1.0:
            attrs["weight"] = weight
        text += _node(names[k], "PORT", tuple(names[1:]) if k == 0 else (), **attrs)
    path = tmp_path / "net.pb.txt"
    path.write_text(text)
    return path


def _header(columns: int = 4, rows: int = 4, smoothing: float = 0, alloc: float = 0.0) -> PlcHeader:
    """A grid of 100 x 100 cells, one route per micron each way."""
    return PlcHeader(columns=columns, rows=rows, width=100.0 * columns, height=100.0 * rows,
                     hroutes_per_micron=1.0, vroutes_per_micron=1.0, hrouting_alloc=alloc,
                     vrouting_alloc=alloc, smoothing=smoothing)


def _routed(tmp_path: Path, cells: list[tuple[int, int]], weight: float = 1.0):
    """(H, V) demand maps in route units for one net (scale: 1 route / (100 um x 1 route/um))."""
    pc = ProxyCost(load_netlist(_ports_net(tmp_path, cells, weight)), _header())
    h, v = pc.congestion_maps()
    return h * 100.0, v * 100.0


def _runs(h_runs=(), v_runs=(), w: float = 1.0, shape=(4, 4)):
    """Expected maps from runs: H (row, c0, c1) loads cells c0..c1 inclusive; V (col, r0, r1) likewise."""
    h, v = np.zeros(shape), np.zeros(shape)
    for row, c0, c1 in h_runs:
        h[row, c0:c1 + 1] += w
    for col, r0, r1 in v_runs:
        v[r0:r1 + 1, col] += w
    return h, v


# ---- reference figures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ariane():
    netlist = load_netlist(ARIANE / "netlist.pb.txt.gz")
    header = load_placement(netlist, ARIANE / "legalized.plc")
    return netlist, header, ProxyCost(netlist, header)


def test_ariane_matches_reference_tool_figures(ariane):
    """The reference placement-cost tool wrote its own figures into legalized.plc's header."""
    _, header, pc = ariane
    ref = header.figures
    assert ref["Wirelength cost"] == 0.0736 and ref["Density cost"] == 0.4988
    assert ref["Congestion cost"] == 0.7259
    terms = pc.evaluate()
    assert pc.hpwl() == pytest.approx(ref["Wirelength"], rel=1e-6)  # 4,763,106.815
    assert terms.wirelength == pytest.approx(ref["Wirelength cost"], abs=1e-3)
    assert terms.density == pytest.approx(ref["Density cost"], abs=1e-3)
    assert terms.congestion == pytest.approx(ref["Congestion cost"], abs=1e-3)
    assert terms.proxy == pytest.approx(0.0736 + 0.5 * 0.4988 + 0.5 * 0.7259, abs=1e-3)
    # tighter: the 4-digit header values are rounded from these
    assert abs(terms.wirelength - 0.0736) < 5e-5 and abs(terms.density - 0.4988) < 5e-5
    assert abs(terms.congestion - 0.7259) < 5e-5


def test_ariane_header_settings_matter(ariane):
    """The figures pin down the settings: smoothing 1 or 2 instead of the header's 0 misses the
    congestion figure by more than the 1e-3 the reference check allows (0.7221, 0.7211)."""
    netlist, header, pc = ariane
    for k in (1, 2):
        smoothed = ProxyCost(netlist, replace(header, smoothing=k))
        assert abs(smoothed.congestion() - header.figures["Congestion cost"]) > 1e-3
        assert smoothed.density() == pytest.approx(pc.density())  # density ignores smoothing


def test_ariane_maps_match_header_pictures(ariane):
    """The header draws the density and H/V congestion maps as digits floor(10 x value) ('#' above 1);
    ours agree cell by cell."""
    _, _, pc = ariane
    h, v = pc.congestion_maps()
    lines = (ARIANE / "legalized.plc").read_text().splitlines()
    pictures = (("Overall Placement Density:", pc.density_map()), ("Horizontal Routing Congestion:", h),
                ("Vertical Routing Congestion:", v))
    for title, ours in pictures:
        start = next(i for i, ln in enumerate(lines) if ln.endswith(title)) + 4
        for line in lines[start:start + pc.grid.rows]:
            row = int(line[1:].split("|")[0])
            digits = line[1:].split("|")[1:-1]
            assert len(digits) == pc.grid.columns
            for col, d in enumerate(digits):
                value = ours[row, col]
                if d == "#":
                    assert value > 1.0, (title, row, col)
                    continue
                want = 0 if d.strip() == "" else int(d)
                assert int(value * 10) == want, (title, row, col)


def test_write_plc_redraws_the_reference_tools_pictures(ariane, tmp_path):
    """write_plc(cost=...) draws the four header pictures exactly as the reference tool did."""
    netlist, header, pc = ariane
    write_plc(tmp_path / "out.plc", netlist, header, cost=pc)
    ours = (tmp_path / "out.plc").read_text().splitlines()
    ref = (ARIANE / "legalized.plc").read_text().splitlines()
    for title in ("Hard Macro Placements:", "Overall Placement Density:", "Horizontal Routing Congestion:",
                  "Vertical Routing Congestion:"):
        a = next(i for i, ln in enumerate(ref) if ln.endswith(title))
        b = next(i for i, ln in enumerate(ours) if ln.endswith(title))
        assert [ln.rstrip() for ln in ours[b:b + 26]] == [ln.rstrip() for ln in ref[a:a + 26]], title
    figures = read_plc(tmp_path / "out.plc")[0].figures
    assert figures["Wirelength cost"] == 0.0736 and figures["Density cost"] == 0.4988
    assert figures["Congestion cost"] == 0.7259 and figures["Proxy cost"] == 0.6859


def test_sample_clustered_densest_cell_matches_header():
    """sample_clustered's header gives 0.2305, the densest cell's fill (its 2x2 grid keeps 1 cell)."""
    d = CHIP_DIR / "circuit_training" / "sample_clustered"
    netlist = load_netlist(d / "netlist.pb.txt")
    header = load_placement(netlist, d / "initial.plc")
    pc = ProxyCost(netlist, header)
    # by hand: M0 120x120 fills 14400 of the 62500 um^2 cell (0, 1); Grp_2 adds 17.128 x 0.20626
    hand = (120 * 120 + 17.128008 * 0.20625865) / 62500
    assert pc.density_map().max() == pytest.approx(hand, rel=1e-9)
    assert pc.density_map().max() == pytest.approx(header.figures["Density cost"], abs=1e-4)
    assert pc.density() == pytest.approx(0.5 * hand, rel=1e-9)


# ---- hand-computed congestion -------------------------------------------------------------------

def test_two_cell_net_routes_along_source_row_then_sink_column(tmp_path):
    h, v = _routed(tmp_path, [(0, 0), (3, 2)])
    eh, ev = _runs(h_runs=[(0, 0, 2)], v_runs=[(3, 0, 1)])
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


def test_two_cell_net_downwards_and_weighted(tmp_path):
    h, v = _routed(tmp_path, [(3, 3), (1, 0)], weight=2.0)
    eh, ev = _runs(h_runs=[(3, 1, 2)], v_runs=[(1, 0, 2)], w=2.0)
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


def test_pins_in_one_cell_make_no_route(tmp_path):
    h, v = _routed(tmp_path, [(2, 2), (2, 2), (2, 2)])
    assert not h.any() and not v.any()


def test_three_pins_two_cells_is_a_two_cell_net(tmp_path):
    h, v = _routed(tmp_path, [(0, 0), (3, 2), (3, 2)])
    eh, ev = _runs(h_runs=[(0, 0, 2)], v_runs=[(3, 0, 1)])
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_three_cell_staircase_is_an_l_chain(tmp_path, order):
    cells = [(0, 0), (2, 1), (3, 3)]
    h, v = _routed(tmp_path, [cells[k] for k in order])
    # H row 0 cols 0..1, H row 1 col 2, V col 2 row 0, V col 3 rows 1..2
    eh, ev = _runs(h_runs=[(0, 0, 1), (1, 2, 2)], v_runs=[(2, 0, 0), (3, 1, 2)])
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 2, 0)])
def test_three_cells_two_sinks_in_one_column_above(tmp_path, order):
    cells = [(0, 0), (2, 1), (2, 3)]
    h, v = _routed(tmp_path, [cells[k] for k in order])
    eh, ev = _runs(h_runs=[(0, 0, 1)], v_runs=[(2, 0, 2)])  # H row 0 cols 0..1, V col 2 rows 0..2
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


def test_three_cells_right_pair_on_one_row(tmp_path):
    h, v = _routed(tmp_path, [(3, 1), (0, 3), (1, 1)])
    # by column: (0,3), (1,1), (3,1): H row 3 col 0, H row 1 cols 1..2, V col 1 rows 1..2
    eh, ev = _runs(h_runs=[(3, 0, 0), (1, 1, 2)], v_runs=[(1, 1, 2)])
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


def test_three_cells_t_shape_on_middle_row(tmp_path):
    h, v = _routed(tmp_path, [(0, 1), (2, 3), (3, 0)])
    # rows sorted: (3,0), (0,1), (2,3): trunk row 1 cols 0..2, V col 3 row 0, V col 2 rows 1..2
    eh, ev = _runs(h_runs=[(1, 0, 2)], v_runs=[(3, 0, 0), (2, 1, 2)])
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


def test_four_cells_route_as_a_star_from_the_source(tmp_path):
    h, v = _routed(tmp_path, [(1, 1), (3, 1), (1, 3), (0, 0)])
    # (1,1)->(3,1): H row 1 cols 1..2; (1,1)->(1,3): V col 1 rows 1..2;
    # (1,1)->(0,0): H row 1 col 0, V col 0 row 0
    eh, ev = _runs(h_runs=[(1, 1, 2), (1, 0, 0)], v_runs=[(1, 1, 2), (0, 0, 0)])
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


def test_smoothing_spreads_over_in_grid_neighbours():
    h = np.array([[0.0, 3.0, 0.0, 0.0], [6.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(smooth(h, 1, axis=1), [[1, 1, 1, 0], [3, 3, 0, 0]])
    v = h.T.copy()
    np.testing.assert_allclose(smooth(v, 1, axis=0), np.array([[1, 1, 1, 0], [3, 3, 0, 0]]).T)
    # k = 2: cell 1's window -1..3 has 4 cells in the grid; cell 0's window -2..2 has 3
    np.testing.assert_allclose(smooth(h, 2, axis=1), [[0.75, 0.75, 0.75, 0.75], [2, 2, 2, 0]])


def test_congestion_is_mean_of_top_five_percent_of_both_maps(tmp_path):
    # 4x4 grid: 32 values, floor(1.6) = 1 -> the single largest value
    pc = ProxyCost(load_netlist(_ports_net(tmp_path, [(0, 0), (3, 2)], weight=3.0)), _header())
    assert pc.congestion() == pytest.approx(3.0 / 100.0)
    # 5x4 grid: 40 values -> top 2; two nets' H runs overlap on cell (row 0, col 0..2)
    pc = ProxyCost(load_netlist(_ports_net(tmp_path, [(0, 0), (3, 0)])), _header(columns=5))
    assert pc.congestion() == pytest.approx(1.0 / 100.0)


# ---- macros: density, routing allocation, orientation --------------------------------------------

def _macro_netlist(tmp_path: Path) -> Path:
    """Hard macro H (150x150 at (100,100), pin offset (30, 10)), soft macro S (100x100 at (350,350)),
    small hard macro G (50x50 at (250, 250)), a port P driving H's pin with weight 2."""
    text = (_node("H", "MACRO", width=150, height=150, x=100, y=100, orientation="N")
            + _node("H/p", "MACRO_PIN", macro_name="H", x_offset=30, y_offset=10)
            + _node("S", "macro", width=100, height=100, x=350, y=350)
            + _node("G", "MACRO", width=50, height=50, x=250, y=250, orientation="N")
            + _node("P", "PORT", ("H/p",), x=0, y=0, weight=2))
    path = tmp_path / "macros.pb.txt"
    path.write_text(text)
    return path


def test_density_counts_hard_and_soft_macros(tmp_path):
    pc = ProxyCost(load_netlist(_macro_netlist(tmp_path)), _header(columns=5))
    d = pc.density_map()
    expect = np.zeros((4, 5))
    expect[0:2, 0:2] = 75 * 75 / 1e4  # H covers x, y in 25..175
    expect[3, 3] = 1.0  # S fills its cell
    expect[2, 2] = 50 * 50 / 1e4  # G
    np.testing.assert_allclose(d, expect, atol=1e-12)
    assert pc.density() == pytest.approx(0.5 * (1.0 + 0.5625) / 2)  # 20 cells: top 2


def test_macro_routing_allocation_by_overlap(tmp_path):
    pc = ProxyCost(load_netlist(_macro_netlist(tmp_path)), _header(columns=5, alloc=0.5))
    h, v = pc.macro_demand()
    eh, ev = np.zeros((4, 5)), np.zeros((4, 5))
    # H spans two rows and two columns, each covered in part: no V on its top row, no H on its right column
    ev[0, 0] = ev[0, 1] = 75 * 0.5 / 100
    eh[0, 0] = eh[1, 0] = 75 * 0.5 / 100
    ev[2, 2] = eh[2, 2] = 50 * 0.5 / 100  # G sits in one cell: both kept
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


@pytest.mark.parametrize("orient, pin", [("N", (130, 110)), ("S", (70, 90)), ("FN", (70, 110)),
                                         ("FS", (130, 90)), ("E", (110, 70)), ("W", (90, 130)),
                                         ("FE", (90, 70)), ("FW", (110, 130))])
def test_pin_offset_follows_orientation(tmp_path, orient, pin):
    netlist = load_netlist(_macro_netlist(tmp_path))
    netlist.orient[netlist.index("H")] = ["N", "S", "E", "W", "FN", "FS", "FE", "FW"].index(orient)
    pc = ProxyCost(netlist, _header(columns=5))
    px, py = pc.pins()
    i = netlist.index("H/p")
    assert (px[i], py[i]) == pytest.approx(pin)
    # one net P(0,0) -> pin, weight 2: cost = 2 * HPWL / ((500 + 400) * 2)
    assert pc.wirelength() == pytest.approx((pin[0] + pin[1]) / 900)


def test_macro_larger_than_canvas_is_infeasible(tmp_path):
    netlist = load_netlist(_macro_netlist(tmp_path))
    with pytest.raises(InfeasibleError, match="larger than the canvas"):
        ProxyCost(netlist, _header(columns=1, rows=1))  # 100 x 100 canvas, H is 150 x 150


def test_grid_cells():
    g = Grid(columns=4, rows=3, width=400.0, height=300.0)
    col, row = g.cell_of(np.array([0.0, 99.9, 100.0, 400.0, -5.0]), np.array([0.0, 150.0, 299.0, 300.0, 1.0]))
    assert col.tolist() == [0, 0, 1, 3, 0] and row.tolist() == [0, 1, 2, 2, 0]
    assert g.cell_of(5.0, 299.0) == (0, 2) and g.cell_of(-3.0, 1e9) == (0, 2)  # scalars too
    assert g.cell_center(1, 2) == (150.0, 250.0)
    assert g.cell_index(1, 2) == 9 and g.index_center(9) == (150.0, 250.0)


# ---- incremental evaluation ----------------------------------------------------------------------

def test_incremental_moves_agree_with_full_evaluation(ariane):
    netlist, _, pc = ariane
    state = pc.state()
    rng = np.random.default_rng(0)
    hard, soft = netlist.hard_macros, netlist.soft_macros
    for step in range(12):
        nodes = np.array([rng.choice(hard), rng.choice(soft)])
        x, y = rng.uniform(100, 1300, 2), rng.uniform(100, 1300, 2)
        orient = rng.integers(0, 8, 2) if step % 2 else None
        before = state.terms()
        proposed = state.move(nodes, x, y, orient)
        if step % 3 == 0:
            assert state.reject() == before and state.terms() == before
            continue
        state.accept()
        full = pc.evaluate(state.x, state.y, state.orient)
        assert state.terms() == proposed
        for a, b in zip(proposed.as_dict().values(), full.as_dict().values()):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    # the netlist itself was not touched
    assert pc.evaluate().proxy == pytest.approx(0.0736 + 0.5 * 0.4988 + 0.5 * 0.7259, abs=1e-3)


# ---- cross-check against a plain-loop transcription of the definitions ---------------------------

def _naive():
    """benchmarks/chip_cost.py's naive_proxy_cost: one Python loop per net, macro and cell."""
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "chip_cost.py"
    spec = importlib.util.spec_from_file_location("chip_cost_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.naive_proxy_cost


def _random_placement(netlist, header, rng):
    x, y, orient = netlist.x.copy(), netlist.y.copy(), netlist.orient.copy()
    m = netlist.macros
    x[m] = rng.uniform(0, header.width, len(m))
    y[m] = rng.uniform(0, header.height, len(m))
    hard = netlist.hard_macros
    orient[hard] = rng.integers(0, 8, len(hard))
    return x, y, orient


@pytest.mark.parametrize("name", ["sample_clustered", "toy_macro_stdcell", "simple_grouped_with_coords",
                                  "simple_with_coords", "macro_tiles_10x10"])
def test_vectorised_equals_plain_loops_on_random_placements(name):
    naive = _naive()
    d = CHIP_DIR / "circuit_training" / name
    netlist = load_netlist(d / "netlist.pb.txt")
    header = load_placement(netlist, d / "initial.plc")  # smoothing 2 in these headers
    rng = np.random.default_rng(1)
    for columns, rows in ((header.columns, header.rows), (7, 5)):
        header.columns, header.rows = columns, rows
        pc = ProxyCost(netlist, header)
        for _ in range(3):
            x, y, orient = _random_placement(netlist, header, rng)
            ours = pc.evaluate(x, y, orient)
            ref = naive(netlist, header, x.tolist(), y.tolist(), orient.tolist())
            np.testing.assert_allclose([ours.wirelength, ours.density, ours.congestion, ours.proxy], ref,
                                       rtol=1e-9, atol=1e-12)


def test_vectorised_equals_plain_loops_on_random_ariane(ariane):
    netlist, header, pc = ariane
    x, y, orient = _random_placement(netlist, header, np.random.default_rng(2))
    ours = pc.evaluate(x, y, orient)
    ref = _naive()(netlist, header, x.tolist(), y.tolist(), orient.tolist())
    np.testing.assert_allclose([ours.wirelength, ours.density, ours.congestion, ours.proxy], ref,
                               rtol=1e-9, atol=1e-12)


def test_padded_nets_hpwl_equals_per_net_boxes():
    from moeplace.place.chip.wirelength import PaddedNets, hpwl_per_net

    rng = np.random.default_rng(3)
    sizes = [2, 3, 7, 2, 70, 5, 9, 130]  # 70 and 130 go past the listed bucket sizes
    ptr = np.concatenate([[0], np.cumsum(sizes)])
    pins = rng.integers(0, 50, ptr[-1])
    px, py = rng.uniform(0, 100, 50), rng.uniform(0, 100, 50)
    boxes = [np.ptp(px[pins[a:b]]) + np.ptp(py[pins[a:b]]) for a, b in zip(ptr[:-1], ptr[1:])]
    np.testing.assert_allclose(PaddedNets(ptr, pins).hpwl(px, py), boxes, rtol=1e-12)
    np.testing.assert_allclose(hpwl_per_net(px, py, ptr, pins), boxes, rtol=1e-12)


def test_incremental_with_smoothing_and_ports_agrees_with_full():
    d = CHIP_DIR / "circuit_training" / "toy_macro_stdcell"  # smoothing 2, 20 x 10 grid
    netlist = load_netlist(d / "netlist.pb.txt")
    header = load_placement(netlist, d / "initial.plc")
    assert header.smoothing == 2
    pc = ProxyCost(netlist, header)
    state = pc.state()
    rng = np.random.default_rng(4)
    movable = np.concatenate([netlist.macros, netlist.ports])
    for _ in range(10):
        nodes = rng.choice(movable, size=3, replace=False)
        state.move(nodes, rng.uniform(0, header.width, 3), rng.uniform(0, header.height, 3),
                   rng.integers(0, 8, 3))
        state.accept()
        full = pc.evaluate(state.x, state.y, state.orient)
        np.testing.assert_allclose(list(state.terms().as_dict().values()), list(full.as_dict().values()),
                                   rtol=1e-9, atol=1e-12)
