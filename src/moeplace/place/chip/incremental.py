"""Incremental proxy cost: re-evaluate after a few nodes move, in time proportional to their nets.

The state keeps the pin positions, per-net HPWL, the macro area map, the raw (unsmoothed) net
routing demand and the macros' routing allocation. Moving nodes updates only the nets touching
them (old routes out, new routes in) and the moved macros' footprints; smoothing and the top-k
means are then redone on the small grid maps. `move` (or `propose`) evaluates a move without
changing the state; `accept` keeps it, `reject` (or another `move`) drops it. Floating-point sums
drift by ~1e-12 per move; `refresh()` recomputes everything from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moeplace.place.chip.cost import CostTerms, ProxyCost
from moeplace.place.chip.netlist import NodeKind, pin_positions, positions_of


@dataclass
class _Proposal:
    nodes: np.ndarray
    x: np.ndarray
    y: np.ndarray
    orient: np.ndarray
    pins: np.ndarray
    px: np.ndarray
    py: np.ndarray
    nets: np.ndarray
    net_hpwl: np.ndarray
    area: np.ndarray
    h_raw: np.ndarray
    v_raw: np.ndarray
    h_macro: np.ndarray
    v_macro: np.ndarray
    terms: CostTerms


class IncrementalProxyCost:
    """A placement with its cost, updated cheaply when a few nodes (hard/soft macros, ports) move."""

    def __init__(self, cost: ProxyCost, x: np.ndarray, y: np.ndarray, orient: np.ndarray) -> None:
        self.cost = cost
        self.x = np.array(x, np.float64)
        self.y = np.array(y, np.float64)
        self.orient = np.array(orient, np.int8)
        self._pending: _Proposal | None = None
        kind = cost.netlist.kind
        self._is_macro = (kind == NodeKind.HARD_MACRO) | (kind == NodeKind.SOFT_MACRO)
        self._is_hard = kind == NodeKind.HARD_MACRO
        self.refresh()

    def refresh(self) -> CostTerms:
        """Recompute every cached quantity from the current positions."""
        c = self.cost
        self.px, self.py = pin_positions(c.netlist, self.x, self.y, self.orient)
        self.net_hpwl = c.net_hpwl(self.px, self.py)
        self.area = c.area_map(c.macros, self.x, self.y, self.orient)
        self.h_raw, self.v_raw = c.net_demand(self.px, self.py)
        self.h_macro, self.v_macro = c.macro_demand_of(c.hard, self.x, self.y, self.orient)
        self._terms = c.terms(self.net_hpwl, self.area, self.h_raw, self.v_raw, self.h_macro, self.v_macro)
        self._pending = None
        return self._terms

    def terms(self) -> CostTerms:
        """Cost of the current (accepted) placement."""
        return self._terms

    def propose(self, nodes, x, y, orient=None) -> CostTerms:
        """Cost if `nodes` moved to centres (x, y) (and orientations); the state is unchanged."""
        c = self.cost
        nodes = np.atleast_1d(np.asarray(nodes, np.int64))
        if len(np.unique(nodes)) != len(nodes):
            raise ValueError("nodes: each node may appear once in a move")
        new_x = np.broadcast_to(np.asarray(x, np.float64), nodes.shape).copy()
        new_y = np.broadcast_to(np.asarray(y, np.float64), nodes.shape).copy()
        new_o = (self.orient[nodes].copy() if orient is None
                 else np.broadcast_to(np.asarray(orient, np.int8), nodes.shape).copy())
        pins = c.pins_of(nodes)
        nets = c.nets_of(nodes)
        old = (self.x[nodes].copy(), self.y[nodes].copy(), self.orient[nodes].copy())
        # Old contributions of the affected nets and moved macros.
        macros = nodes[self._is_macro[nodes]]
        hard = nodes[self._is_hard[nodes]]
        area = self.area - c.area_map(macros, self.x, self.y, self.orient)
        h_old, v_old = c.net_demand(self.px, self.py, nets)
        hm_old, vm_old = c.macro_demand_of(hard, self.x, self.y, self.orient)
        # Move, measure, move back (the arrays are ours; no copy of the whole placement).
        self.x[nodes], self.y[nodes], self.orient[nodes] = new_x, new_y, new_o
        try:
            px, py = self.px.copy(), self.py.copy()
            px[pins], py[pins] = positions_of(c.netlist, pins, self.x, self.y, self.orient)
            area += c.area_map(macros, self.x, self.y, self.orient)
            h_new, v_new = c.net_demand(px, py, nets)
            hm_new, vm_new = c.macro_demand_of(hard, self.x, self.y, self.orient)
        finally:
            self.x[nodes], self.y[nodes], self.orient[nodes] = old
        net_hpwl = self.net_hpwl.copy()
        net_hpwl[nets] = c.net_hpwl(px, py, nets)
        h_raw, v_raw = self.h_raw - h_old + h_new, self.v_raw - v_old + v_new
        h_macro, v_macro = self.h_macro - hm_old + hm_new, self.v_macro - vm_old + vm_new
        terms = c.terms(net_hpwl, area, h_raw, v_raw, h_macro, v_macro)
        self._pending = _Proposal(nodes, new_x, new_y, new_o, pins, px, py, nets, net_hpwl, area,
                                  h_raw, v_raw, h_macro, v_macro, terms)
        return terms

    move = propose  # the name SA/RL code reads best with: terms = state.move(...); state.accept()

    def accept(self) -> CostTerms:
        """Keep the last proposed move; returns the new cost."""
        p = self._pending
        if p is None:
            raise RuntimeError("accept() without a pending move()")
        self.x[p.nodes], self.y[p.nodes], self.orient[p.nodes] = p.x, p.y, p.orient
        self.px, self.py, self.net_hpwl, self.area = p.px, p.py, p.net_hpwl, p.area
        self.h_raw, self.v_raw, self.h_macro, self.v_macro = p.h_raw, p.v_raw, p.h_macro, p.v_macro
        self._terms = p.terms
        self._pending = None
        return self._terms

    def reject(self) -> CostTerms:
        """Drop the last proposed move; returns the unchanged cost."""
        self._pending = None
        return self._terms

    commit, revert = accept, reject
