"""Shared fixtures of the chip tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from moeplace.place.chip import pretrain as pretrain_mod
from moeplace.place.chip.corpus import generate_corpus, load_corpus
from moeplace.place.chip.problem import ChipProblem


@pytest.fixture
def ctrl_c_in_rollout(monkeypatch) -> Callable[[int], Callable[[], None]]:
    """`ctrl_c_in_rollout(n)` makes the n-th pre-training rollout raise KeyboardInterrupt (Ctrl-C in
    the middle of an update) and returns the function that puts the real rollout back."""

    def arm(n: int) -> Callable[[], None]:
        real, calls = pretrain_mod.CorpusCollector.collect, {"n": 0}

        def collect(self, weights, n_steps):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(self, weights, n_steps)

        monkeypatch.setattr(pretrain_mod.CorpusCollector, "collect", collect)
        return lambda: monkeypatch.setattr(pretrain_mod.CorpusCollector, "collect", real)

    return arm


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    """One tiny generated design folder (netlist.pb.txt, initial.plc): 4-6 hard macros."""
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, 1, seed=8, min_macros=4, max_macros=6, show_progress=False)
    return out / "design_0000"


@pytest.fixture(scope="module")
def problem(design):
    """The RL problem of `design` (soft macros by 2 force-directed iterations)."""
    d = load_corpus([design], builtin=False)[0]
    return ChipProblem(d.netlist, d.header, soft="fd", fd_iterations=2)
