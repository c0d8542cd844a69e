"""`moeplace place chip eval` and the .plc checks against the netlist (one-line errors, exit code 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from moeplace.cli import main
from moeplace.data import CHIP_DIR
from moeplace.errors import InputError
from moeplace.place.chip.netlist import load_netlist
from moeplace.place.chip.plc import load_placement

ARIANE = CHIP_DIR / "ariane133"
SIMPLE = CHIP_DIR / "circuit_training" / "simple_with_coords"  # netlist says "# FP bbox: {0 0} {500 500}"


def _eval(capsys, *extra: str) -> tuple[int, str, str]:
    rc = main(["place", "chip", "eval", "--netlist", str(ARIANE / "netlist.pb.txt.gz"), *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def test_eval_scores_reference_placement_and_shows_header_figures(capsys):
    rc, out, _ = _eval(capsys, "--plc", str(ARIANE / "legalized.plc"), "--json")
    assert rc == 0
    assert "| figures in its header | 0.0736 | 0.4988 | 0.7259 |" in out
    figures = json.loads(out.strip().splitlines()[-1])
    # the reference tool's figures (legalized.plc header): 0.0736, 0.4988, 0.7259; HPWL 4,763,106.815
    assert abs(figures["wirelength"] - 0.0736) < 5e-5 and abs(figures["density"] - 0.4988) < 5e-5
    assert abs(figures["congestion"] - 0.7259) < 5e-5
    assert figures["proxy"] == pytest.approx(figures["wirelength"] + 0.5 * figures["density"]
                                             + 0.5 * figures["congestion"])
    assert figures["hpwl"] == pytest.approx(4763106.815, rel=1e-6)
    assert figures["settings"] == {"grid": "24x21", "congestion_grid": "24x21", "smoothing": 0,
                                   "weights": [1.0, 0.5, 0.5]}


def test_eval_presets_and_options(capsys):
    rc, out, _ = _eval(capsys, "--plc", str(ARIANE / "legalized.plc"), "--settings", "ct", "--json")
    ct = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and ct["settings"] == {"grid": "24x21", "congestion_grid": "81x81", "smoothing": 5,
                                          "weights": [1.0, 1.0, 0.5]}
    assert ct["proxy"] == pytest.approx(ct["wirelength"] + ct["density"] + 0.5 * ct["congestion"])
    rc, out, _ = _eval(capsys, "--plc", str(ARIANE / "legalized.plc"), "--settings", "tilos",
                       "--congestion-grid", "12x7", "--weights", "1,0,0", "--json")
    mixed = json.loads(out.strip().splitlines()[-1])
    assert mixed["settings"] == {"grid": "24x21", "congestion_grid": "12x7", "smoothing": 2,
                                 "weights": [1.0, 0.0, 0.0]}
    assert mixed["proxy"] == pytest.approx(mixed["wirelength"])


@pytest.mark.parametrize("extra, message", [
    (["--weights", "1,2"], "--weights: want google, ct or three"),
    (["--congestion-grid", "big"], "--congestion-grid: want header"),
    (["--smoothing", "-1"], "--smoothing: must be >= 0"),
])
def test_eval_bad_options_exit_2(capsys, extra, message):
    rc = main(["place", "chip", "eval", "--netlist", str(SIMPLE / "netlist.pb.txt"), "--plc",
               str(SIMPLE / "initial.plc"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def _plc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.plc"
    path.write_text(text)
    return path


def test_plc_canvas_disagreeing_with_netlist_names_the_line(tmp_path, capsys):
    path = _plc(tmp_path, "# Columns : 2  Rows : 2\n# Width : 400  Height : 400\n")
    with pytest.raises(InputError, match=r"bad.plc:2: canvas 400 x 400 disagrees with the netlist's 500 x 5"):
        load_placement(load_netlist(SIMPLE / "netlist.pb.txt"), path)
    rc = main(["place", "chip", "eval", "--netlist", str(SIMPLE / "netlist.pb.txt"), "--plc", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.plc:2:" in err and len(err.strip().splitlines()) == 1


def test_plc_grid_disagreeing_with_netlist_comment(tmp_path):
    netlist_path = tmp_path / "n.pb.txt"
    netlist_path.write_text("# Columns : 4  Rows : 3\n" + (SIMPLE / "netlist.pb.txt").read_text())
    path = _plc(tmp_path, "# Columns : 5  Rows : 3\n# Width : 500  Height : 500\n")
    with pytest.raises(InputError, match=r"bad.plc:1: grid 5 x 3 disagrees with the netlist's 4 x 3"):
        load_placement(load_netlist(netlist_path), path)


def test_plc_missing_macros_unknown_names_and_duplicates(tmp_path):
    netlist = load_netlist(ARIANE / "netlist.pb.txt.gz")  # 915 macros
    lines = (ARIANE / "legalized.plc").read_text().splitlines()
    body = [i for i, ln in enumerate(lines) if ln and not ln.startswith("#")]
    hard = int(netlist.hard_macros[0])
    row = next(i for i in body if lines[i].split()[0] == str(hard))
    # a file with rows that leaves out a macro
    dropped = lines[:row] + lines[row + 1:]
    want = re.escape(f"bad.plc: no row for macro {netlist.names[hard]!r} (node {hard}; 1 ")
    with pytest.raises(InputError, match=want):
        load_placement(netlist.copy(), _plc(tmp_path, "\n".join(dropped) + "\n"))
    # rows may name nodes; an unknown name is reported with its line
    named = list(lines)
    named[row] = " ".join([netlist.names[hard], *lines[row].split()[1:]])
    load_placement(netlist.copy(), _plc(tmp_path, "\n".join(named) + "\n"))
    named[row] = " ".join(["no_such_macro", *lines[row].split()[1:]])
    with pytest.raises(InputError, match=rf"bad.plc:{row + 1}: unknown node 'no_such_macro'"):
        load_placement(netlist.copy(), _plc(tmp_path, "\n".join(named) + "\n"))
    twice = lines + [lines[row]]
    with pytest.raises(InputError, match=rf"bad.plc:{len(twice)}: node {hard} .* is placed twice"):
        load_placement(netlist.copy(), _plc(tmp_path, "\n".join(twice) + "\n"))


def test_header_only_plc_keeps_netlist_positions():
    """Circuit Training's test files without rows: the netlist's own positions stand."""
    netlist = load_netlist(SIMPLE / "netlist.pb.txt")
    x = netlist.x.copy()
    load_placement(netlist, SIMPLE / "initial.plc")
    assert (netlist.x == x).all()


def test_place_chip_searches_under_the_cost_options(tmp_path, capsys):
    """`place chip --congestion-grid 7x5 --weights ct`: the input row is scored in those settings."""
    from moeplace.place.chip.cost import ProxyCost
    from moeplace.place.chip.settings import with_settings

    toy = CHIP_DIR / "circuit_training" / "toy_macro_stdcell"
    rc = main(["place", "chip", "--netlist", str(toy / "netlist.pb.txt"), "--plc", str(toy / "initial.plc"),
               "--method", "sa", "--budget", "1s", "--congestion-grid", "7x5", "--weights", "ct",
               "--out", str(tmp_path / "o.plc"), "--json"])
    assert rc == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    netlist = load_netlist(toy / "netlist.pb.txt")
    header = with_settings(load_placement(netlist, toy / "initial.plc"), congestion_grid=(7, 5), weights="ct")
    t = ProxyCost(netlist, header).evaluate()
    assert figures["input"]["proxy"] == pytest.approx(t.proxy, abs=1e-4)
    assert t.proxy == pytest.approx(t.wirelength + t.density + 0.5 * t.congestion)
