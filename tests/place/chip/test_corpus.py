"""The corpus: `place chip generate` output folders, its one-line errors, interrupted runs, and the loader
(generated designs + shipped samples + ibm01, never the held-out Ariane133)."""

from __future__ import annotations

import json
import shutil

import pytest

from moeplace.cli import main
from moeplace.data import CHIP_DIR
from moeplace.errors import InputError
from moeplace.place.chip import corpus as corpus_mod
from moeplace.place.chip.corpus import INDEX, corpus_entries, generate_corpus, is_held_out, load_corpus

ARGS = ["--min-macros", "20", "--max-macros", "30"]


def _error(argv: list[str], capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_cli_writes_designs_index_and_pngs(tmp_path, capsys) -> None:
    out = tmp_path / "c"
    rc = main(["place", "chip", "generate", "--count", "2", "--out", str(out), "--seed", "7", "--png",
               "--json", *ARGS])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| design_0000 |" in text and "| design_0001 |" in text
    figures = json.loads(text.strip().splitlines()[-1])
    index = json.loads((out / INDEX).read_text())
    assert figures["hard_macros"] == [d["hard_macros"] for d in index["designs"]]
    for d in ("design_0000", "design_0001"):
        assert {p.name for p in (out / d).iterdir()} == {"netlist.pb.txt", "initial.plc", "placement.png"}
        assert (out / d / "placement.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left


@pytest.mark.parametrize("extra, needle", [
    (["--count", "0"], "--count"),
    (["--count", "1", "--min-macros", "40", "--max-macros", "30"], "--max-macros"),
    (["--count", "1", "--min-macros", "0"], "--min-macros"),
    (["--count", "1", "--max-macros", "501"], "--max-macros"),
    (["--count", "1", "--seed", "-1"], "--seed"),
])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, extra, needle) -> None:
    err = _error(["place", "chip", "generate", "--out", str(tmp_path / "o"), *extra], capsys)
    assert needle in err
    assert not (tmp_path / "o").exists()


def test_cli_unwritable_or_foreign_out_exits_2(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _error(["place", "chip", "generate", "--count", "1", "--out", str(blocker / "sub"), *ARGS], capsys)
    assert "--out" in err and str(blocker) in err
    err = _error(["place", "chip", "generate", "--count", "1", "--out", str(blocker), *ARGS], capsys)
    assert "not a folder" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    err = _error(["place", "chip", "generate", "--count", "1", "--out", str(foreign), *ARGS], capsys)
    assert "--overwrite" in err and not (foreign / INDEX).exists()
    argv = ["place", "chip", "generate", "--count", "1", "--out", str(foreign), "--overwrite", *ARGS]
    assert main(argv) == 0
    assert (foreign / "notes.txt").read_text() == "mine"
    assert (foreign / "design_0000" / "initial.plc").is_file()


def test_regenerating_a_corpus_replaces_it(tmp_path) -> None:
    out = tmp_path / "c"
    generate_corpus(out, 3, seed=1, min_macros=20, max_macros=25, png=True, show_progress=False)
    generate_corpus(out, 2, seed=2, min_macros=20, max_macros=25, show_progress=False)
    index = json.loads((out / INDEX).read_text())
    assert index["seed"] == 2 and [d["folder"] for d in index["designs"]] == ["design_0000", "design_0001"]
    assert not (out / "design_0002").exists()  # the old third design is gone
    assert not (out / "design_0000" / "placement.png").exists()  # no stale picture of the old design
    fresh = tmp_path / "fresh"
    generate_corpus(fresh, 2, seed=2, min_macros=20, max_macros=25, show_progress=False)
    f = "design_0001/netlist.pb.txt"
    assert (fresh / f).read_bytes() == (out / f).read_bytes()


def test_interrupted_run_leaves_whole_designs_and_a_valid_index(tmp_path, monkeypatch) -> None:
    out = tmp_path / "c"
    real = corpus_mod.write_plc
    calls = []

    def flaky(path, *a, **kw):
        calls.append(path)
        if len(calls) == 2:  # the second design: its netlist is written, then Ctrl-C
            raise KeyboardInterrupt
        real(path, *a, **kw)

    monkeypatch.setattr(corpus_mod, "write_plc", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(out, 3, seed=0, min_macros=20, max_macros=25, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == [INDEX, "design_0000"]  # no half design, no temp files
    index = json.loads((out / INDEX).read_text())
    assert not index["complete"] and [d["folder"] for d in index["designs"]] == ["design_0000"]
    assert {p.name for p in (out / "design_0000").iterdir()} == {"netlist.pb.txt", "initial.plc"}
    assert [d.name for d in load_corpus([out], builtin=False)] == ["c/design_0000"]


def test_load_corpus_gives_generated_and_shipped_designs_never_ariane(tmp_path) -> None:
    out = tmp_path / "gen"
    generate_corpus(out, 2, seed=3, min_macros=20, max_macros=25, show_progress=False)
    designs = load_corpus([out])
    names = [d.name for d in designs]
    assert names[:2] == ["gen/design_0000", "gen/design_0001"]
    assert "ibm01" in names and "ct/toy_macro_stdcell" in names and "ct/sample_clustered" in names
    assert not any("ariane" in n.lower() for n in names)
    assert not any(is_held_out(d.netlist) for d in designs)
    ibm = designs[names.index("ibm01")]
    assert len(ibm.netlist.hard_macros) == 246 and (ibm.header.columns, ibm.header.rows) == (48, 48)
    assert "ct/macro_tiles_10x10" not in names  # no hard macro to place (its macros read as soft)
    assert "ct/macro_tiles_10x10" in [d.name for d in load_corpus([], min_hard_macros=0)]
    gen = designs[0]
    assert gen.header.columns == json.loads((out / INDEX).read_text())["designs"][0]["grid"][0]


def test_ariane133_is_refused_by_path_and_by_content(tmp_path) -> None:
    with pytest.raises(InputError, match="held-out"):
        load_corpus([CHIP_DIR / "ariane133"])
    copy = tmp_path / "my_design"  # a renamed copy elsewhere is still recognised
    copy.mkdir()
    shutil.copy(CHIP_DIR / "ariane133" / "netlist.pb.txt.gz", copy / "netlist.pb.txt.gz")
    shutil.copy(CHIP_DIR / "ariane133" / "legalized.plc", copy / "initial.plc")
    (entry,) = corpus_entries([copy], builtin=False)
    with pytest.raises(InputError, match="held-out"):  # outside the data folder: known by its macros
        entry.load()


def test_loader_bad_folder_is_an_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match="not a corpus folder"):
        corpus_entries([tmp_path])
    (tmp_path / INDEX).write_text("{not json")
    with pytest.raises(InputError, match="corpus index"):
        corpus_entries([tmp_path])


@pytest.mark.slow
def test_every_shipped_corpus_design_can_be_placed_legally() -> None:
    from moeplace.place.chip.problem import ChipProblem

    for d in load_corpus([]):
        problem = ChipProblem(d.netlist, d.header, soft="fixed", fd_iterations=0)
        assert problem.is_legal(problem.initial_placement()), d.name
