"""Netlist (protobuf text) and .plc reading and writing, and their error messages."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.errors import InputError
from moeplace.place.chip.netlist import NodeKind, load_netlist, orient_offsets, orientation_code
from moeplace.place.chip.plc import PlcHeader, apply_plc, load_placement, read_plc, write_plc

ARIANE = CHIP_DIR / "ariane133"

SMALL = """# proto-file: tensorflow/core/framework/graph.proto
node {
  name: "__metadata__"
  attr { key: "soft_macro_area_bloating_ratio" value { f: 2.0 } }
}
node {
  name: "P0"   # a port
  input: "M0/a"
  input: "S0/in"
  attr { key: "type" value { placeholder: "PORT" } }
  attr { key: "x" value { f: 0 } }
  attr { key: "y" value { f: 10.5 } }
}
node {
  name: "M0"
  attr { key: "type" value { placeholder: "MACRO" } }
  attr { key: "width" value { f: 20 } }
  attr { key: "height" value { f: 1e1 } }
  attr { key: "orientation" value { placeholder: "FS" } }
  attr { key: "x" value { f: 50 } }
  attr { key: "y" value { f: 60 } }
}
node {
  name: "M0/a"
  input: "S0/in"
  attr {
    key: "type"
    value {
      placeholder: "MACRO_PIN"
    }
  }
  attr { key: "macro_name" value { placeholder: "M0" } }
  attr { key: "x_offset" value { f: -5 } }
  attr { key: "y_offset" value { f: 2 } }
  attr { key: "weight" value { f: 3 } }
}
node {
  name: "S0"
  attr { key: "type" value { placeholder: "macro" } }
  attr { key: "width" value { f: 4 } }
  attr { key: "height" value { f: 4 } }
  attr { key: "x" value { f: 80 } }
  attr { key: "y" value { f: 20 } }
}
node {
  name: "S0/in"
  attr { key: "type" value { placeholder: "macro_pin" } }
  attr { key: "macro_name" value { placeholder: "S0" } }
}
"""


def test_small_netlist_nodes_and_nets(tmp_path):
    path = tmp_path / "small.pb.txt"
    path.write_text(SMALL)
    nl = load_netlist(path)
    assert nl.names == ["P0", "M0", "M0/a", "S0", "S0/in"]  # __metadata__ is not a node
    assert nl.metadata == {"soft_macro_area_bloating_ratio": 2.0}
    assert nl.kind.tolist() == [NodeKind.PORT, NodeKind.HARD_MACRO, NodeKind.HARD_MACRO_PIN,
                                NodeKind.SOFT_MACRO, NodeKind.SOFT_MACRO_PIN]
    assert nl.width[1] == 20 and nl.height[1] == 10 and nl.orient[1] == orientation_code("FS")
    assert nl.parent.tolist() == [-1, -1, 1, -1, 3]
    assert (nl.x_offset[2], nl.y_offset[2]) == (-5, 2)
    assert nl.fixed.tolist() == [True, False, False, False, False]
    # nets: driver first, then its inputs; weight = the driver's weight
    assert nl.net_driver.tolist() == [0, 2]
    assert nl.net_ptr.tolist() == [0, 3, 5]
    assert nl.net_pins.tolist() == [0, 2, 4, 2, 4]
    assert nl.net_weight.tolist() == [1.0, 3.0]


def test_gzipped_netlist_reads_the_same(tmp_path):
    plain, packed = tmp_path / "n.pb.txt", tmp_path / "n.pb.txt.gz"
    plain.write_text(SMALL)
    packed.write_bytes(gzip.compress(SMALL.encode()))
    a, b = load_netlist(plain), load_netlist(packed)
    assert a.names == b.names and np.array_equal(a.net_pins, b.net_pins)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.width, b.width)


@pytest.fixture(scope="module")
def ariane():
    return load_netlist(ARIANE / "netlist.pb.txt.gz")


def test_ariane_counts_match_plc_header(ariane):
    """The reference tool counted node types in legalized.plc's header."""
    nl = ariane
    counts = np.bincount(nl.kind, minlength=5)
    assert counts[NodeKind.HARD_MACRO] == 133 and counts[NodeKind.SOFT_MACRO] == 782
    assert counts[NodeKind.PORT] == 495
    assert counts[NodeKind.HARD_MACRO_PIN] == 7847 and counts[NodeKind.SOFT_MACRO_PIN] == 10630
    assert nl.num_nodes == 19887
    # every net's driver is its first pin, and every pin index is valid
    assert np.array_equal(nl.net_pins[nl.net_ptr[:-1]], nl.net_driver)
    assert nl.net_pins.max() < nl.num_nodes


def test_all_circuit_training_test_netlists_load():
    for d in sorted((CHIP_DIR / "circuit_training").iterdir()):
        if d.is_dir():
            nl = load_netlist(d / "netlist.pb.txt")
            header = load_placement(nl, d / "initial.plc")
            assert nl.num_nodes > 0 and header.columns > 0, d.name


def test_orientation_transform_by_hand():
    dx, dy = np.full(8, 3.0), np.full(8, 1.0)
    codes = np.array([orientation_code(o) for o in ["N", "S", "FN", "FS", "E", "W", "FE", "FW"]])
    ox, oy = orient_offsets(dx, dy, codes)
    assert list(zip(ox.tolist(), oy.tolist())) == [(3, 1), (-3, -1), (-3, 1), (3, -1),
                                                   (1, -3), (-1, 3), (-1, -3), (1, 3)]


@pytest.mark.parametrize("text, line, reason", [
    ("node {\n  name: \"a\"\n", 2, "ends inside"),
    ("node {\n  name: \"a\"\n}\n}\n", 4, "unmatched"),
    ('node {\n  name: "a"\n  attr { key: "type" value { placeholder: "WIDGET" } }\n}\n', 1, "unknown type"),
    ('node {\n  name: "a"\n  input: "zz"\n  attr { key: "type" value { placeholder: "PORT" } }\n}\n', 3,
     "unknown node 'zz'"),
    ('node {\n  name: "m"\n  attr { key: "type" value { placeholder: "MACRO" } }\n}\n', 1, "lacks"),
    ('node {\n  name: "a" "b"\n}\n', 2, "without a field name"),
    ('node { name: "s" attr { key: "type" value { placeholder: "macro" } }'
     ' attr { key: "width" value { f: 1 } } attr { key: "height" value { f: 1 } } }\n'
     'node { name: "s/p" attr { key: "type" value { placeholder: "MACRO_PIN" } }'
     ' attr { key: "macro_name" value { placeholder: "s" } } }\n', 2, "which is not a hard_macro"),
])
def test_malformed_netlist_names_file_and_line(tmp_path, text, line, reason):
    path = tmp_path / "bad.pb.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=reason) as err:
        load_netlist(path)
    assert f"bad.pb.txt:{line}:" in str(err.value)


def test_damaged_gzip_is_an_input_error(tmp_path):
    data = gzip.compress(SMALL.encode())
    (tmp_path / "cut.pb.txt.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.pb.txt.gz:.*cannot read"):
        load_netlist(tmp_path / "cut.pb.txt.gz")
    bad = bytearray(data)
    bad[20:40] = b"x" * 20
    (tmp_path / "bad.pb.txt.gz").write_bytes(bytes(bad))
    with pytest.raises(InputError, match="bad.pb.txt.gz"):
        load_netlist(tmp_path / "bad.pb.txt.gz")


def test_missing_netlist_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_netlist(tmp_path / "nope.pb.txt")


def test_read_plc_header_and_rows():
    header, rows = read_plc(ARIANE / "legalized.plc")
    assert (header.columns, header.rows) == (24, 21)
    assert header.width == header.height == 1433.406
    assert (header.hroutes_per_micron, header.vroutes_per_micron) == (57.031, 56.818)
    assert (header.hrouting_alloc, header.vrouting_alloc) == (39.583, 30.303)
    assert header.smoothing == 0
    assert header.figures["Wirelength"] == 4763106.815
    assert len(rows.node_index) == 133 + 782 + 495
    assert rows.node_index[0] == 0 and rows.x[0] == 0.035 and rows.y[0] == 350.07
    assert rows.orientation[0] == "-" and rows.fixed[0]


def test_blockages_are_read():
    header, _ = read_plc(CHIP_DIR / "circuit_training" / "simple_grouped_with_coords_with_blockage"
                         / "initial.plc")
    assert header.blockages == [(0, 0, 10, 10, 1.0), (490, 490, 500, 500, 1.0)]


def test_write_plc_round_trip_keeps_header(tmp_path, ariane):
    nl = ariane.copy()
    header = load_placement(nl, ARIANE / "legalized.plc")
    m = nl.hard_macros[0]
    nl.x[m], nl.y[m], nl.orient[m] = 123.25, 456.5, orientation_code("FN")
    out = tmp_path / "out.plc"
    write_plc(out, nl, header, figures={"Wirelength cost": 0.0812})
    header2, rows2 = read_plc(out)
    assert (header2.columns, header2.rows, header2.width) == (24, 21, 1433.406)
    assert (header2.hrouting_alloc, header2.vroutes_per_micron, header2.smoothing) == (39.583, 56.818, 0)
    assert header2.figures["Wirelength cost"] == 0.0812
    assert header2.figures["Density cost"] == 0.4988  # kept as it was
    assert any("Project : unset_project" in ln for ln in header2.lines)
    assert not any("Hard Macro Placements" in ln for ln in header2.lines)  # stale pictures dropped
    nl2 = ariane.copy()
    apply_plc(nl2, rows2)
    assert nl2.x[m] == 123.25 and nl2.y[m] == 456.5 and nl2.orient[m] == orientation_code("FN")
    placed = nl.macros.tolist() + nl.ports.tolist()
    assert np.allclose(nl2.x[placed], nl.x[placed]) and np.allclose(nl2.y[placed], nl.y[placed])
    assert sorted(rows2.node_index.tolist()) == sorted(placed)


def test_write_plc_from_blank_header(tmp_path):
    nl = load_netlist(CHIP_DIR / "circuit_training" / "sample_clustered" / "netlist.pb.txt")
    out = tmp_path / "p.plc"
    write_plc(out, nl, PlcHeader(columns=3, rows=2, width=500, height=400, smoothing=1))
    header, rows = read_plc(out)
    assert (header.columns, header.rows, header.width, header.height, header.smoothing) == (3, 2, 500, 400, 1)
    assert rows.node_index.tolist() == [0, 1, 2, 3, 8]


@pytest.mark.parametrize("body, reason", [
    ("0 1.0 2.0\n", "needs 'node_index"),
    ("0 1.0 abc N 0\n", "y is not a number"),
    ("1.5 1.0 2.0 N 0\n", "not an integer"),
    ("0 1.0 2.0 Q 0\n", "unknown orientation"),
    ("0 1.0 2.0 N 7\n", "fixed flag"),
])
def test_malformed_plc_names_file_and_line(tmp_path, body, reason):
    path = tmp_path / "bad.plc"
    path.write_text("# Columns : 2  Rows : 2\n# Width : 10  Height : 10\n" + body)
    with pytest.raises(InputError, match=reason) as err:
        read_plc(path)
    assert "bad.plc:3:" in str(err.value)


def test_malformed_plc_header_and_bad_index(tmp_path):
    path = tmp_path / "bad.plc"
    path.write_text("# Columns : two  Rows : 2\n")
    with pytest.raises(InputError, match="bad.plc:1: malformed header"):
        read_plc(path)
    path.write_text("# Columns : 2  Rows : 2\n0 1 1 - 1\n99 1 1 N 0\n")
    nl = load_netlist(CHIP_DIR / "circuit_training" / "sample_clustered" / "netlist.pb.txt")
    with pytest.raises(InputError, match=r"bad.plc:3: node index 99 is out of range"):
        load_placement(nl, path)
    path.write_text("4 1 1 N 0\n")  # node 4 is a pin
    with pytest.raises(InputError, match="is a pin"):
        load_placement(nl, path)


def test_streamed_lines_across_chunks_and_gzip_members(tmp_path):
    from moeplace.place.chip.pbtxt import iter_lines

    plain = tmp_path / "n.pb.txt"
    plain.write_text(SMALL)
    assert list(iter_lines(plain, chunk=7)) == SMALL.splitlines()
    half = len(SMALL) // 2
    packed = tmp_path / "n.pb.txt.gz"  # two concatenated gzip members, as `cat a.gz b.gz` makes
    packed.write_bytes(gzip.compress(SMALL[:half].encode()) + gzip.compress(SMALL[half:].encode()))
    assert list(iter_lines(packed, chunk=5)) == SMALL.splitlines()
    assert load_netlist(packed).names == load_netlist(plain).names
