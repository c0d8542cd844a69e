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

from moeplace.place.chip.congestion import route_nets
from moeplace.place.chip.cost import CostTerms, ProxyCost
from moeplace.place.chip.netlist import NodeKind, pin_positions, positions_of
from moeplace.place.chip.wirelength import hpwl_per_net, subset_csr


@dataclass
class _Proposal:
    """A move evaluated by propose(), kept until accept() or reject()."""

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
        nl = c.netlist
        nodes = np.atleast_1d(np.asarray(nodes, np.int64))
        if len(np.unique(nodes)) != len(nodes):
            raise ValueError("nodes: each node may appear once in a move")
        new_x = np.broadcast_to(np.asarray(x, np.float64), nodes.shape).copy()
        new_y = np.broadcast_to(np.asarray(y, np.float64), nodes.shape).copy()
        new_o = (self.orient[nodes].copy() if orient is None
                 else np.broadcast_to(np.asarray(orient, np.int8), nodes.shape).copy())
        old_x, old_y, old_o = self.x[nodes].copy(), self.y[nodes].copy(), self.orient[nodes].copy()
        # New pin positions (move, measure, move back: the arrays are ours).
        pins = c.pins_of(nodes)
        self.x[nodes], self.y[nodes], self.orient[nodes] = new_x, new_y, new_o
        try:
            pin_x, pin_y = positions_of(nl, pins, self.x, self.y, self.orient)
        finally:
            self.x[nodes], self.y[nodes], self.orient[nodes] = old_x, old_y, old_o
        px, py = self.px.copy(), self.py.copy()
        px[pins], py[pins] = pin_x, pin_y
        # Macro footprints: old ones out (weight -1), new ones in (+1), in one pass.
        area, h_macro, v_macro = self.area, self.h_macro, self.v_macro
        sel = self._is_macro[nodes]
        if sel.any():
            k = int(sel.sum())
            both = np.concatenate([nodes[sel], nodes[sel]])
            xo, yo = c.overlaps_at(both, np.concatenate([old_x[sel], new_x[sel]]),
                                   np.concatenate([old_y[sel], new_y[sel]]),
                                   np.concatenate([old_o[sel], new_o[sel]]))
            sign = np.concatenate([-np.ones(k), np.ones(k)])
            area = area + np.einsum("k,kr,kc->rc", sign, yo, xo)
            hard = self._is_hard[both]
            if hard.any():
                ox, oy = np.concatenate([old_x[sel], new_x[sel]]), np.concatenate([old_y[sel], new_y[sel]])
                oo = np.concatenate([old_o[sel], new_o[sel]])
                dh, dv = c.macro_demand_at(both[hard], ox[hard], oy[hard], oo[hard], sign[hard])
                h_macro, v_macro = h_macro + dh, v_macro + dv
        # Nets of the moved nodes: new HPWL; re-route those whose pin cells changed.
        nets = c.nets_of(nodes)
        net_hpwl, h_raw, v_raw = self.net_hpwl, self.h_raw, self.v_raw
        if len(nets):
            ptr, pos = subset_csr(nl.net_ptr, nets)
            sub = nl.net_pins[pos]
            net_hpwl = net_hpwl.copy()
            net_hpwl[nets] = hpwl_per_net(px, py, ptr, sub)
            g = c.cgrid
            col0, row0 = g.cell_of(self.px[sub], self.py[sub])
            col1, row1 = g.cell_of(px[sub], py[sub])
            w0 = c.routed_weights(self.px[sub], self.py[sub], ptr, nl.net_weight[nets])  # 0: off canvas
            w1 = c.routed_weights(px[sub], py[sub], ptr, nl.net_weight[nets])
            moved = np.logical_or.reduceat((col0 != col1) | (row0 != row1), ptr[:-1]) | (w0 != w1)
            if moved.any():
                lengths = np.diff(ptr)[moved]
                keep = np.repeat(moved, np.diff(ptr))
                part = np.zeros(len(lengths) + 1, np.int64)
                np.cumsum(lengths, out=part[1:])
                dh, dv = route_nets(np.concatenate([col0[keep], col1[keep]]),
                                    np.concatenate([row0[keep], row1[keep]]),
                                    np.concatenate([part, part[1:] + part[-1]]),
                                    np.concatenate([-w0[moved], w1[moved]]), g.columns, g.rows)
                h_raw, v_raw = h_raw + dh, v_raw + dv
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
