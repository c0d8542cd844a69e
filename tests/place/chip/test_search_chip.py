"""Chip annealing: the brute-force optimum on a tiny grid; the chip driver improves and stays legal."""

from __future__ import annotations

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.place.chip.anneal import anneal_chip
from moeplace.place.chip.netlist import load_netlist
from moeplace.place.chip.plc import load_placement
from moeplace.place.chip.problem import ChipProblem
from moeplace.place.search import simulated_annealing

CT = CHIP_DIR / "circuit_training"


def tiny(columns: int, rows: int, **kw) -> ChipProblem:
    netlist = load_netlist(CT / "toy_macro_stdcell" / "netlist.pb.txt")
    header = load_placement(netlist, CT / "toy_macro_stdcell" / "initial.plc")
    header.columns, header.rows = columns, rows
    return ChipProblem(netlist, header, **kw)


def test_annealing_finds_brute_force_optimum_on_tiny_grid() -> None:
    problem = tiny(6, 4, soft="fixed")  # soft macros stay put: the cost is a pure function of the hard macros
    best = np.inf
    first = problem.legal_mask(np.array([-1, -1]), 0)
    for a in np.flatnonzero(first):
        for b in np.flatnonzero(problem.legal_mask(np.array([a, -1]), 1)):
            best = min(best, problem.cost(np.array([a, b])))
    result = simulated_annealing(problem, max_evals=1500, seed=0, progress=False)
    assert problem.is_legal(result.placement)
    assert result.cost == pytest.approx(best)


def test_chip_annealer_improves_on_its_start_and_stays_legal() -> None:
    problem = tiny(20, 10, soft="fixed", orientations=True)
    start = problem.snap()
    problem.refresh_soft(start, 20)
    start_cost = problem.cost(start)
    result = anneal_chip(problem, max_evals=400, rounds=4, seed=0, progress=False)
    assert problem.is_legal(result.placement)
    assert result.cost <= start_cost + 1e-12
    assert result.evaluations >= 400
    # the reported cost is the cost of the returned hard + soft placement
    problem.soft_x, problem.soft_y = result.soft_x, result.soft_y
    assert problem.cost(result.placement) == pytest.approx(result.cost)


def test_chip_annealer_is_deterministic_with_an_evaluation_budget() -> None:
    a = anneal_chip(tiny(20, 10, soft="fixed", orientations=True), max_evals=200, rounds=2, seed=5,
                    progress=False)
    b = anneal_chip(tiny(20, 10, soft="fixed", orientations=True), max_evals=200, rounds=2, seed=5,
                    progress=False)
    np.testing.assert_array_equal(a.placement, b.placement)
    assert a.cost == b.cost


@pytest.mark.slow
def test_annealing_beats_the_ariane133_reference_placement() -> None:
    from moeplace.place.chip.cost import ProxyCost

    path = CHIP_DIR / "ariane133"
    netlist = load_netlist(path / "netlist.pb.txt.gz")
    header = load_placement(netlist, path / "legalized.plc")
    reference = ProxyCost(netlist, header).evaluate().proxy
    problem = ChipProblem(netlist, header, orientations=True, soft="fixed")
    result = anneal_chip(problem, max_evals=3000, rounds=6, seed=0, progress=False)
    assert problem.is_legal(result.placement)
    placed = problem.to_netlist(result.placement)
    # the returned cost is the exact (full, non-incremental) proxy cost of the returned placement
    assert ProxyCost(placed, header).evaluate().proxy == pytest.approx(result.cost, abs=1e-9)
    assert result.cost < reference


def test_chip_annealer_stops_on_ctrl_c_and_keeps_the_best() -> None:
    problem = tiny(20, 10, soft="fixed", orientations=True)
    calls = {"n": 0}
    real_cost = problem.cost

    def cost(placement: np.ndarray) -> float:
        calls["n"] += 1
        if calls["n"] == 150:
            raise KeyboardInterrupt
        return real_cost(placement)

    problem.cost = cost  # type: ignore[method-assign]
    result = anneal_chip(problem, max_evals=10_000, rounds=4, seed=0, progress=False)
    assert result.interrupted and calls["n"] == 150
    assert problem.is_legal(result.placement)
    assert result.cost == pytest.approx(real_cost(result.placement))
