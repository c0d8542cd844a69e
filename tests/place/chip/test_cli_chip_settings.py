"""`place chip` settings: the grid from gridding / the .plc / --columns --rows, routing options over the
.plc header over Circuit Training's defaults, reported in --json; one-line errors for impossible ones."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from moeplace.cli import main
from moeplace.data import CHIP_DIR
from moeplace.place.chip.cost import ProxyCost
from moeplace.place.chip.netlist import load_netlist
from moeplace.place.chip.plc import load_placement, read_plc

TOY = CHIP_DIR / "circuit_training" / "toy_macro_stdcell"
ARIANE = CHIP_DIR / "ariane133"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOEPLACE_NO_PROGRESS", "1")


def _run(argv: list[str], capsys) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _error(argv: list[str], capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_ariane133_from_the_netlist_alone_gets_the_published_grid_and_canvas(tmp_path, capsys) -> None:
    """No .plc: the canvas is the cell area at 60 % utilisation and gridding picks 24 x 21 -- the
    canvas and grid of the Circuit Training flow's legalized.plc for this netlist. (Before gridding,
    the 10 x 10 default grid stopped with 'no legal cell left for macro ... (101 of 133)'.)"""
    out = tmp_path / "a.plc"
    figures = _run(["place", "chip", "--netlist", str(ARIANE / "netlist.pb.txt.gz"), "--method", "sa",
                    "--budget", "2s", "--out", str(out), "--json"], capsys)
    s = figures["settings"]
    published, _ = read_plc(ARIANE / "legalized.plc")
    assert (s["columns"], s["rows"], s["grid_from"]) == (published.columns, published.rows, "gridding")
    assert (s["width"], s["height"]) == pytest.approx((published.width, published.height), abs=1e-3)
    assert s["gridding"]["chosen"]["columns"] == 24 and s["gridding"]["packed"] > 0
    assert figures["sa"]["evaluations"] > 0 and figures["best_proxy"] < 3.0  # a complete placement
    written, _ = read_plc(out)
    assert (written.columns, written.rows) == (24, 21)


def test_grid_from_plc_options_or_gridding(tmp_path, capsys) -> None:
    base = ["place", "chip", "--netlist", str(TOY / "netlist.pb.txt"), "--method", "sa", "--budget", "0.2s",
            "--out", str(tmp_path / "o.plc"), "--json"]
    s = _run([*base, "--plc", str(TOY / "initial.plc")], capsys)["settings"]
    assert (s["columns"], s["rows"], s["grid_from"], s["width"], s["height"]) == (20, 10, "plc", 200, 100)
    s = _run([*base, "--plc", str(TOY / "initial.plc"), "--rows", "8"], capsys)["settings"]
    assert (s["columns"], s["rows"], s["grid_from"]) == (20, 8, "option")
    s = _run([*base, "--columns", "7", "--rows", "5"], capsys)["settings"]
    assert (s["columns"], s["rows"], s["grid_from"]) == (7, 5, "option") and s["gridding"] is None
    s = _run([*base, "--canvas", "300x150"], capsys)["settings"]
    assert s["grid_from"] == "gridding"
    assert (s["width"], s["height"], s["canvas_from"]) == (300, 150, "option")
    assert 500 <= s["columns"] * s["rows"] <= 4096


def test_a_plc_without_grid_or_canvas_lines_gets_them_from_the_netlist(tmp_path, capsys) -> None:
    plc = tmp_path / "bare.plc"
    lines = (TOY / "initial.plc").read_text().splitlines()
    plc.write_text("\n".join(ln for ln in lines if not ln.startswith(("# Columns", "# Width"))) + "\n")
    s = _run(["place", "chip", "--netlist", str(TOY / "netlist.pb.txt"), "--plc", str(plc),
              "--budget", "0.2s", "--out", str(tmp_path / "o.plc"), "--json"], capsys)["settings"]
    assert s["grid_from"] == "gridding" and s["canvas_from"] == "cell area at 60% utilisation"
    assert s["width"] > 0 and 500 <= s["columns"] * s["rows"] <= 4096


def test_routing_options_override_the_plc_header_over_the_defaults(tmp_path, capsys) -> None:
    plc = tmp_path / "routed.plc"
    text = (TOY / "initial.plc").read_text()
    plc.write_text(text.replace("# Width : 200.0  Height : 100.0",
                                "# Width : 200.0  Height : 100.0\n# Routes per micron, hor : 10  ver : 12\n"
                                "# Smoothing factor : 1"))
    base = ["place", "chip", "--netlist", str(TOY / "netlist.pb.txt"), "--plc", str(plc), "--method", "sa",
            "--budget", "0.2s", "--json"]
    s = _run([*base, "--out", str(tmp_path / "a.plc")], capsys)["settings"]
    assert (s["hroutes_per_micron"], s["vroutes_per_micron"], s["smoothing"]) == (10, 12, 1)
    assert (s["hrouting_alloc"], s["vrouting_alloc"]) == (51.79, 51.79)  # Circuit Training's defaults
    assert s["routing_from"] == {"hroutes_per_micron": "plc", "vroutes_per_micron": "plc", "smoothing": "plc",
                                 "hrouting_alloc": "default", "vrouting_alloc": "default"}
    out = tmp_path / "b.plc"
    figures = _run([*base, "--out", str(out), "--vroutes-per-micron", "20", "--hrouting-alloc", "3",
                    "--smoothing", "0"], capsys)
    s = figures["settings"]
    assert (s["hroutes_per_micron"], s["vroutes_per_micron"]) == (10, 20)
    assert (s["hrouting_alloc"], s["smoothing"]) == (3, 0)
    assert s["routing_from"]["vroutes_per_micron"] == "option"
    assert s["routing_from"]["hroutes_per_micron"] == "plc"
    # the input row is scored with these settings
    netlist = load_netlist(TOY / "netlist.pb.txt")
    header = replace(load_placement(netlist, plc), vroutes_per_micron=20.0, hrouting_alloc=3.0, smoothing=0.0)
    assert figures["input"]["proxy"] == pytest.approx(ProxyCost(netlist, header).evaluate().proxy, abs=1e-4)
    written, _ = read_plc(out)  # and the written .plc carries them
    assert (written.vroutes_per_micron, written.hrouting_alloc, written.smoothing) == (20, 3, 0)


def test_bad_settings_exit_2_naming_the_option(tmp_path, capsys) -> None:
    base = ["place", "chip", "--netlist", str(TOY / "netlist.pb.txt"), "--budget", "0.1s",
            "--out", str(tmp_path / "o.plc")]
    assert "--hroutes-per-micron" in _error([*base, "--hroutes-per-micron", "0"], capsys)
    assert "--smoothing" in _error([*base, "--smoothing", "-1"], capsys)
    assert "--vrouting-alloc" in _error([*base, "--vrouting-alloc", "nan"], capsys)
    assert "--canvas" in _error([*base, "--canvas", "wide"], capsys)
    assert "--columns" in _error([*base, "--columns", "0"], capsys)
    assert not (tmp_path / "o.plc").exists()


def test_macros_larger_than_the_canvas_exit_2_naming_the_netlist(tmp_path, capsys) -> None:
    net = tmp_path / "big.pb.txt"

    def attr(key: str, value: str) -> str:
        return f'  attr {{\n    key: "{key}"\n    value {{\n      {value}\n    }}\n  }}\n'

    meta = attr("canvas_width", "f: 100") + attr("canvas_height", "f: 100")
    macro = attr("type", 'placeholder: "MACRO"') + attr("width", "f: 60") + attr("height", "f: 60")
    macros = "".join(f'node {{\n  name: "m{k}"\n' + macro + "}\n" for k in range(3))
    net.write_text('node {\n  name: "__metadata__"\n' + meta + "}\n" + macros)
    base = ["place", "chip", "--netlist", str(net), "--budget", "0.1s", "--out", str(tmp_path / "o.plc")]
    err = _error(base, capsys)
    assert str(net) in err and "fit on no grid" in err and "10800" in err
    err = _error([*base, "--columns", "20", "--rows", "20"], capsys)
    assert str(net) in err and "fit on no grid" in err
