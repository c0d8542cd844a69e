"""Wire masks: for the macro to place next, the weighted HPWL each grid cell would add (batched over envs).

As in MaskPlace (Lai et al., NeurIPS 2022), the policy sees, for every cell, how much the
wirelength of the nets of the current macro grows if it goes there, given what is fixed so far:
ports, fixed macros and the hard macros already placed (soft macros are placed only at the end, so
they do not count). Per net the growth is separable: HPWL increment = x-increment(column) +
y-increment(row), with the macro's own pin offsets, so one mask costs O(nets of the macro x
(columns + rows)) per env. Each env keeps the bounding box of the known pins of every net that
touches a movable hard macro; placing a macro widens the boxes of its nets.
"""

from __future__ import annotations

import numpy as np

from moeplace.place.chip.netlist import NodeKind, pin_positions
from moeplace.place.chip.problem import ChipProblem

INF = np.inf


class WireMask:
    """Per-env net bounding boxes and the wire mask [N, cells] of each movable macro of a ChipProblem."""

    def __init__(self, problem: ChipProblem) -> None:
        nl, g = problem.netlist, problem.grid
        self.rows, self.cols = g.rows, g.columns
        self.col_x, self.row_y = g.col_centers(), g.row_centers()
        n_nodes = nl.num_nodes
        owner = np.where(nl.parent >= 0, nl.parent, np.arange(n_nodes))
        px, py = pin_positions(nl)
        net_of = np.repeat(np.arange(nl.num_nets), nl.net_sizes())
        pin_owner = owner[nl.net_pins]
        node_of = np.full(n_nodes, -1, np.int64)
        node_of[problem.macros] = np.arange(problem.num_nodes)
        mover = node_of[pin_owner]  # movable-macro index of each net pin, -1 for others
        touched = np.unique(net_of[mover >= 0])
        local = np.full(nl.num_nets, -1, np.int64)
        local[touched] = np.arange(len(touched))
        self.weight = nl.net_weight[touched].astype(np.float64)
        # static known pins: ports and fixed hard macros (their pins)
        kind = nl.kind[pin_owner]
        fixed_hard = (kind == NodeKind.HARD_MACRO) & nl.fixed[pin_owner]
        static = (mover < 0) & ((kind == NodeKind.PORT) | fixed_hard)
        static &= local[net_of] >= 0
        box = np.empty((len(touched), 4))
        box[:, 0], box[:, 1], box[:, 2], box[:, 3] = INF, -INF, INF, -INF
        k, xs, ys = local[net_of[static]], px[nl.net_pins[static]], py[nl.net_pins[static]]
        np.minimum.at(box[:, 0], k, xs)
        np.maximum.at(box[:, 1], k, xs)
        np.minimum.at(box[:, 2], k, ys)
        np.maximum.at(box[:, 3], k, ys)
        self.static_box = box
        # per movable macro: its nets and the min/max offsets of its pins on each (relative to its centre)
        self.nets: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []  # [K, 4]: dx_min, dx_max, dy_min, dy_max
        on = mover >= 0
        m_all, k_all = mover[on], local[net_of[on]]
        dx_all = px[nl.net_pins[on]] - nl.x[pin_owner[on]]
        dy_all = py[nl.net_pins[on]] - nl.y[pin_owner[on]]
        order = np.lexsort((k_all, m_all))
        m_all, k_all, dx_all, dy_all = m_all[order], k_all[order], dx_all[order], dy_all[order]
        bounds = np.searchsorted(m_all, np.arange(problem.num_nodes + 1))
        for i in range(problem.num_nodes):
            s, e = bounds[i], bounds[i + 1]
            ks, first = np.unique(k_all[s:e], return_index=True)
            off = np.empty((len(ks), 4))
            if len(ks):
                off[:, 0] = np.minimum.reduceat(dx_all[s:e], first)
                off[:, 1] = np.maximum.reduceat(dx_all[s:e], first)
                off[:, 2] = np.minimum.reduceat(dy_all[s:e], first)
                off[:, 3] = np.maximum.reduceat(dy_all[s:e], first)
            self.nets.append(ks)
            self.offsets.append(off)
        self.scale = float(g.width + g.height)
        self.box = self.static_box[None].copy()

    def reset(self, n_envs: int) -> None:
        """Nothing placed in any of `n_envs` envs: only ports and fixed macros known."""
        self.box = np.repeat(self.static_box[None], n_envs, axis=0)

    def place(self, envs: np.ndarray, node: int, cells: np.ndarray) -> None:
        """Macro `node` put on `cells` in `envs`: widen the boxes of its nets there."""
        ks, off = self.nets[node], self.offsets[node]
        if len(ks) == 0 or len(envs) == 0:
            return
        x = self.col_x[cells % self.cols][:, None]
        y = self.row_y[cells // self.cols][:, None]
        sub = self.box[envs[:, None], ks[None, :]]  # [k, K, 4]
        sub[..., 0] = np.minimum(sub[..., 0], x + off[:, 0])
        sub[..., 1] = np.maximum(sub[..., 1], x + off[:, 1])
        sub[..., 2] = np.minimum(sub[..., 2], y + off[:, 2])
        sub[..., 3] = np.maximum(sub[..., 3], y + off[:, 3])
        self.box[envs[:, None], ks[None, :]] = sub

    def mask(self, node: int) -> np.ndarray:
        """[N, cells]: weighted HPWL increase of the nets of `node` (microns) for each cell, every env."""
        ks, off = self.nets[node], self.offsets[node]
        n_env = self.box.shape[0]
        if len(ks) == 0:
            return np.zeros((n_env, self.rows * self.cols))
        b, w = self.box[:, ks], self.weight[ks]  # [N, K, 4], [K]
        wx = _axis_growth(b[..., 0], b[..., 1], self.col_x, off[:, 0], off[:, 1], w)  # [N, C]
        wy = _axis_growth(b[..., 2], b[..., 3], self.row_y, off[:, 2], off[:, 3], w)  # [N, R]
        return (wy[:, :, None] + wx[:, None, :]).reshape(n_env, -1)


def _axis_growth(lo: np.ndarray, hi: np.ndarray, centers: np.ndarray, dmin: np.ndarray, dmax: np.ndarray,
                 w: np.ndarray) -> np.ndarray:
    """Sum over nets of w * (span of [lo, hi] joined with the pins at centre c, minus the span of [lo, hi]);
    nets with no known pin yet (empty box) add nothing. lo, hi [N, K]; centers [P] -> [N, P]."""
    known = np.isfinite(lo)
    lo_, hi_ = np.where(known, lo, 0.0), np.where(known, hi, 0.0)
    c = centers[None, None, :]
    top = np.maximum(hi_[..., None], c + dmax[None, :, None])
    bottom = np.minimum(lo_[..., None], c + dmin[None, :, None])
    grow = top - bottom - (hi_ - lo_)[..., None]
    return np.einsum("nkp,nk->np", grow, known * w[None, :])
