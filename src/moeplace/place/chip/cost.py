"""Circuit Training's proxy cost = wirelength + 0.5 x density + 0.5 x congestion, vectorised and incremental.

`ProxyCost(netlist, header)` precomputes everything that does not depend on positions; each call
then evaluates a placement given as centre arrays (defaults: the netlist's own). `ProxyCost.state()`
returns an `IncrementalProxyCost` that re-evaluates in time proportional to the nets of the nodes
that move (simulated annealing and RL moves), keeping per-net HPWL, per-net routing and the maps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from moeplace.errors import InfeasibleError
from moeplace.place.chip.congestion import congestion_cost, route_nets, smooth, sorted_unique
from moeplace.place.chip.density import density_cost, macro_allocation_maps, overlap_area_map, rect_overlaps
from moeplace.place.chip.netlist import Netlist, NodeKind, pin_positions, swaps_axes
from moeplace.place.chip.plc import PlcHeader
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


def proxy_of(wirelength: float, density: float, congestion: float) -> CostTerms:
    """Combine the terms with Circuit Training's weights (1, 0.5, 0.5)."""
    proxy = WIRELENGTH_WEIGHT * wirelength + DENSITY_WEIGHT * density + CONGESTION_WEIGHT * congestion
    return CostTerms(wirelength, density, congestion, proxy)


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
        check_fits(netlist, self.grid)
        self.hard = netlist.hard_macros
        self.macros = netlist.macros  # hard and soft: they fill density
        self.smoothing = int(np.floor(header.smoothing))
        self.macro_partial_rule = macro_partial_rule
        g = self.grid
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

    def overlaps_at(self, nodes: np.ndarray, cx: np.ndarray, cy: np.ndarray, orient: np.ndarray):
        """Like `overlaps`, with the nodes' centres and orientation codes given per node."""
        g, nl = self.grid, self.netlist
        w, h = nl.width[nodes], nl.height[nodes]
        swap = swaps_axes(orient) & (nl.kind[nodes] == NodeKind.HARD_MACRO)
        w, h = np.where(swap, h, w), np.where(swap, w, h)
        return rect_overlaps(cx, cy, w, h, g.columns, g.rows, g.cell_width, g.cell_height)

    def area_map(self, nodes: np.ndarray, x: np.ndarray, y: np.ndarray, orient: np.ndarray) -> np.ndarray:
        """Summed overlap area of `nodes` with each cell `[rows, cols]`."""
        return overlap_area_map(*self.overlaps(nodes, x, y, orient))

    def net_demand(self, px: np.ndarray, py: np.ndarray, nets: np.ndarray | None = None):
        """Raw routing demand (H, V) `[rows, cols]` of all nets (or `nets`), before smoothing."""
        nl, g = self.netlist, self.grid
        if nets is None:
            col, row = g.cell_of(px[nl.net_pins], py[nl.net_pins])
            return route_nets(col, row, nl.net_ptr, nl.net_weight, g.columns, g.rows, self.net_of_pin)
        ptr, pos = subset_csr(nl.net_ptr, nets)
        pins, weight = nl.net_pins[pos], nl.net_weight[nets]
        col, row = g.cell_of(px[pins], py[pins])
        return route_nets(col, row, ptr, weight, g.columns, g.rows)

    def macro_demand_of(self, nodes: np.ndarray, x: np.ndarray, y: np.ndarray, orient: np.ndarray):
        """Scaled routing allocation (H, V) `[rows, cols]` of the hard macros `nodes`."""
        return self.macro_allocation(*self.overlaps(nodes, x, y, orient))

    def macro_allocation(self, xo: np.ndarray, yo: np.ndarray, weight: np.ndarray | None = None):
        """Scaled routing allocation (H, V) of hard macros given their column/row overlaps."""
        h, v = macro_allocation_maps(xo, yo, self.grid.cell_width, self.grid.cell_height,
                                     self.macro_partial_rule, weight)
        hd = self.header
        return h * (hd.hrouting_alloc * self.h_scale), v * (hd.vrouting_alloc * self.v_scale)

    def finish_congestion(self, h_raw: np.ndarray, v_raw: np.ndarray, h_macro: np.ndarray,
                          v_macro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Congestion maps from raw net demand (smoothed, scaled) plus the macros' allocation."""
        h = smooth(h_raw, self.smoothing, axis=1) * self.h_scale + h_macro
        v = smooth(v_raw, self.smoothing, axis=0) * self.v_scale + v_macro
        return h, v

    def terms(self, net_hpwl: np.ndarray, area: np.ndarray, h_raw: np.ndarray, v_raw: np.ndarray,
              h_macro: np.ndarray, v_macro: np.ndarray) -> CostTerms:
        """The cost terms from per-net HPWL, the area map and the raw demand maps."""
        g = self.grid
        wl = wirelength_cost(net_hpwl, self.netlist.net_weight, g.width, g.height)
        dens = density_cost(area / (g.cell_width * g.cell_height))
        cong = congestion_cost(*self.finish_congestion(h_raw, v_raw, h_macro, v_macro))
        return proxy_of(wl, dens, cong)

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
