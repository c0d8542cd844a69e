"""Wire masks against brute force: for random partial placements, the mask at every cell equals the
weighted HPWL growth of the current macro's nets, recomputed from scratch over the known pins
(ports, fixed macros, placed hard macros; soft macros not counted)."""

from __future__ import annotations

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.place.chip.batched import BatchedChipEnv
from moeplace.place.chip.generate import generate_design
from moeplace.place.chip.netlist import NodeKind, pin_positions
from moeplace.place.chip.problem import ChipProblem

CT = CHIP_DIR / "circuit_training"


def _brute(problem: ChipProblem, placement: np.ndarray, node: int) -> np.ndarray:
    """Weighted HPWL growth of `node`'s nets for each cell, from the full pin list of each net."""
    nl, g = problem.netlist, problem.grid
    x, y = nl.x.copy(), nl.y.copy()
    placed = np.flatnonzero(placement >= 0)
    cx, cy = g.index_center(placement[placed])
    x[problem.macros[placed]], y[problem.macros[placed]] = cx, cy
    owner = np.where(nl.parent >= 0, nl.parent, np.arange(nl.num_nodes))
    known_node = np.zeros(nl.num_nodes, bool)
    known_node[nl.ports] = True
    known_node[(nl.kind == NodeKind.HARD_MACRO) & nl.fixed] = True
    known_node[problem.macros[placed]] = True
    me = problem.macros[node]
    nets = [k for k in range(nl.num_nets)
            if (owner[nl.net_pins[nl.net_ptr[k]:nl.net_ptr[k + 1]]] == me).any()]
    out = np.zeros(g.num_cells)
    for c in range(g.num_cells):
        xc, yc = x.copy(), y.copy()
        (cx1,), (cy1,) = g.index_center(np.array([c]))
        xc[me], yc[me] = cx1, cy1
        px, py = pin_positions(nl, xc, yc)
        for k in nets:
            pins = nl.net_pins[nl.net_ptr[k]:nl.net_ptr[k + 1]]
            mine = owner[pins] == me
            known = known_node[owner[pins]] & ~mine
            if not mine.any() or not known.any():
                continue
            a, b = pins[known], pins[known | mine]
            before = np.ptp(px[a]) + np.ptp(py[a])
            after = np.ptp(px[b]) + np.ptp(py[b])
            out[c] += nl.net_weight[k] * (after - before)
    return out


def _problem(design: str) -> ChipProblem:
    if design == "generated":  # ports on the boundary, fixed pins, many nets per macro
        g = generate_design(3, min_macros=8, max_macros=8)
        return ChipProblem(g.netlist, g.header, fd_iterations=1)
    d = CT / design
    return ChipProblem.from_files(d / "netlist.pb.txt", d / "initial.plc", fd_iterations=1)


@pytest.mark.parametrize("design", ["toy_macro_stdcell", "sample_clustered", "generated"])
def test_wiremask_equals_brute_force_hpwl_growth(design) -> None:
    problem = _problem(design)
    env = BatchedChipEnv(problem, 3)
    rng = np.random.default_rng(0)
    obs, _ = env.reset()
    checked = 0
    for step in range(min(problem.num_nodes, 4)):
        for e in range(env.num_envs):
            want = _brute(problem, env.placement[e], step)
            np.testing.assert_allclose(obs["wiremask"][e], want, rtol=1e-5, atol=1e-3)
            checked += 1
        actions = [rng.choice(np.flatnonzero(m)) for m in env.mask]
        obs, *_ = env.step(actions)
    assert checked >= 3


def test_wiremask_is_zero_for_a_macro_with_no_known_neighbour_and_grows_after_placement() -> None:
    d = CT / "toy_macro_stdcell"
    problem = ChipProblem.from_files(d / "netlist.pb.txt", d / "initial.plc", fd_iterations=1)
    env = BatchedChipEnv(problem, 1)
    obs, _ = env.reset()
    first = obs["wiremask"][0]
    # the mask is a (row term + column term): its differences are separable
    grid = first.reshape(problem.grid.rows, problem.grid.columns)
    np.testing.assert_allclose(grid - grid[:, :1] - grid[:1, :] + grid[0, 0], 0, atol=1e-6)


def test_untrained_policy_greedy_places_each_macro_where_brute_force_wire_growth_is_least() -> None:
    """A fresh ChipPolicy (conv head at zero, edge weight 0) is the wire-mask greedy: its greedy episode
    puts every macro on the legal cell of least HPWL growth (lowest index among ties)."""
    import torch

    from moeplace.place.chip.policy import ChipPolicy
    from moeplace.place.chip.transfer import policy_episodes

    problem = _problem("generated")
    torch.manual_seed(0)
    policy = ChipPolicy(hidden=16, rounds=1, channels=4)
    got = policy_episodes(problem, policy, 1, greedy=True)[0]["placement"]
    placement = np.full(problem.num_nodes, -1, np.int64)
    for node in range(problem.num_nodes):
        growth = _brute(problem, placement, node)
        legal = problem.legal_mask(placement, node)
        best = growth[legal].min()
        placement[node] = np.flatnonzero(legal & (growth <= best + 1e-6 * max(1.0, abs(best))))[0]
    np.testing.assert_array_equal(got, placement)
