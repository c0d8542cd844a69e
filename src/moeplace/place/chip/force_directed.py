"""Force-directed placement of soft macros (clustered standard cells) around fixed hard macros.

Circuit Training places the soft macros after the last hard macro with a force-directed method:
springs along nets pull connected pins together, overlapping macros push each other apart. Ours
is vectorised numpy: each iteration (1) moves every soft macro part of the way towards the
weighted mean of the centroids of its nets (the minimiser of a star-model quadratic wirelength),
(2) spreads them down the gradient of the blurred overflow of a bin density map (hard and soft
macros counted), (3) pushes them out of the hard macros they overlap along the axis of least
penetration, and clamps them to the canvas. Hard macros, their pins and ports do not move.
The iterations run as compiled kernels (fd_kernels, numba) when numba is there, else in numpy;
`backend="numpy"` forces the numpy code (the reference the kernels are tested against).
"""

from __future__ import annotations

import numpy as np

from moeplace.place.chip import fd_kernels
from moeplace.place.chip.netlist import Netlist, pin_positions


class ForceDirected:
    """Precomputed connectivity for repeated force-directed runs on one netlist."""

    def __init__(self, netlist: Netlist, width: float, height: float, attraction: float = 0.3,
                 repulsion: float = 5.0, max_fanout: int = 100, bins: tuple[int, int] = (32, 32),
                 target_density: float = 0.7, spread_steps: int = 3, hard_push: float = 1.0,
                 backend: str | None = None) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"canvas must have a positive size, got {width} x {height}")
        self.netlist, self.width, self.height = netlist, float(width), float(height)
        self.attraction, self.repulsion = float(attraction), float(repulsion)
        self.bins_x, self.bins_y = bins
        self.target_density, self.spread_steps = float(target_density), int(spread_steps)
        self.hard_push = float(hard_push)
        backend = backend or ("numba" if fd_kernels.HAVE_NUMBA else "numpy")
        if backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
        self.backend = backend
        self.soft = netlist.soft_macros
        self.hard = netlist.hard_macros
        n = netlist.num_nodes
        owner = np.arange(n)
        is_pin = netlist.parent >= 0
        owner[is_pin] = netlist.parent[is_pin]
        soft_slot = np.full(n, -1, np.int64)
        soft_slot[self.soft] = np.arange(len(self.soft))
        sizes = netlist.net_sizes()
        net_of_pin = np.repeat(np.arange(netlist.num_nets), sizes)
        pins = netlist.net_pins
        pin_soft = soft_slot[owner[pins]]
        # Keep nets that touch a soft macro, have 2..max_fanout pins (huge nets carry little signal).
        touches = np.zeros(netlist.num_nets, bool)
        touches[net_of_pin[pin_soft >= 0]] = True
        keep_net = touches & (sizes >= 2) & (sizes <= max_fanout)
        keep = keep_net[net_of_pin]
        _, self.net_of_pin = np.unique(net_of_pin[keep], return_inverse=True)
        self.pins = pins[keep]
        self.pin_soft = pin_soft[keep]
        self.num_nets = int(self.net_of_pin.max()) + 1 if self.pins.size else 0
        net_sizes = np.bincount(self.net_of_pin, minlength=self.num_nets).astype(np.float64)
        kept_weight = netlist.net_weight[np.flatnonzero(keep_net)]
        self.inv_size = 1.0 / np.maximum(net_sizes, 1.0)
        # clique-normalised net weight w / (k - 1) per pin of a soft macro
        per_pin_w = (kept_weight / np.maximum(net_sizes - 1.0, 1.0))[self.net_of_pin]
        self.soft_pin = self.pin_soft >= 0
        self.soft_pin_w = per_pin_w[self.soft_pin]
        self.soft_w = np.bincount(self.pin_soft[self.soft_pin], weights=self.soft_pin_w,
                                  minlength=len(self.soft))
        self.soft_w_ = np.maximum(self.soft_w, 1e-12)
        self.sw, self.sh = netlist.width[self.soft], netlist.height[self.soft]

    def place(self, x: np.ndarray, y: np.ndarray, orient: np.ndarray | None = None,
              iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
        """Return new node x, y arrays with the soft macros moved; hard macros at x, y stay put."""
        x, y = x.astype(np.float64, copy=True), y.astype(np.float64, copy=True)
        if len(self.soft) == 0 or iterations <= 0:
            return x, y
        px, py = pin_positions(self.netlist, x, y, orient)
        fixed_x, fixed_y = px[self.pins], py[self.pins]
        hard = self.hard
        hw, hh = self.netlist.width[hard], self.netlist.height[hard]
        if orient is not None:
            swap = np.isin(orient[hard], (2, 3, 6, 7))
            hw, hh = np.where(swap, hh, hw), np.where(swap, hw, hh)
        bins = _Bins(self.width, self.height, self.bins_x, self.bins_y)
        hard_area = bins.area_map(x[hard], y[hard], hw, hh)
        hx, hy = x[hard], y[hard]
        sx, sy = x[self.soft], y[self.soft]
        if self.backend == "numba":
            sx, sy = self._iterate_compiled(bins, hard_area, sx, sy, fixed_x, fixed_y, hx, hy, hw, hh,
                                            iterations)
            x[self.soft], y[self.soft] = sx, sy
            return x, y
        sp = self.pin_soft[self.soft_pin]
        nets = self.net_of_pin[self.soft_pin]
        connected = self.soft_w > 0
        for _ in range(iterations):
            # (1) attraction: pull each soft macro towards the weighted mean of its nets' centroids
            qx, qy = fixed_x.copy(), fixed_y.copy()
            qx[self.soft_pin], qy[self.soft_pin] = sx[sp], sy[sp]
            cx = np.bincount(self.net_of_pin, weights=qx, minlength=self.num_nets) * self.inv_size
            cy = np.bincount(self.net_of_pin, weights=qy, minlength=self.num_nets) * self.inv_size
            tx = np.bincount(sp, weights=self.soft_pin_w * cx[nets], minlength=len(sx)) / self.soft_w_
            ty = np.bincount(sp, weights=self.soft_pin_w * cy[nets], minlength=len(sx)) / self.soft_w_
            sx = np.where(connected, sx + self.attraction * (tx - sx), sx)
            sy = np.where(connected, sy + self.attraction * (ty - sy), sy)
            # (2) repulsion: push soft macros down the gradient of the bins' overflow
            for _ in range(self.spread_steps):
                sx, sy = self._spread(bins, hard_area, sx, sy)
            sx, sy = self._out_of_hard(sx, sy, hx, hy, hw, hh)
        x[self.soft], y[self.soft] = sx, sy
        return x, y

    def _iterate_compiled(self, bins: _Bins, hard_area: np.ndarray, sx: np.ndarray, sy: np.ndarray,
                          fixed_x: np.ndarray, fixed_y: np.ndarray, hx: np.ndarray, hy: np.ndarray,
                          hw: np.ndarray, hh: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
        """The iterations of `place` with the numba kernels (same steps, same order)."""
        k = fd_kernels
        sx, sy = np.ascontiguousarray(sx, np.float64), np.ascontiguousarray(sy, np.float64)
        soft_pin_idx = np.flatnonzero(self.soft_pin)
        hw, hh = np.ascontiguousarray(hw, np.float64), np.ascontiguousarray(hh, np.float64)
        for _ in range(iterations):
            k.attract(sx, sy, fixed_x, fixed_y, soft_pin_idx, self.pin_soft, self.net_of_pin, self.inv_size,
                      self.soft_pin_w, self.soft_w, self.attraction, self.num_nets)
            for _ in range(self.spread_steps):
                k.spread(sx, sy, self.sw, self.sh, hard_area, bins.bw, bins.bh, bins.nx, bins.ny,
                         self.target_density, self.repulsion, self.width, self.height)
            if len(hx):
                k.out_of_hard(sx, sy, self.sw, self.sh, hx, hy, hw, hh, self.hard_push, self.width,
                              self.height)
        return sx, sy

    def _spread(self, bins: _Bins, hard_area: np.ndarray, sx: np.ndarray,
                sy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One spreading step: move soft macros away from bins filled above the target density."""
        xo, yo = bins.overlaps(sx, sy, self.sw, self.sh)
        density = (hard_area + yo.T @ xo) / bins.bin_area
        overflow = np.maximum(density - self.target_density, 0.0)
        phi = _blur(overflow)
        gy, gx = np.gradient(phi)
        area = np.maximum(self.sw * self.sh, 1e-12)
        mx = ((yo @ gx) * xo).sum(1) / area  # overlap-weighted mean gradient over a macro's bins
        my = ((yo @ gy) * xo).sum(1) / area
        sx = sx - self.repulsion * mx * bins.bw
        sy = sy - self.repulsion * my * bins.bh
        sx = np.clip(sx, self.sw / 2, self.width - self.sw / 2)
        sy = np.clip(sy, self.sh / 2, self.height - self.sh / 2)
        return sx, sy


    def _out_of_hard(self, sx: np.ndarray, sy: np.ndarray, hx: np.ndarray, hy: np.ndarray,
                     hw: np.ndarray, hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Push soft macros out of the hard macros they overlap, along the axis of least penetration."""
        if len(hx) == 0:
            return sx, sy
        dx = sx[:, None] - hx[None, :]
        dy = sy[:, None] - hy[None, :]
        ox = (self.sw[:, None] + hw[None, :]) / 2 - np.abs(dx)
        oy = (self.sh[:, None] + hh[None, :]) / 2 - np.abs(dy)
        over = (ox > 0) & (oy > 0)
        along_x = ox < oy
        sx = sx + np.where(over & along_x, np.where(dx >= 0, 1.0, -1.0) * ox, 0.0).sum(1) * self.hard_push
        sy = sy + np.where(over & ~along_x, np.where(dy >= 0, 1.0, -1.0) * oy, 0.0).sum(1) * self.hard_push
        sx = np.clip(sx, self.sw / 2, self.width - self.sw / 2)
        sy = np.clip(sy, self.sh / 2, self.height - self.sh / 2)
        return sx, sy


class _Bins:
    """A bins_x x bins_y grid over the canvas for the density the spreading step reads."""

    def __init__(self, width: float, height: float, nx: int, ny: int) -> None:
        self.nx, self.ny = nx, ny
        self.bw, self.bh = width / nx, height / ny
        self.bin_area = self.bw * self.bh
        self.x_edges = np.arange(nx + 1) * self.bw
        self.y_edges = np.arange(ny + 1) * self.bh

    def overlaps(self, x: np.ndarray, y: np.ndarray, w: np.ndarray,
                 h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Overlap lengths of rectangles with each column [K, nx] and each row [K, ny] of bins."""
        xo = np.clip(np.minimum((x + w / 2)[:, None], self.x_edges[None, 1:])
                     - np.maximum((x - w / 2)[:, None], self.x_edges[None, :-1]), 0.0, None)
        yo = np.clip(np.minimum((y + h / 2)[:, None], self.y_edges[None, 1:])
                     - np.maximum((y - h / 2)[:, None], self.y_edges[None, :-1]), 0.0, None)
        return xo, yo

    def area_map(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Covered area of each bin [ny, nx]."""
        xo, yo = self.overlaps(x, y, w, h)
        return yo.T @ xo


def _blur(a: np.ndarray, rounds: int = 2) -> np.ndarray:
    """A few passes of a 3x3 box filter (edges replicated): turns overflow into a smooth potential."""
    for _ in range(rounds):
        p = np.pad(a, 1, mode="edge")
        a = (p[:-2, :-2] + p[:-2, 1:-1] + p[:-2, 2:] + p[1:-1, :-2] + p[1:-1, 1:-1] + p[1:-1, 2:]
             + p[2:, :-2] + p[2:, 1:-1] + p[2:, 2:]) / 9.0
    return a


def hpwl(netlist: Netlist, x: np.ndarray, y: np.ndarray, orient: np.ndarray | None = None) -> float:
    """Weighted half-perimeter wirelength over all nets (driver weight), for checks and reports."""
    px, py = pin_positions(netlist, x, y, orient)
    pins, ptr = netlist.net_pins, netlist.net_ptr
    if len(pins) == 0:
        return 0.0
    starts = ptr[:-1]
    wx = np.maximum.reduceat(px[pins], starts) - np.minimum.reduceat(px[pins], starts)
    wy = np.maximum.reduceat(py[pins], starts) - np.minimum.reduceat(py[pins], starts)
    return float(np.sum(netlist.net_weight * (wx + wy)))

