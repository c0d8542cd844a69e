"""`moeplace place chip` end to end on a small netlist, and its one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from moeplace.cli import main
from moeplace.data import CHIP_DIR
from moeplace.place.chip.cost import ProxyCost
from moeplace.place.chip.netlist import load_netlist
from moeplace.place.chip.plc import load_placement

TOY = CHIP_DIR / "circuit_training" / "toy_macro_stdcell"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOEPLACE_NO_PROGRESS", "1")


def test_cli_runs_both_methods_and_writes_plc_and_png(tmp_path, capsys) -> None:
    out, png = tmp_path / "best.plc", tmp_path / "best.png"
    rc = main(["place", "chip", "--netlist", str(TOY / "netlist.pb.txt"), "--plc", str(TOY / "initial.plc"),
               "--method", "both", "--budget", "2s", "--out", str(out), "--png", str(png), "--json",
               "--seed", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| input |" in text and "| sa |" in text and "| rl |" in text
    figures = json.loads(text.strip().splitlines()[-1])
    assert figures["sa"]["evaluations"] > 10 and figures["rl"]["evaluations"] >= 1
    best = min(figures["input"]["proxy"], figures["sa"]["proxy"], figures["rl"]["proxy"])
    assert figures["best_proxy"] == pytest.approx(best, abs=1e-4)
    # the written .plc, read back by the format reader, has the reported cost
    netlist = load_netlist(TOY / "netlist.pb.txt")
    header = load_placement(netlist, out)
    assert ProxyCost(netlist, header).evaluate().proxy == pytest.approx(figures["best_proxy"], abs=1e-9)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_cli_keeps_the_input_when_no_method_beats_it(tmp_path, capsys) -> None:
    good = tmp_path / "good.plc"
    argv = ["place", "chip", "--netlist", str(TOY / "netlist.pb.txt"), "--plc", str(TOY / "initial.plc"),
            "--seed", "1", "--json"]
    assert main([*argv, "--method", "sa", "--budget", "2s", "--out", str(good)]) == 0
    sa_proxy = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["best_proxy"]
    out = tmp_path / "again.plc"
    argv[argv.index(str(TOY / "initial.plc"))] = str(good)
    assert main([*argv, "--method", "rl", "--budget", "0.05s", "--out", str(out)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["input"]["proxy"] == pytest.approx(sa_proxy, abs=1e-4)  # table rows are rounded
    if figures["rl"]["proxy"] > figures["input"]["proxy"]:  # the usual case after 0.05 s of RL
        assert figures["best"] == "input"
    netlist = load_netlist(TOY / "netlist.pb.txt")
    header = load_placement(netlist, out)
    assert ProxyCost(netlist, header).evaluate().proxy == pytest.approx(figures["best_proxy"], abs=1e-9)
    best = min(figures["input"]["proxy"], figures["rl"]["proxy"])
    assert figures["best_proxy"] == pytest.approx(best, abs=1e-4)


def _error(argv: list[str], capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_cli_malformed_netlist_exits_2_with_line_number(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.pb.txt"
    bad.write_text('node {\n  name: "a"\n  attr {\n    key: "type"\n')
    err = _error(["place", "chip", "--netlist", str(bad), "--out", str(tmp_path / "o.plc")], capsys)
    assert str(bad) in err


def test_cli_missing_file_and_bad_budget_exit_2(tmp_path, capsys) -> None:
    err = _error(["place", "chip", "--netlist", str(tmp_path / "none.pb.txt")], capsys)
    assert "not found" in err
    err = _error(["place", "chip", "--netlist", str(TOY / "netlist.pb.txt"), "--budget", "soon"], capsys)
    assert "--budget" in err


def test_cli_no_legal_cell_exits_2(tmp_path, capsys) -> None:
    sample = CHIP_DIR / "circuit_training" / "sample_clustered"
    err = _error(["place", "chip", "--netlist", str(sample / "netlist.pb.txt"), "--plc",
                  str(sample / "initial.plc"), "--columns", "1", "--rows", "1", "--budget", "1s",
                  "--out", str(tmp_path / "o.plc")], capsys)
    assert "no legal cell" in err
    assert not (tmp_path / "o.plc").exists()


def test_cli_bad_rl_envs_exits_2(tmp_path, capsys) -> None:
    err = _error(["place", "chip", "--netlist", str(TOY / "netlist.pb.txt"), "--method", "rl",
                  "--rl-envs", "0", "--out", str(tmp_path / "o.plc")], capsys)
    assert "--rl-envs" in err
    assert not (tmp_path / "o.plc").exists()


@pytest.mark.slow
def test_cli_rl_with_worker_processes(tmp_path, capsys) -> None:
    rc = main(["place", "chip", "--netlist", str(TOY / "netlist.pb.txt"), "--plc", str(TOY / "initial.plc"),
               "--method", "rl", "--policy", "none", "--collector", "process", "--rl-envs", "4",
               "--budget", "3s",
               "--out", str(tmp_path / "o.plc"), "--json"])
    assert rc == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["rl"]["evaluations"] % 8 == 0 and figures["rl"]["evaluations"] >= 8  # 2 workers x 4
