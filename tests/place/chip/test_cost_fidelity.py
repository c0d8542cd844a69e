"""Proxy cost vs the reference tool: macros and pins off the canvas, the macro-allocation edge rule,
the smoothing direction, Circuit Training's congestion grid and the cost weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.place.chip.cost import ProxyCost
from moeplace.place.chip.netlist import load_netlist
from moeplace.place.chip.plc import PlcHeader, load_placement, read_plc, write_plc
from moeplace.place.chip.settings import WEIGHT_PRESETS, ct_congestion_grid

ARIANE = CHIP_DIR / "ariane133"


def _node(name: str, typ: str, inputs: tuple[str, ...] = (), **attrs: object) -> str:
    """One protobuf-text node."""
    body = f'  name: "{name}"\n' + "".join(f'  input: "{s}"\n' for s in inputs)
    for key, value in {"type": typ, **attrs}.items():
        v = f'placeholder: "{value}"' if isinstance(value, str) else f"f: {value}"
        body += f'  attr {{\n    key: "{key}"\n    value {{\n      {v}\n    }}\n  }}\n'
    return "node {\n" + body + "}\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "n.pb.txt"
    path.write_text(text)
    return path


def _header(columns: int = 4, rows: int = 4, alloc: float = 0.0, smoothing: float = 0, **kw) -> PlcHeader:
    """100 x 100 um cells, one route per micron each way."""
    return PlcHeader(columns=columns, rows=rows, width=100.0 * columns, height=100.0 * rows,
                     hroutes_per_micron=1.0, vroutes_per_micron=1.0, hrouting_alloc=alloc,
                     vrouting_alloc=alloc, smoothing=smoothing, **kw)


# ---- macros and pins off the canvas --------------------------------------------------------------

def _outside_netlist(tmp_path: Path) -> Path:
    """On a 400 x 400 canvas: hard macro A (100 x 100 at (400, 150), half off the right edge) with pin
    A/p at (440, 150), off the canvas; hard macro B (50 x 50 at (500, 500)) wholly off it, pin B/p at
    its centre; soft macro S filling cell (0, 3); ports P (50, 50), Q (250, 50), R (250, 350).
    Nets: P -> A/p, Q -> R, B/p -> Q."""
    text = (_node("A", "MACRO", width=100, height=100, x=400, y=150, orientation="N")
            + _node("A/p", "MACRO_PIN", macro_name="A", x_offset=40, y_offset=0)
            + _node("B", "MACRO", width=50, height=50, x=500, y=500, orientation="N")
            + _node("B/p", "MACRO_PIN", ("Q",), macro_name="B", x_offset=0, y_offset=0)
            + _node("S", "macro", width=100, height=100, x=50, y=350)
            + _node("P", "PORT", ("A/p",), x=50, y=50)
            + _node("Q", "PORT", ("R",), x=250, y=50)
            + _node("R", "PORT", x=250, y=350))
    return _write(tmp_path, text)


def test_off_canvas_macros_and_pins_hand_computed(tmp_path):
    """Wirelength counts every net at its true pin positions; density and the macros' routing
    allocation count only what lies on the canvas; nets with a pin off the canvas are not routed."""
    pc = ProxyCost(load_netlist(_outside_netlist(tmp_path)), _header(alloc=0.5))
    # HPWL: P->A/p 390 + 100, Q->R 300, B/p->Q 250 + 450; three nets of weight 1, canvas 400 + 400
    assert pc.hpwl() == pytest.approx(1490.0)
    assert pc.wirelength() == pytest.approx(1490.0 / (800.0 * 3))
    # density: A's on-canvas half fills half of cell (row 1, col 3); S fills (3, 0); B adds nothing
    expect = np.zeros((4, 4))
    expect[1, 3], expect[3, 0] = 0.5, 1.0
    np.testing.assert_allclose(pc.density_map(), expect, atol=1e-12)
    assert pc.density() == pytest.approx(0.5 * 1.0)  # 16 cells: the densest one, times 0.5
    # routing: only Q -> R, a vertical run on column 2 over rows 0..2 (1 route / (100 um x 1 route/um))
    h_net, v_net = ProxyCost(pc.netlist, _header()).congestion_maps()
    ev = np.zeros((4, 4))
    ev[0:3, 2] = 0.01
    np.testing.assert_allclose(h_net, 0.0, atol=1e-15)
    np.testing.assert_allclose(v_net, ev, atol=1e-12)
    # A's allocation, on-canvas part only: V 50 um x 0.5 / 100, H 100 um x 0.5 / 100, in (1, 3)
    h_mac, v_mac = pc.macro_demand()
    eh, evm = np.zeros((4, 4)), np.zeros((4, 4))
    eh[1, 3], evm[1, 3] = 0.5, 0.25
    np.testing.assert_allclose(h_mac, eh, atol=1e-12)
    np.testing.assert_allclose(v_mac, evm, atol=1e-12)
    # 32 values, top floor(1.6) = 1: the macro's H allocation
    assert pc.congestion() == pytest.approx(0.5)
    # without allocation the top value is the one routed net's 0.01 (clamping the off-canvas pins to
    # the edge cells instead would stack two runs on (0, 2): 0.02)
    assert ProxyCost(pc.netlist, _header()).congestion() == pytest.approx(0.01)


@pytest.fixture(scope="module")
def ariane():
    return load_netlist(ARIANE / "netlist.pb.txt.gz")


def _picture_mismatches(path: Path, title: str, values: np.ndarray) -> int:
    """Cells where a header picture (digit floor(10 v), '#' above 1, '!' above 1.1) disagrees."""
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.endswith(title)) + 4
    bad = 0
    for line in lines[start:start + values.shape[0]]:
        row = int(line[1:].split("|")[0])
        for col, d in enumerate(line[1:].split("|")[1:-1]):
            v = values[row, col]
            if d == "!":
                bad += not v > 1.1
            elif d == "#":
                bad += not 1.0 < v <= 1.1
            else:
                bad += int(v * 10) != (0 if d.strip() == "" else int(d))
    return bad


def test_unlegalized_ariane_with_macros_off_canvas_matches_reference(ariane):
    """initial.plc (18 hard macros wholly above the canvas, 1180 pins off it): the reference tool's
    header figures and its H/V congestion and density pictures, cell by cell."""
    netlist = ariane.copy()
    header = load_placement(netlist, ARIANE / "initial.plc")
    ref = header.figures
    assert (ref["Wirelength cost"], ref["Density cost"], ref["Congestion cost"]) == (0.0497, 0.6067, 0.7128)
    pc = ProxyCost(netlist, header)
    terms = pc.evaluate()
    assert pc.hpwl() == pytest.approx(ref["Wirelength"], rel=1e-6)  # 3,219,216.09
    assert abs(terms.wirelength - 0.0497) < 5e-5 and abs(terms.density - 0.6067) < 5e-5
    assert abs(terms.congestion - 0.7128) < 5e-5  # routing the off-canvas nets clamped gives 0.7157
    h, v = pc.congestion_maps()
    path = ARIANE / "initial.plc"
    assert _picture_mismatches(path, "Horizontal Routing Congestion:", h) == 0
    assert _picture_mismatches(path, "Vertical Routing Congestion:", v) == 0
    assert _picture_mismatches(path, "Overall Placement Density:", pc.density_map()) == 0


# ---- macro routing allocation: an edge on a grid line ---------------------------------------------

@pytest.mark.parametrize("flip", [False, True])
def test_macro_allocation_edge_on_grid_line(tmp_path, flip):
    """Macro 150 x 150 over x 25..175, y 50..200: its top edge lies on the line y = 200, so the
    reference tool's last row is the empty row 2 and no vertical demand is dropped (rows 0 and 1
    keep 75 um x 0.5 / 100 each); the columns are partly covered, so H is dropped in column 1.
    Mirrored (x 50..200, y 25..175), the right edge lies on x = 200: H is kept, V is dropped in row 1."""
    x, y = (125, 100) if flip else (100, 125)
    pc = ProxyCost(load_netlist(_write(tmp_path, _node("M", "MACRO", width=150, height=150, x=x, y=y,
                                                        orientation="N"))), _header(alloc=0.5))
    h, v = pc.macro_demand()
    eh, ev = np.zeros((4, 4)), np.zeros((4, 4))
    ev[0:2, 0:2] = 0.375  # overlap width 75 um in each of columns 0 and 1, rows 0 and 1
    eh[0, 0], eh[1, 0] = 0.25, 0.5  # overlap heights 50 and 100 um in column 0; column 1 dropped
    if flip:
        eh, ev = ev.T.copy(), eh.T.copy()
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


def test_macro_allocation_full_columns_and_an_edge_on_a_line_drops_the_right_column(tmp_path):
    """Macro x 200..400 (columns 2, 3 in full, right edge on the canvas edge), y 50..200 (top edge on a
    grid line): the empty row 2 inside its cell range counts as a partly covered cell, so the tool
    drops the H demand of column 3, and V is dropped nowhere (its last row is empty)."""
    pc = ProxyCost(load_netlist(_write(tmp_path, _node("M", "MACRO", width=200, height=150, x=300, y=125,
                                                        orientation="N"))), _header(alloc=0.5))
    h, v = pc.macro_demand()
    eh, ev = np.zeros((4, 4)), np.zeros((4, 4))
    ev[0:2, 2:4] = 0.5  # 100 um x 0.5 / 100 in rows 0 and 1
    eh[0, 2], eh[1, 2] = 0.25, 0.5
    np.testing.assert_allclose(h, eh, atol=1e-12)
    np.testing.assert_allclose(v, ev, atol=1e-12)


# ---- smoothing ------------------------------------------------------------------------------------

def _ports(tmp_path: Path, cells: list[tuple[int, int]]) -> Path:
    names = [f"p{k}" for k in range(len(cells))]
    text = "".join(_node(n, "PORT", tuple(names[1:]) if k == 0 else (), x=100 * c + 50, y=100 * r + 50)
                   for k, (n, (c, r)) in enumerate(zip(names, cells)))
    return _write(tmp_path, text)


def test_smoothing_spreads_h_over_rows_and_v_over_columns(tmp_path):
    """A net (0,0) -> (3,1): H run on row 0 over columns 0..2, V run on column 3 over row 0. With
    smoothing 1, the H demand of row 0 is shared by rows 0 and 1 (2 in-grid rows within +-1), and
    the V demand of column 3 by columns 2 and 3."""
    pc = ProxyCost(load_netlist(_ports(tmp_path, [(0, 0), (3, 1)])), _header(smoothing=1))
    h, v = pc.congestion_maps()
    eh, ev = np.zeros((4, 4)), np.zeros((4, 4))
    eh[0:2, 0:3] = 0.5 / 100
    ev[0, 2:4] = 0.5 / 100
    np.testing.assert_allclose(h, eh, atol=1e-15)
    np.testing.assert_allclose(v, ev, atol=1e-15)


def test_ariane_smoothing_two(ariane):
    """On Ariane133 at smoothing 2 the congestion is 0.7211 (0.7288 with the other direction)."""
    netlist = ariane.copy()
    header = load_placement(netlist, ARIANE / "legalized.plc")
    assert ProxyCost(netlist, replace(header, smoothing=2)).congestion() == pytest.approx(0.72105, abs=5e-5)


# ---- Circuit Training's congestion grid, weights ------------------------------------------------

def test_ct_congestion_grid_size():
    """Cells of side 2 x routes / (H + V routes per micron): 2 x 1000 / (57.031 + 56.818) = 17.567 um
    on Ariane133's 1433.406 um canvas: int(81.6) = 81 columns and rows."""
    header = read_plc(ARIANE / "legalized.plc")[0]
    assert ct_congestion_grid(header) == (81, 81)
    small = replace(_header(), hroutes_per_micron=1.5, vroutes_per_micron=2.5)
    assert ct_congestion_grid(small, routes_per_congestion_grid=100) == (8, 8)  # 50 um cells on 400 um


def test_congestion_on_its_own_grid(tmp_path):
    """Congestion columns/rows 8 x 8 (50 um cells) on the 4 x 4 placement grid: a net (25, 25) ->
    (375, 25) loads H cells 0..6 of row 0 with 1 / (50 um x 1 route/um); density stays on 4 x 4."""
    text = _node("a", "PORT", ("b",), x=25, y=25) + _node("b", "PORT", x=375, y=25)
    netlist = load_netlist(_write(tmp_path, text))
    pc = ProxyCost(netlist, _header(congestion_columns=8, congestion_rows=8))
    h, v = pc.congestion_maps()
    eh = np.zeros((8, 8))
    eh[0, 0:7] = 1 / 50
    np.testing.assert_allclose(h, eh, atol=1e-15)
    assert not v.any()
    assert pc.congestion() == pytest.approx(6 / 6 * (1 / 50))  # 128 values: the top 6 are all 1/50
    assert pc.density_map().shape == (4, 4)


def test_weights_presets(ariane):
    """Google's flow 1 / 0.5 / 0.5 (the default) and Circuit Training's public 1 / 1 / 0.5."""
    netlist = ariane.copy()
    header = load_placement(netlist, ARIANE / "legalized.plc")
    assert WEIGHT_PRESETS == {"google": (1.0, 0.5, 0.5), "ct": (1.0, 1.0, 0.5)}
    t = ProxyCost(netlist, replace(header, weights=WEIGHT_PRESETS["ct"])).evaluate()
    assert t.proxy == pytest.approx(t.wirelength + t.density + 0.5 * t.congestion)
    assert t.proxy == pytest.approx(0.07357 + 0.49882 + 0.5 * 0.72592, abs=2e-5)


def test_congestion_grid_line_round_trips(tmp_path, ariane):
    netlist = ariane.copy()
    header = load_placement(netlist, ARIANE / "legalized.plc")
    header.congestion_columns, header.congestion_rows = 81, 81
    write_plc(tmp_path / "o.plc", netlist, header, cost=ProxyCost(netlist, header))
    assert "# Congestion Columns : 81  Congestion Rows : 81" in (tmp_path / "o.plc").read_text()
    again = read_plc(tmp_path / "o.plc")[0]
    assert (again.congestion_columns, again.congestion_rows) == (81, 81)


# ---- incremental evaluation under every option ----------------------------------------------------

@pytest.mark.parametrize("settings", [
    {},
    {"smoothing": 3, "weights": (1.0, 1.0, 0.5)},
    {"smoothing": 2, "congestion_columns": 31, "congestion_rows": 17},
])
def test_incremental_agrees_with_full_under_options(tmp_path, settings):
    """Random moves of macros and ports (some off the canvas, so nets stop and start being routed)."""
    d = CHIP_DIR / "circuit_training" / "toy_macro_stdcell"
    netlist = load_netlist(d / "netlist.pb.txt")
    header = replace(load_placement(netlist, d / "initial.plc"), **settings)
    pc = ProxyCost(netlist, header)
    state = pc.state()
    rng = np.random.default_rng(5)
    movable = np.concatenate([netlist.macros, netlist.ports])
    for _ in range(12):
        nodes = rng.choice(movable, size=2, replace=False)
        x = rng.uniform(-0.3, 1.3, 2) * header.width  # a third of the moves leave the canvas
        y = rng.uniform(-0.3, 1.3, 2) * header.height
        state.move(nodes, x, y, rng.integers(0, 8, 2))
        state.accept()
        full = pc.evaluate(state.x, state.y, state.orient)
        np.testing.assert_allclose(list(state.terms().as_dict().values()), list(full.as_dict().values()),
                                   rtol=1e-9, atol=1e-12)
