"""Shared fixtures of the chip tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from moeplace.place.chip import pretrain as pretrain_mod


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
