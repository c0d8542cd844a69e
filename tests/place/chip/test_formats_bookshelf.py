"""Bookshelf (.aux .nodes .nets .pl .scl .wts) reading into the chip Netlist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.errors import InputError
from moeplace.place.chip.bookshelf import load_bookshelf
from moeplace.place.chip.cost import ProxyCost
from moeplace.place.chip.netlist import NodeKind

FILES = {
    "t.aux": "RowBasedPlacement : t.nodes t.nets t.wts t.pl t.scl\n",
    "t.nodes": "UCLA nodes 1.0\n# comment\nNumNodes : 4\nNumTerminals : 1\n"
               "  a  4 10\n  b  2 10\n  M  40 30\n  p  1 1 terminal\n",
    "t.nets": "UCLA nets 1.0\nNumNets : 2\nNumPins : 5\n"
              "NetDegree : 3 n0\n  a I\n  M O : 5 -2\n  p B\n"
              "NetDegree : 2 n1\n  b O\n  a I\n",
    "t.pl": "UCLA pl 1.0\n\n  a 10 0 : N\n  b 20 10 : N\n  M 50 20 : E /FIXED\n  p 0 95 : N\n",
    "t.scl": "UCLA scl 1.0\nNumRows : 4\n" + "".join(
        f"CoreRow Horizontal\n Coordinate : {10 * r}\n Height : 10\n Sitewidth : 1\n Sitespacing : 1\n"
        " Siteorient : N\n Sitesymmetry : Y\n SubrowOrigin : 0 Numsites : 100\nEnd\n" for r in range(4)),
    "t.wts": "UCLA wts 1.0\n  n1 3\n  a 7\n",
}


def _write(tmp_path: Path, **changes: str) -> Path:
    for name, text in {**FILES, **changes}.items():
        (tmp_path / name).write_text(text)
    return tmp_path / "t.aux"


def test_small_benchmark_by_hand(tmp_path):
    nl, header = load_bookshelf(_write(tmp_path), columns=4, rows=2)  # 25 x 20 cells
    assert nl.names[:4] == ["a", "b", "M", "p"]
    # a, b are one row tall (10): standard cells -> soft macros; M is taller -> hard macro; p terminal
    assert nl.kind[:4].tolist() == [NodeKind.SOFT_MACRO, NodeKind.SOFT_MACRO, NodeKind.HARD_MACRO,
                                    NodeKind.PORT]
    # centres = lower-left + half size; M is turned E, so its 40x30 footprint is 30 wide, 40 tall
    assert nl.x[:4].tolist() == [12, 21, 65, 0.5] and nl.y[:4].tolist() == [5, 15, 40, 95.5]
    assert nl.fixed[:4].tolist() == [False, False, True, True]
    assert nl.footprint()[0][2] == 30 and nl.footprint()[1][2] == 40
    # canvas = the rows: 100 x 40
    assert (header.width, header.height, header.columns, header.rows) == (100, 40, 4, 2)
    # net n0: driver is M's output pin (a pin node, offset (5, -2) turned E -> (-2, -5)), then a, p
    pin = 4
    assert nl.kind[pin] == NodeKind.HARD_MACRO_PIN and nl.parent[pin] == 2
    assert (nl.x[pin], nl.y[pin]) == (65 - 2, 40 - 5)
    assert nl.net_pins[nl.net_ptr[0]:nl.net_ptr[1]].tolist() == [pin, 0, 3]
    assert nl.net_pins[nl.net_ptr[1]:nl.net_ptr[2]].tolist() == [1, 0]
    assert nl.net_weight.tolist() == [1.0, 3.0]  # .wts names net n1; node weights are ignored
    # HPWL by hand: n0 over (63,35), (12,5), (0.5,95.5) = 62.5 + 90.5; n1 over (21,15), (12,5) = 9 + 10
    pc = ProxyCost(nl, header)
    assert pc.hpwl() == pytest.approx(62.5 + 90.5 + 3 * 19)


def test_ibm01_counts_match_its_headers():
    nl, header = load_bookshelf(CHIP_DIR / "ibm01" / "ibm01.aux")
    counts = np.bincount(nl.kind, minlength=5)
    assert counts[NodeKind.PORT] == 246  # NumTerminals
    assert counts[NodeKind.HARD_MACRO] + counts[NodeKind.SOFT_MACRO] + counts[NodeKind.PORT] == 12752
    assert counts[NodeKind.HARD_MACRO] == 246  # nodes taller than the 16-unit rows
    assert nl.num_nets == 14111 and len(nl.net_pins) == 50566  # NumNets, NumPins
    assert (header.width, header.height) == (2295, 144 * 16)
    a = nl.index("a12324")  # the largest block, 526 x 512
    assert nl.kind[a] == NodeKind.HARD_MACRO and (nl.width[a], nl.height[a]) == (526, 512)


@pytest.mark.parametrize("name, text, where, reason", [
    ("t.nodes", "NumNodes : 1\n  a 4\n", "t.nodes:2", "needs 'name width height"),
    ("t.nodes", "  a 4 x\n", "t.nodes:1", "height is not a number"),
    ("t.pl", "  zz 1 2 : N\n", "t.pl:1", "unknown node 'zz'"),
    ("t.pl", "  a 1 2 : Q\n", "t.pl:1", "unexpected 'Q'"),
    ("t.nets", "NetDegree : 2\n  a I\nNetDegree : 1\n  b O\n", "t.nets:3", r"1 pin\(s\) missing"),
    ("t.nets", "NetDegree : 1\n  qq I\n", "t.nets:2", "unknown node 'qq'"),
    ("t.scl", "CoreRow Horizontal\n Coordinate : 0\nEnd\n", "t.scl:3", "row lacks"),
])
def test_malformed_bookshelf_names_file_and_line(tmp_path, name, text, where, reason):
    aux = _write(tmp_path, **{name: text})
    with pytest.raises(InputError, match=reason) as err:
        load_bookshelf(aux)
    assert where in str(err.value)


def test_missing_aux_and_missing_listed_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_bookshelf(tmp_path / "none.aux")
    aux = _write(tmp_path)
    (tmp_path / "t.pl").unlink()
    with pytest.raises(InputError, match="cannot read"):
        load_bookshelf(aux)


def test_bookshelf_placement_round_trips_through_plc(tmp_path):
    from moeplace.place.chip.plc import load_placement, write_plc

    nl, header = load_bookshelf(_write(tmp_path), columns=4, rows=2)
    nl.x[0], nl.y[0] = 33.5, 7.25
    write_plc(tmp_path / "t.plc", nl, header)
    fresh, _ = load_bookshelf(_write(tmp_path), columns=4, rows=2)
    header2 = load_placement(fresh, tmp_path / "t.plc")
    assert (header2.columns, header2.rows, header2.width, header2.height) == (4, 2, 100, 40)
    assert (fresh.x[0], fresh.y[0]) == (33.5, 7.25)
    placed = np.concatenate([fresh.macros, fresh.ports])
    np.testing.assert_array_equal(fresh.x[placed], nl.x[placed])
    np.testing.assert_array_equal(fresh.orient[placed], nl.orient[placed])
