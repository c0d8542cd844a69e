"""Force-directed soft macros: shorter wires than a random start, inside the canvas, hard macros fixed."""

from __future__ import annotations

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.place.chip.force_directed import ForceDirected
from moeplace.place.chip.netlist import load_netlist, pin_positions
from moeplace.place.chip.plc import load_placement

CT = CHIP_DIR / "circuit_training"


def hpwl_loops(netlist, x, y) -> float:
    """Weighted HPWL, net by net in plain Python (independent of the vectorised code)."""
    px, py = pin_positions(netlist, x, y)
    total = 0.0
    for m in range(netlist.num_nets):
        pins = netlist.net_pins[netlist.net_ptr[m]:netlist.net_ptr[m + 1]]
        xs, ys = [px[p] for p in pins], [py[p] for p in pins]
        total += netlist.net_weight[m] * (max(xs) - min(xs) + max(ys) - min(ys))
    return total


def test_force_directed_shortens_wires_from_a_random_start() -> None:
    netlist = load_netlist(CT / "toy_macro_stdcell" / "netlist.pb.txt")
    header = load_placement(netlist, CT / "toy_macro_stdcell" / "initial.plc")
    soft, hard = netlist.soft_macros, netlist.hard_macros
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = netlist.x.copy(), netlist.y.copy()
        x[soft] = rng.uniform(0, header.width, len(soft))
        y[soft] = rng.uniform(0, header.height, len(soft))
        fd = ForceDirected(netlist, header.width, header.height, bins=(2 * header.columns, 2 * header.rows))
        nx, ny = fd.place(x, y, iterations=30)
        assert hpwl_loops(netlist, nx, ny) < 0.8 * hpwl_loops(netlist, x, y)
        np.testing.assert_array_equal(nx[hard], x[hard])
        np.testing.assert_array_equal(ny[hard], y[hard])
        w, h = netlist.width[soft], netlist.height[soft]
        assert (nx[soft] - w / 2 >= -1e-9).all() and (nx[soft] + w / 2 <= header.width + 1e-9).all()
        assert (ny[soft] - h / 2 >= -1e-9).all() and (ny[soft] + h / 2 <= header.height + 1e-9).all()


def test_force_directed_pushes_soft_macros_out_of_hard_macros() -> None:
    netlist = load_netlist(CT / "toy_macro_stdcell" / "netlist.pb.txt")
    header = load_placement(netlist, CT / "toy_macro_stdcell" / "initial.plc")
    soft, hard = netlist.soft_macros, netlist.hard_macros
    x, y = netlist.x.copy(), netlist.y.copy()
    x[soft], y[soft] = x[hard[0]], y[hard[0]]  # every soft macro starts on top of a hard macro

    def overlap_area(x, y) -> float:
        total = 0.0
        for s in soft:
            for m in hard:
                ox = min(x[s] + netlist.width[s] / 2, x[m] + netlist.width[m] / 2) - \
                    max(x[s] - netlist.width[s] / 2, x[m] - netlist.width[m] / 2)
                oy = min(y[s] + netlist.height[s] / 2, y[m] + netlist.height[m] / 2) - \
                    max(y[s] - netlist.height[s] / 2, y[m] - netlist.height[m] / 2)
                total += max(ox, 0) * max(oy, 0)
        return total

    fd = ForceDirected(netlist, header.width, header.height, bins=(2 * header.columns, 2 * header.rows))
    nx, ny = fd.place(x, y, iterations=20)
    assert overlap_area(nx, ny) < 0.1 * overlap_area(x, y)


def test_force_directed_is_deterministic() -> None:
    netlist = load_netlist(CT / "toy_macro_stdcell" / "netlist.pb.txt")
    header = load_placement(netlist, CT / "toy_macro_stdcell" / "initial.plc")
    fd = ForceDirected(netlist, header.width, header.height)
    a = fd.place(netlist.x, netlist.y, iterations=10)
    b = fd.place(netlist.x, netlist.y, iterations=10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_compiled_kernels_match_the_numpy_iterations() -> None:
    """The numba kernels run the numpy code's arithmetic in another order: equal to rounding."""
    from moeplace.data import CHIP_DIR
    from moeplace.place.chip.cost import ProxyCost
    from moeplace.place.chip.fd_kernels import HAVE_NUMBA
    from moeplace.place.chip.force_directed import ForceDirected
    from moeplace.place.chip.problem import ChipProblem

    if not HAVE_NUMBA:
        pytest.skip("numba not installed")
    p = CHIP_DIR / "ariane133"
    problem = ChipProblem.from_files(p / "netlist.pb.txt.gz", p / "legalized.plc")
    nl, h = problem.netlist, problem.header
    x, y, o = problem.positions(problem.initial_placement())
    ref, fast = (ForceDirected(nl, h.width, h.height, bins=(2 * h.columns, 2 * h.rows), backend=b)
                 for b in ("numpy", "numba"))
    assert fast.backend == "numba"
    xa, ya = ref.place(x, y, o, 10)
    xb, yb = fast.place(x, y, o, 10)
    soft = nl.soft_macros
    assert np.abs(xa - xb).max() < 1e-6 and np.abs(ya - yb).max() < 1e-6  # microns
    assert np.abs(xa[soft] - x[soft]).max() > 1.0  # the soft macros did move
    cost = ProxyCost(nl, h)
    assert cost.evaluate(xb, yb, o).proxy == pytest.approx(cost.evaluate(xa, ya, o).proxy, abs=1e-9)
