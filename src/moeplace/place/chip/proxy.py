"""The proxy-cost evaluator the chip problem calls: full evaluation, or incremental where it pays.

Wraps the exact ProxyCost (moeplace.place.chip.cost). In incremental mode it keeps the cost state
of the last evaluated placement and, for the next one, moves only the nodes whose position or
orientation changed (annealing changes one or two macros per step), so a step costs the nets of
those macros instead of every net.
"""

from __future__ import annotations

import numpy as np

from moeplace.place.chip.cost import ProxyCost
from moeplace.place.chip.netlist import Netlist
from moeplace.place.chip.plc import PlcHeader


class ProxyEvaluator:
    """terms(x, y, orient) -> {wirelength, density, congestion, proxy}, optionally incremental."""

    def __init__(self, netlist: Netlist, header: PlcHeader, incremental: bool = False,
                 max_changed: int = 64) -> None:
        self.proxy = ProxyCost(netlist, header)
        self.incremental = incremental
        self.max_changed = max_changed
        self._state = None
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def full(self, x: np.ndarray, y: np.ndarray, orient: np.ndarray) -> dict[str, float]:
        """Evaluate every term from scratch."""
        return self.proxy.evaluate(x, y, orient).as_dict()

    def terms(self, x: np.ndarray, y: np.ndarray, orient: np.ndarray) -> dict[str, float]:
        """The cost terms of a full placement (incrementally from the previous call when few nodes moved)."""
        if not self.incremental or not hasattr(self.proxy, "state"):
            return self.full(x, y, orient)
        try:
            return self._incremental(x, y, orient)
        except ImportError:  # incremental module not available: full evaluation
            self.incremental = False
            return self.full(x, y, orient)

    def _incremental(self, x: np.ndarray, y: np.ndarray, orient: np.ndarray) -> dict[str, float]:
        """Move the changed nodes in the kept state; rebuild it when too many changed."""
        if self._last is not None:
            lx, ly, lo = self._last
            changed = np.flatnonzero((lx != x) | (ly != y) | (lo != orient))
        if self._last is None or len(changed) > self.max_changed:
            self._state = self.proxy.state(x.copy(), y.copy(), orient.copy())
            self._last = (x.copy(), y.copy(), orient.copy())
            return _as_dict(self._state.terms())
        if len(changed) == 0:
            return _as_dict(self._state.terms())
        terms = self._state.move(changed, x[changed], y[changed], orient[changed])
        self._state.accept()
        self._last = (x.copy(), y.copy(), orient.copy())
        return _as_dict(terms)


def _as_dict(terms) -> dict[str, float]:
    """CostTerms (or a dict) as a plain dict of floats."""
    if isinstance(terms, dict):
        return {k: float(v) for k, v in terms.items()}
    return {k: float(v) for k, v in terms.as_dict().items()}
