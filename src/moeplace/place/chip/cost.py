"""Circuit Training's proxy cost = wirelength + 0.5 x density + 0.5 x congestion, vectorised and incremental.

`ProxyCost(netlist, header)` precomputes everything that does not depend on positions; each call
then evaluates a placement given as centre arrays (defaults: the netlist's own). `ProxyCost.state()`
returns an `IncrementalProxyCost` that re-evaluates in time proportional to the nets of the nodes
that move (simulated annealing and RL moves), keeping per-net HPWL, per-net routing and the maps.
The header's settings choose the weights, the smoothing range and the congestion grid (the
placement grid unless the header names its own, as Circuit Training's current code does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from moeplace.errors import InfeasibleError
from moeplace.place.chip.congestion import congestion_cost, route_nets, routed_weights, smooth, sorted_unique
from moeplace.place.chip.density import (
    density_cost,
    edge_cells,
    macro_allocation_maps,
    overlap_area_map,
    rect_overlaps,
)
from moeplace.place.chip.netlist import Netlist, NodeKind, pin_positions, swaps_axes
from moeplace.place.chip.plc import PlcHeader
from moeplace.place.chip.settings import WEIGHT_PRESETS
from moeplace.place.chip.wirelength import PaddedNets, hpwl_per_net, subset_csr, wirelength_cost

WIRELENGTH_WEIGHT, DENSITY_WEIGHT, CONGESTION_WEIGHT = 1.0, 0.5, 0.5


@dataclass(frozen=True)
class Grid:
    """The canvas cut into `columns x rows` equal cells; cell (col, row) has index row * columns + col."""

    columns: int
    rows: int
    width: float
    height: float

    @property
    def cell_width(self) -> float:
        """Width of one cell."""
        return self.width / self.columns

    @property
    def cell_height(self) -> float:
        """Height of one cell."""
        return self.height / self.rows

    @property
    def num_cells(self) -> int:
        """Number of cells."""
        return self.columns * self.rows

    def cell_of(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(column, row) of points, clamped to the grid (points on or past an edge go to the edge cell)."""
        # truncation equals floor for x >= 0, and negatives clamp to 0 either way
        col = (np.asarray(x) / self.cell_width).astype(np.int64)
        row = (np.asarray(y) / self.cell_height).astype(np.int64)
        col = np.minimum(np.maximum(col, 0), self.columns - 1)  # np.clip is slower on small arrays
        row = np.minimum(np.maximum(row, 0), self.rows - 1)
        return col, row

    def cell_index(self, col: np.ndarray | int, row: np.ndarray | int) -> np.ndarray:
        """Flat cell index row * columns + col."""
        return np.asarray(row) * self.columns + np.asarray(col)

    def cell_center(self, col: np.ndarray | int, row: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Centre (x, y) of cells."""
        return (np.asarray(col) + 0.5) * self.cell_width, (np.asarray(row) + 0.5) * self.cell_height

    def index_center(self, index: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Centre (x, y) of cells given by flat index."""
        index = np.asarray(index)
        return self.cell_center(index % self.columns, index // self.columns)

    def col_centers(self) -> np.ndarray:
        """x of the centre of each column."""
        return (np.arange(self.columns) + 0.5) * self.cell_width

    def row_centers(self) -> np.ndarray:
        """y of the centre of each row."""
        return (np.arange(self.rows) + 0.5) * self.cell_height

    @classmethod
    def from_header(cls, header: PlcHeader) -> Grid:
        """The grid of a .plc header."""
        header.validate(header.source or "plc header")
        return cls(int(header.columns), int(header.rows), float(header.width), float(header.height))

    @classmethod
    def congestion_from_header(cls, header: PlcHeader) -> Grid:
        """The grid congestion is computed on: the header's congestion grid, else the placement grid."""
        g = cls.from_header(header)
        if header.congestion_columns is None or header.congestion_rows is None:
            return g
        return cls(int(header.congestion_columns), int(header.congestion_rows), g.width, g.height)

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether points lie on the canvas (its edges included)."""
        return (x >= 0) & (x <= self.width) & (y >= 0) & (y <= self.height)


@dataclass(frozen=True)
class CostTerms:
    """The three cost terms and the proxy cost they make (lower is better)."""

    wirelength: float
    density: float
    congestion: float
    proxy: float

    def as_dict(self) -> dict[str, float]:
        """The terms as a plain dict."""
        return asdict(self)


def proxy_of(wirelength: float, density: float, congestion: float,
             weights: tuple[float, float, float] = WEIGHT_PRESETS["google"]) -> CostTerms:
    """Combine the terms with (wirelength, density, congestion) weights (default 1, 0.5, 0.5)."""
    a, b, c = weights
    return CostTerms(wirelength, density, congestion, a * wirelength + b * density + c * congestion)


def check_fits(netlist: Netlist, grid: Grid) -> None:
    """Raise InfeasibleError if a hard macro is larger than the canvas."""
    hard = netlist.hard_macros
    w, h = netlist.footprint()
    too_big = hard[(w[hard] > grid.width + 1e-9) | (h[hard] > grid.height + 1e-9)]
    if len(too_big):
        i = int(too_big[0])
        raise InfeasibleError(f"hard macro {netlist.names[i]!r} ({w[i]:g} x {h[i]:g}) is larger than the "
                              f"canvas ({grid.width:g} x {grid.height:g})")


class ProxyCost:
    """Evaluates wirelength, density, congestion and proxy cost of placements of one netlist."""

    def __init__(self, netlist: Netlist, header: PlcHeader, macro_partial_rule: bool = True) -> None:
        self.netlist = netlist
        self.header = header
        self.grid = Grid.from_header(header)
        self.cgrid = Grid.congestion_from_header(header)  # congestion's grid (often the same)
        check_fits(netlist, self.grid)
        self.hard = netlist.hard_macros
        self.macros = netlist.macros  # hard and soft: they fill density
        self.smoothing = int(np.floor(header.smoothing))
        self.weights = tuple(float(w) for w in header.weights)
        self.macro_partial_rule = macro_partial_rule
        g = self.cgrid
        self.h_scale = 1.0 / (g.cell_height * header.hroutes_per_micron)
        self.v_scale = 1.0 / (g.cell_width * header.vroutes_per_micron)
        self._build_incidence()
        self.padded = PaddedNets(netlist.net_ptr, netlist.net_pins)

    def _build_incidence(self) -> None:
        """CSR maps: node -> nets its pins belong to (a macro owns its pins' nets); macro -> its pins."""
        nl = self.netlist
        n, m = nl.num_nodes, max(nl.num_nets, 1)
        owner = np.where(nl.parent >= 0, nl.parent, np.arange(n))
        net_of_pin = np.repeat(np.arange(nl.num_nets), nl.net_sizes())
        self.net_of_pin = net_of_pin
        pairs = sorted_unique(owner[nl.net_pins] * m + net_of_pin)
        node, net = pairs // m, pairs % m
        self.node_net_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(node, minlength=n), out=self.node_net_ptr[1:])
        self.node_nets = net
        pins = np.flatnonzero(nl.parent >= 0)
        order = np.argsort(nl.parent[pins], kind="stable")
        self.child_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(nl.parent[pins], minlength=n), out=self.child_ptr[1:])
        self.children = pins[order]

    def nets_of(self, nodes: np.ndarray) -> np.ndarray:
        """Sorted distinct nets touching any of `nodes` (a macro counts its pins' nets)."""
        nodes = np.atleast_1d(np.asarray(nodes, np.int64))
        if len(nodes) == 0:
            return np.zeros(0, np.int64)
        _, pos = subset_csr(self.node_net_ptr, nodes)
        return sorted_unique(self.node_nets[pos])

    def pins_of(self, nodes: np.ndarray) -> np.ndarray:
        """The nodes themselves and all pins of those that are macros."""
        nodes = np.atleast_1d(np.asarray(nodes, np.int64))
        _, pos = subset_csr(self.child_ptr, nodes)
        return np.concatenate([nodes, self.children[pos]])

    # ---- building blocks (positions in, arrays out) ----------------------------------------------
    def _xy(self, x, y, orient):
        """The given arrays, or the netlist's own where None."""
        nl = self.netlist
        return (nl.x if x is None else x, nl.y if y is None else y, nl.orient if orient is None else orient)

    def pins(self, x=None, y=None, orient=None) -> tuple[np.ndarray, np.ndarray]:
        """Absolute position of every node (pins follow their macros)."""
        return pin_positions(self.netlist, *self._xy(x, y, orient))

    def net_hpwl(self, px: np.ndarray, py: np.ndarray, nets: np.ndarray | None = None) -> np.ndarray:
        """Unweighted HPWL of every net (or of `nets`) from absolute pin positions."""
        nl = self.netlist
        if nets is None:
            return self.padded.hpwl(px, py)
        ptr, pos = subset_csr(nl.net_ptr, nets)
        return hpwl_per_net(px, py, ptr, nl.net_pins[pos])

    def overlaps(self, nodes: np.ndarray, x: np.ndarray, y: np.ndarray, orient: np.ndarray):
        """Overlap of `nodes`' rectangles with grid columns `[K, cols]` and rows `[K, rows]`."""
        return self.overlaps_at(nodes, x[nodes], y[nodes], orient[nodes])

    def footprints(self, nodes: np.ndarray, orient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Width and height of `nodes` as placed with orientation codes `orient` (per node)."""
        nl = self.netlist
        w, h = nl.width[nodes], nl.height[nodes]
        swap = swaps_axes(orient) & (nl.kind[nodes] == NodeKind.HARD_MACRO)
        return np.where(swap, h, w), np.where(swap, w, h)

    def overlaps_at(self, nodes: np.ndarray, cx: np.ndarray, cy: np.ndarray, orient: np.ndarray):
        """Like `overlaps`, with the nodes' centres and orientation codes given per node."""
        g = self.grid
        w, h = self.footprints(nodes, orient)
        return rect_overlaps(cx, cy, w, h, g.columns, g.rows, g.cell_width, g.cell_height)

    def area_map(self, nodes: np.ndarray, x: np.ndarray, y: np.ndarray, orient: np.ndarray) -> np.ndarray:
        """Summed overlap area of `nodes` with each cell `[rows, cols]`."""
        return overlap_area_map(*self.overlaps(nodes, x, y, orient))

    def routed_weights(self, px_pins: np.ndarray, py_pins: np.ndarray, ptr: np.ndarray,
                       weight: np.ndarray) -> np.ndarray:
        """Routing weight of nets given their pins' positions (CSR): the net's weight, or 0 for a net
        with a pin off the canvas (the reference tool routes no such net)."""
        return routed_weights(~self.grid.inside(px_pins, py_pins), ptr, weight)

    def net_demand(self, px: np.ndarray, py: np.ndarray, nets: np.ndarray | None = None):
        """Raw routing demand (H, V) `[rows, cols]` of all nets (or `nets`) on the congestion grid,
        before smoothing; nets with a pin off the canvas are left out."""
        nl, g = self.netlist, self.cgrid
        if nets is None:
            pins, ptr, weight = nl.net_pins, nl.net_ptr, nl.net_weight
        else:
            ptr, pos = subset_csr(nl.net_ptr, nets)
            pins, weight = nl.net_pins[pos], nl.net_weight[nets]
        pxp, pyp = px[pins], py[pins]
        weight = self.routed_weights(pxp, pyp, ptr, weight)
        col, row = g.cell_of(pxp, pyp)
        return route_nets(col, row, ptr, weight, g.columns, g.rows, self.net_of_pin if nets is None else None)

    def macro_demand_of(self, nodes: np.ndarray, x: np.ndarray, y: np.ndarray, orient: np.ndarray):
        """Scaled routing allocation (H, V) `[rows, cols]` of the hard macros `nodes`."""
        return self.macro_demand_at(nodes, x[nodes], y[nodes], orient[nodes])

    def macro_demand_at(self, nodes: np.ndarray, cx: np.ndarray, cy: np.ndarray, orient: np.ndarray,
                        weight: np.ndarray | None = None):
        """Scaled routing allocation (H, V) on the congestion grid of hard macros `nodes` centred at
        (cx, cy) with orientation codes `orient` (per node), each counted `weight` times (default 1)."""
        g, hd = self.cgrid, self.header
        w, h = self.footprints(nodes, orient)
        xo, yo = rect_overlaps(cx, cy, w, h, g.columns, g.rows, g.cell_width, g.cell_height)
        cols = edge_cells(cx - w / 2, cx + w / 2, g.columns, g.cell_width)
        rows = edge_cells(cy - h / 2, cy + h / 2, g.rows, g.cell_height)
        hm, vm = macro_allocation_maps(xo, yo, cols, rows, g.cell_width, g.cell_height,
                                       self.macro_partial_rule, weight)
        return hm * (hd.hrouting_alloc * self.h_scale), vm * (hd.vrouting_alloc * self.v_scale)

    def finish_congestion(self, h_raw: np.ndarray, v_raw: np.ndarray, h_macro: np.ndarray,
                          v_macro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Congestion maps from raw net demand (smoothed, scaled) plus the macros' allocation.

        Smoothing spreads horizontal demand over the neighbouring rows and vertical demand over the
        neighbouring columns (where a detour would go), as the reference tool does."""
        h = smooth(h_raw, self.smoothing, axis=0) * self.h_scale + h_macro
        v = smooth(v_raw, self.smoothing, axis=1) * self.v_scale + v_macro
        return h, v

    def terms(self, net_hpwl: np.ndarray, area: np.ndarray, h_raw: np.ndarray, v_raw: np.ndarray,
              h_macro: np.ndarray, v_macro: np.ndarray) -> CostTerms:
        """The cost terms from per-net HPWL, the area map and the raw demand maps."""
        g = self.grid
        wl = wirelength_cost(net_hpwl, self.netlist.net_weight, g.width, g.height)
        dens = density_cost(area / (g.cell_width * g.cell_height))
        cong = congestion_cost(*self.finish_congestion(h_raw, v_raw, h_macro, v_macro))
        return proxy_of(wl, dens, cong, self.weights)

    # ---- public evaluation ---------------------------------------------------------------------
    def hpwl_per_net(self, x=None, y=None, orient=None) -> np.ndarray:
        """Unweighted HPWL of every net."""
        return self.net_hpwl(*self.pins(x, y, orient))

    def hpwl(self, x=None, y=None, orient=None) -> float:
        """Total weighted HPWL (the .plc header's `Wirelength`)."""
        return float((self.netlist.net_weight * self.hpwl_per_net(x, y, orient)).sum())

    def wirelength(self, x=None, y=None, orient=None) -> float:
        """Wirelength cost: weighted HPWL / ((W + H) x sum of net weights)."""
        return wirelength_cost(self.hpwl_per_net(x, y, orient), self.netlist.net_weight,
                               self.grid.width, self.grid.height)

    def density_map(self, x=None, y=None, orient=None) -> np.ndarray:
        """Occupied fraction of each grid cell `[rows, cols]` by hard and soft macros."""
        area = self.area_map(self.macros, *self._xy(x, y, orient))
        return area / (self.grid.cell_width * self.grid.cell_height)

    def density(self, x=None, y=None, orient=None) -> float:
        """Density cost: 0.5 x mean of the densest 10% of cells."""
        return density_cost(self.density_map(x, y, orient))

    def macro_demand(self, x=None, y=None, orient=None) -> tuple[np.ndarray, np.ndarray]:
        """Scaled routing allocation (H, V) of all hard macros."""
        return self.macro_demand_of(self.hard, *self._xy(x, y, orient))

    def congestion_maps(self, x=None, y=None, orient=None) -> tuple[np.ndarray, np.ndarray]:
        """Horizontal and vertical congestion `[rows, cols]` (routes used / routes available)."""
        h_raw, v_raw = self.net_demand(*self.pins(x, y, orient))
        return self.finish_congestion(h_raw, v_raw, *self.macro_demand(x, y, orient))

    def congestion(self, x=None, y=None, orient=None) -> float:
        """Congestion cost: mean of the top 5% of the concatenated V and H maps."""
        return congestion_cost(*self.congestion_maps(x, y, orient))

    def evaluate(self, x=None, y=None, orient=None) -> CostTerms:
        """All three terms and the proxy cost of a placement (defaults: the netlist's positions)."""
        x, y, orient = self._xy(x, y, orient)
        px, py = pin_positions(self.netlist, x, y, orient)
        return self.terms(self.net_hpwl(px, py), self.area_map(self.macros, x, y, orient),
                          *self.net_demand(px, py), *self.macro_demand_of(self.hard, x, y, orient))

    def state(self, x=None, y=None, orient=None):
        """An IncrementalProxyCost starting from this placement (copies of the arrays)."""
        from moeplace.place.chip.incremental import IncrementalProxyCost

        return IncrementalProxyCost(self, *self._xy(x, y, orient))
