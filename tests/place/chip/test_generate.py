"""Synthetic designs (`place chip generate`): files that parse, seeds that repeat, legal grids, locality."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.place.chip.corpus import INDEX, generate_corpus
from moeplace.place.chip.cost import ProxyCost
from moeplace.place.chip.generate import design_seed, generate_design
from moeplace.place.chip.netlist import NodeKind, load_netlist, pin_positions
from moeplace.place.chip.netlist_writer import netlist_pbtxt
from moeplace.place.chip.plc import load_placement, read_plc
from moeplace.place.chip.problem import ChipProblem

SMALL = dict(min_macros=20, max_macros=40)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("corpus")
    index = generate_corpus(out, 3, seed=5, show_progress=False, **SMALL)
    return out, index


def _load(folder):
    netlist = load_netlist(folder / "netlist.pb.txt")
    header = load_placement(netlist, folder / "initial.plc")
    return netlist, header


def test_generated_files_parse_and_hold_what_the_index_says(corpus) -> None:
    out, index = corpus
    on_disk = json.loads((out / INDEX).read_text())
    assert on_disk == index and on_disk["complete"] and len(on_disk["designs"]) == 3
    for entry in on_disk["designs"]:
        netlist, header = _load(out / entry["folder"])
        assert len(netlist.hard_macros) == entry["hard_macros"]
        assert len(netlist.soft_macros) == entry["soft_macros"] and len(netlist.ports) == entry["ports"]
        assert netlist.num_nets == entry["nets"]
        assert [header.columns, header.rows] == entry["grid"]
        assert [header.width, header.height] == entry["canvas"] == list(netlist.canvas)
        assert 20 <= entry["hard_macros"] <= 40
        # the .plc rows are every macro and port, at the positions the netlist file states
        _, rows = read_plc(out / entry["folder"] / "initial.plc")
        kinds = (NodeKind.HARD_MACRO, NodeKind.SOFT_MACRO, NodeKind.PORT)
        placed = np.flatnonzero(np.isin(netlist.kind, kinds))
        assert rows.node_index.tolist() == placed.tolist()
        fresh = load_netlist(out / entry["folder"] / "netlist.pb.txt")
        assert np.allclose(fresh.x[placed], rows.x) and np.allclose(fresh.y[placed], rows.y)


def test_same_seed_same_bytes_other_seed_differs(tmp_path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        generate_corpus(out, 2, seed=seed, show_progress=False, **SMALL)
    files = ["corpus.json", "design_0000/netlist.pb.txt", "design_0000/initial.plc",
             "design_0001/netlist.pb.txt", "design_0001/initial.plc"]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert all((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    # a design is its own seed: regenerated alone it is the same netlist
    d = generate_design(design_seed(3, 1), "design_0001", **SMALL)
    assert netlist_pbtxt(d.netlist) == (a / "design_0001/netlist.pb.txt").read_text()


def test_macro_count_range_is_honoured() -> None:
    counts = [len(generate_design(s, min_macros=25, max_macros=30).netlist.hard_macros) for s in range(6)]
    assert all(25 <= n <= 30 for n in counts) and len(set(counts)) > 1
    assert len(generate_design(1, min_macros=33, max_macros=33).netlist.hard_macros) == 33


def test_ports_lie_on_the_canvas_boundary(corpus) -> None:
    out, index = corpus
    for entry in index["designs"]:
        netlist, header = _load(out / entry["folder"])
        x, y = netlist.x[netlist.ports], netlist.y[netlist.ports]
        on_edge = (x == 0) | (x == header.width) | (y == 0) | (y == header.height)
        inside = (x >= 0) & (x <= header.width) & (y >= 0) & (y <= header.height)
        assert on_edge.all() and inside.all()


def _overlaps(x, y, w, h) -> int:
    """Pairs of rectangles (centres, sizes) whose interiors overlap, by brute force."""
    n, bad = len(x), 0
    for i in range(n):
        for j in range(i + 1, n):
            if abs(x[i] - x[j]) < (w[i] + w[j]) / 2 - 1e-6 and abs(y[i] - y[j]) < (h[i] + h[j]) / 2 - 1e-6:
                bad += 1
    return bad


def test_initial_placement_is_legal_and_chip_problem_places_every_design(corpus) -> None:
    out, index = corpus
    for entry in index["designs"]:
        netlist, header = _load(out / entry["folder"])
        hard = netlist.hard_macros
        x, y, w, h = netlist.x[hard], netlist.y[hard], netlist.width[hard], netlist.height[hard]
        # independent check: no two hard macros overlap, all inside the canvas, centres on cell centres
        assert _overlaps(x, y, w, h) == 0
        assert (x - w / 2 >= -1e-6).all() and (x + w / 2 <= header.width + 1e-6).all()
        assert (y - h / 2 >= -1e-6).all() and (y + h / 2 <= header.height + 1e-6).all()
        col = x / header.cell_width - 0.5
        assert np.allclose(col, np.round(col), atol=1e-6)
        problem = ChipProblem(netlist, header, soft="fixed", fd_iterations=0)
        start = problem.snap()  # the given positions are legal cells: snapping keeps them
        assert problem.is_legal(start)
        px, py, _ = problem.positions(start)
        assert np.allclose(px[hard], x) and np.allclose(py[hard], y)
        assert problem.is_legal(problem.pack())  # and the greedy bottom-left packing fits too


def test_proxy_cost_of_the_initial_placement_is_finite_and_in_the_plc(corpus) -> None:
    out, index = corpus
    for entry in index["designs"]:
        netlist, header = _load(out / entry["folder"])
        terms = ProxyCost(netlist, header).evaluate()
        assert all(np.isfinite(v) and v >= 0 for v in terms.as_dict().values())
        assert terms.proxy == pytest.approx(header.figures["Proxy cost"], abs=6e-5)


def test_nets_are_local_and_every_pin_is_connected() -> None:
    d = generate_design(11, min_macros=60, max_macros=60)
    nl = d.netlist
    on_net = np.zeros(nl.num_nodes, bool)
    on_net[nl.net_pins] = True
    assert on_net[nl.of_kind(NodeKind.HARD_MACRO_PIN)].all() and on_net[nl.ports].all()
    soft_pins = nl.of_kind(NodeKind.SOFT_MACRO_PIN)
    assert set(nl.parent[soft_pins].tolist()) == set(nl.soft_macros.tolist())  # every cluster has pins
    sizes = nl.net_sizes()
    assert (sizes >= 2).all() and np.mean(sizes <= 3) > 0.5  # mostly small nets, as in real netlists
    # soft-to-soft nets between clusters: far shorter than between random pairs of clusters
    px, py = pin_positions(nl)
    owner = np.where(nl.parent >= 0, nl.parent, np.arange(nl.num_nodes))
    soft = nl.kind[owner] == NodeKind.SOFT_MACRO
    two = np.flatnonzero(sizes == 2)
    a, b = nl.net_pins[nl.net_ptr[two]], nl.net_pins[nl.net_ptr[two] + 1]
    keep = soft[a] & soft[b]
    net_len = np.hypot(px[a[keep]] - px[b[keep]], py[a[keep]] - py[b[keep]])
    rng = np.random.default_rng(0)
    s = nl.soft_macros
    i, j = rng.choice(s, 2000), rng.choice(s, 2000)
    random_len = np.hypot(nl.x[i] - nl.x[j], nl.y[i] - nl.y[j])
    assert keep.sum() > 50 and np.median(net_len) < 0.5 * np.median(random_len)


def test_hard_macro_pins_sit_on_their_macro() -> None:
    nl = generate_design(2, **SMALL).netlist
    pins = nl.of_kind(NodeKind.HARD_MACRO_PIN)
    par = nl.parent[pins]
    assert (nl.kind[par] == NodeKind.HARD_MACRO).all()
    assert (np.abs(nl.x_offset[pins]) <= nl.width[par] / 2).all()
    assert (np.abs(nl.y_offset[pins]) <= nl.height[par] / 2).all()
    assert (np.abs(nl.x_offset[pins]) + np.abs(nl.y_offset[pins]) > 0).all()  # offsets, not centres


@pytest.mark.parametrize("sample", ["sample_clustered", "toy_macro_stdcell", "simple_grouped_with_coords"])
def test_writer_round_trips_a_circuit_training_sample(tmp_path, sample) -> None:
    src = load_netlist(CHIP_DIR / "circuit_training" / sample / "netlist.pb.txt")
    path = tmp_path / "copy.pb.txt"
    path.write_text(netlist_pbtxt(src))
    back = load_netlist(path)
    assert back.names == src.names
    for field in ("kind", "width", "height", "orient", "parent", "x_offset", "y_offset", "net_driver",
                  "net_ptr", "net_pins", "net_weight"):
        assert np.array_equal(getattr(back, field), getattr(src, field)), field
    placed = np.concatenate([src.macros, src.ports])
    assert np.array_equal(back.x[placed], src.x[placed]) and np.array_equal(back.y[placed], src.y[placed])


def _legal_layout(netlist, header) -> bool:
    hard = netlist.hard_macros
    x, y, w, h = netlist.x[hard], netlist.y[hard], netlist.width[hard], netlist.height[hard]
    inside = ((x - w / 2 >= -1e-6) & (x + w / 2 <= header.width + 1e-6)
              & (y - h / 2 >= -1e-6) & (y + h / 2 <= header.height + 1e-6)).all()
    return bool(inside) and _overlaps(x, y, w, h) == 0


def test_largest_default_designs_are_placeable() -> None:
    d = generate_design(0, min_macros=290, max_macros=300)
    assert 290 <= len(d.netlist.hard_macros) <= 300
    assert _legal_layout(d.netlist, d.header)
    assert max(d.header.columns, d.header.rows) <= 64


@pytest.mark.slow
def test_designs_across_the_whole_range_are_placeable() -> None:
    for seed in range(30):
        d = generate_design(seed)
        assert _legal_layout(d.netlist, d.header), seed
    d = generate_design(7, min_macros=500, max_macros=500)
    assert _legal_layout(d.netlist, d.header)
