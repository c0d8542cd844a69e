"""Chip macro placement as a PlacementProblem: hard macros onto grid cells, then soft macros, then proxy cost.

Nodes are the movable hard macros in descending area (Circuit Training's order); slots are the grid
cells of the .plc header (macro centre at cell centre), or with `orientations=True` the pairs
(orientation, cell) for the four orientations that keep a macro's footprint (N, FN, FS, S), so
annealing can mirror macros through the same protocol. Soft macros are placed by force-directed
placement ("fd": from their start positions on every cost call, a pure function) or kept at the
problem's current soft positions ("fixed": refreshed by `refresh_soft`, what annealing uses).
Cost = proxy cost (wirelength + 0.5 density + 0.5 congestion); an incomplete placement gets
`penalty + fraction unplaced`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moeplace.errors import InfeasibleError
from moeplace.place.chip.canvas import default_header
from moeplace.place.chip.cost import Grid
from moeplace.place.chip.force_directed import ForceDirected
from moeplace.place.chip.legality import blockage_rects, blocked_by, coverage, inside_canvas
from moeplace.place.chip.netlist import Netlist, load_netlist
from moeplace.place.chip.plc import PlcHeader, load_placement
from moeplace.place.chip.proxy import ProxyEvaluator
from moeplace.place.core import UNPLACED

FOOTPRINT_ORIENTS = np.array([0, 4, 5, 1], dtype=np.int8)  # N, FN, FS, S (see netlist.ORIENTATIONS)
DEFAULT_PENALTY = 3.0


class ChipProblem:
    """Hard macros placed one per step on the grid; soft macros by force-directed placement."""

    def __init__(self, netlist: Netlist, header: PlcHeader, *, orientations: bool = False,
                 soft: str = "fd", fd_iterations: int = 20, penalty: float = DEFAULT_PENALTY,
                 soft_start: str = "input", incremental: bool | None = None) -> None:
        if soft not in ("fd", "fixed"):
            raise ValueError(f"soft must be 'fd' or 'fixed', got {soft!r}")
        if soft_start not in ("input", "center"):
            raise ValueError(f"soft_start must be 'input' or 'center', got {soft_start!r}")
        header.validate()
        self.netlist = netlist.copy()
        self.header = header
        self.grid = Grid(header.columns, header.rows, header.width, header.height)
        self.orientations, self.soft, self.fd_iterations = orientations, soft, fd_iterations
        self.penalty = float(penalty)
        self.move_probs = (0.3, 0.3, 0.1)  # swap, shift, mirror; the rest: random legal cell
        hard = netlist.hard_macros
        movable = hard[~netlist.fixed[hard]]
        area = netlist.width[movable] * netlist.height[movable]
        self.macros = movable[np.argsort(-area, kind="stable")]  # node -> netlist index
        self.w = netlist.width[self.macros].astype(np.float64)
        self.h = netlist.height[self.macros].astype(np.float64)
        too_big = (self.w > header.width + 1e-6) | (self.h > header.height + 1e-6)
        if too_big.any():
            i = self.macros[np.flatnonzero(too_big)[0]]
            raise InfeasibleError(f"macro {netlist.names[i]!r} ({netlist.width[i]:g} x "
                                  f"{netlist.height[i]:g}) is larger than the canvas "
                                  f"({header.width:g} x {header.height:g})")
        # static obstacles: fixed hard macros and blockages
        fixed = hard[netlist.fixed[hard]]
        bx, by, bw, bh = blockage_rects(header.blockages)
        self._obst = (np.concatenate([netlist.x[fixed], bx]), np.concatenate([netlist.y[fixed], by]),
                      np.concatenate([netlist.width[fixed], bw]), np.concatenate([netlist.height[fixed], bh]))
        self._static_ok: dict[tuple[float, float], np.ndarray] = {}
        self.soft_start = soft_start
        soft_idx = self.netlist.soft_macros
        if soft_start == "center":
            self.netlist.x[soft_idx] = header.width / 2
            self.netlist.y[soft_idx] = header.height / 2
        self.start_x, self.start_y = self.netlist.x.copy(), self.netlist.y.copy()
        self.soft_x, self.soft_y = self.netlist.x[soft_idx].copy(), self.netlist.y[soft_idx].copy()
        self.fd = ForceDirected(self.netlist, header.width, header.height,
                                bins=(2 * header.columns, 2 * header.rows))
        # incremental cost pays when few macros move per evaluation (annealing with fixed soft macros)
        self.evaluator = ProxyEvaluator(self.netlist, header,
                                        incremental=(soft == "fixed") if incremental is None else incremental)
        self.evaluations = 0
        self._features = self._node_features()
        self._edges = self._node_edges()

    @classmethod
    def from_files(cls, netlist_path: str | Path, plc_path: str | Path | None = None, *,
                   columns: int | None = None, rows: int | None = None, **kw) -> ChipProblem:
        """Load a Circuit Training netlist and (optionally) a .plc whose header gives grid and settings."""
        netlist = load_netlist(netlist_path)
        if plc_path is not None:
            header = load_placement(netlist, plc_path)
            if columns is not None:
                header.columns = columns
            if rows is not None:
                header.rows = rows
        else:
            header = default_header(netlist, columns=columns, rows=rows)  # gridding fills in the grid
        return cls(netlist, header, **kw)

    # --- protocol -------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        """Number of movable hard macros."""
        return len(self.macros)

    @property
    def num_cells(self) -> int:
        """Number of grid cells."""
        return self.grid.num_cells

    @property
    def num_slots(self) -> int:
        """Grid cells (times 4 orientations when `orientations`)."""
        return self.grid.num_cells * (len(FOOTPRINT_ORIENTS) if self.orientations else 1)

    @property
    def grid_shape(self) -> tuple[int, int] | None:
        """(rows, columns) for the convolutional head (None with orientations: slots are not a grid)."""
        return None if self.orientations else (self.grid.rows, self.grid.columns)

    def node_features(self) -> np.ndarray:
        """Per macro: width, height (canvas fractions), area (cells), pin count, order position."""
        return self._features

    def node_edges(self) -> np.ndarray:
        """Macro graph: pairs sharing a net or connected through one soft macro (top 8 per macro)."""
        return self._edges

    def slot_features(self) -> np.ndarray:
        """Per slot: cell centre (canvas fractions), blocked coverage, ports in the cell, orientation."""
        g = self.grid
        cx, cy = g.index_center(np.arange(g.num_cells))
        ports = self.netlist.ports
        port_count = np.bincount(g.cell_index(*g.cell_of(self.netlist.x[ports], self.netlist.y[ports])),
                                 minlength=g.num_cells) if len(ports) else np.zeros(g.num_cells)
        blocked = coverage(g, *self._obst)
        f = np.stack([cx / g.width, cy / g.height, np.minimum(blocked, 1.0),
                      np.log1p(port_count) / np.log1p(max(port_count.max(), 1))], axis=1)
        if not self.orientations:
            return f.astype(np.float32)
        k = len(FOOTPRINT_ORIENTS)
        orient_f = np.repeat(np.arange(k) / (k - 1), g.num_cells)[:, None]
        return np.concatenate([np.tile(f, (k, 1)), orient_f], axis=1).astype(np.float32)

    def legal_mask(self, placement: np.ndarray, node: int) -> np.ndarray:
        """Slots where macro `node` fits inside the canvas, off blockages, overlapping no placed macro."""
        placement = np.asarray(placement)
        others = np.flatnonzero(placement != UNPLACED)
        others = others[others != node]
        w, h = self.w[node], self.h[node]
        cells = placement[others] % self.num_cells
        x, y = self.grid.index_center(cells)
        ok = self._static_mask(w, h) & ~blocked_by(self.grid, w, h, x, y, self.w[others], self.h[others])
        return np.tile(ok, len(FOOTPRINT_ORIENTS)) if self.orientations else ok

    def cost(self, placement: np.ndarray) -> float:
        """Proxy cost of a complete placement; `penalty + fraction unplaced` for an incomplete one."""
        placement = np.asarray(placement)
        unplaced = int((placement == UNPLACED).sum())
        if unplaced:
            return self.penalty + unplaced / self.num_nodes
        return self.terms(placement)["proxy"]

    def propose_move(self, placement: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """An annealing move: swap two macros, shift one to a neighbouring cell, mirror one
        (with orientations), or move one to a random legal cell. None when the move is illegal."""
        n, c = self.num_nodes, self.num_cells
        a = int(rng.integers(n))
        cell, orient = placement % c, placement // c
        new = placement.copy()
        r = rng.random()
        if r < self.move_probs[0] and n >= 2:  # swap
            b = int(rng.integers(n - 1))
            b += b >= a
            if cell[a] == cell[b]:
                return None
            if self.w[a] != self.w[b] or self.h[a] != self.h[b]:
                new[a] = new[b] = UNPLACED
                if not self.legal_mask(new, b)[cell[a]]:
                    return None
                new[b] = orient[b] * c + cell[a]
                if not self.legal_mask(new, a)[cell[b]]:
                    return None
            new[a], new[b] = orient[a] * c + cell[b], orient[b] * c + cell[a]
            return new
        r -= self.move_probs[0]
        if r < self.move_probs[1]:  # shift by one cell
            row, col = divmod(int(cell[a]), self.grid.columns)
            d = int(rng.integers(4))
            row += (d == 0) - (d == 1)
            col += (d == 2) - (d == 3)
            if not (0 <= row < self.grid.rows and 0 <= col < self.grid.columns):
                return None
            target = row * self.grid.columns + col
        elif r - self.move_probs[1] < self.move_probs[2] and self.orientations:  # mirror
            k = len(FOOTPRINT_ORIENTS)
            new[a] = ((orient[a] + 1 + int(rng.integers(k - 1))) % k) * c + cell[a]
            return new
        else:  # random legal cell
            target = -1
        new[a] = UNPLACED
        mask = self.legal_mask(new, a)[:c]
        if target < 0:
            mask[cell[a]] = False
            legal = np.flatnonzero(mask)
            if legal.size == 0:
                return None
            target = int(rng.choice(legal))
        elif not mask[target]:
            return None
        new[a] = orient[a] * c + target
        return new

    # --- chip specifics ----------------------------------------------------------------------
    def _static_mask(self, w: float, h: float) -> np.ndarray:
        """Cells legal for a w x h macro before any movable macro is placed (cached per size)."""
        key = (float(w), float(h))
        if key not in self._static_ok:
            self._static_ok[key] = inside_canvas(self.grid, w, h) & ~blocked_by(self.grid, w, h, *self._obst)
        return self._static_ok[key]

    def slot_occupancy(self, placement: np.ndarray) -> np.ndarray:
        """Fraction of each cell covered by placed macros and static obstacles (the env's occupancy)."""
        placed = np.flatnonzero(np.asarray(placement) != UNPLACED)
        x, y = self.grid.index_center(placement[placed] % self.num_cells)
        ox, oy, ow, oh = self._obst
        occ = coverage(self.grid, np.concatenate([x, ox]), np.concatenate([y, oy]),
                       np.concatenate([self.w[placed], ow]), np.concatenate([self.h[placed], oh]))
        occ = occ.astype(np.float32)
        return np.tile(occ, len(FOOTPRINT_ORIENTS)) if self.orientations else occ

    def positions(self, placement: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Node x, y, orientation arrays for a complete placement (soft macros at their start)."""
        x, y, orient = self.start_x.copy(), self.start_y.copy(), self.netlist.orient.copy()
        placement = np.asarray(placement)
        mx, my = self.grid.index_center(placement % self.num_cells)
        x[self.macros], y[self.macros] = mx, my
        if self.orientations:
            orient[self.macros] = FOOTPRINT_ORIENTS[placement // self.num_cells]
        return x, y, orient

    def place_soft(self, placement: np.ndarray, iterations: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Full x, y, orientation: hard macros from `placement`, soft macros by force-directed placement."""
        x, y, orient = self.positions(placement)
        iterations = self.fd_iterations if iterations is None else iterations
        return (*self.fd.place(x, y, orient, iterations), orient)

    def refresh_soft(self, placement: np.ndarray, iterations: int | None = None) -> None:
        """Re-run force-directed placement from the current soft positions; keep them (soft='fixed')."""
        x, y, orient = self.positions(placement)
        soft = self.netlist.soft_macros
        x[soft], y[soft] = self.soft_x, self.soft_y
        x, y = self.fd.place(x, y, orient, self.fd_iterations if iterations is None else iterations)
        self.soft_x, self.soft_y = x[soft].copy(), y[soft].copy()

    def full_positions(self, placement: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y, orientation of every node as the cost sees them (soft macros per the `soft` mode)."""
        if self.soft == "fd":
            return self.place_soft(placement)
        x, y, orient = self.positions(placement)
        soft = self.netlist.soft_macros
        x[soft], y[soft] = self.soft_x, self.soft_y
        return x, y, orient

    def terms(self, placement: np.ndarray) -> dict[str, float]:
        """wirelength, density, congestion and proxy cost of a complete placement."""
        self.evaluations += 1
        x, y, orient = self.full_positions(placement)
        return self.evaluator.terms(x, y, orient)

    def is_legal(self, placement: np.ndarray) -> bool:
        """True when every macro is placed on a cell its legality mask allows given all the others."""
        placement = np.asarray(placement)
        if (placement == UNPLACED).any():
            return False
        return all(self.legal_mask(placement, i)[placement[i]] for i in range(self.num_nodes))

    def to_netlist(self, placement: np.ndarray) -> Netlist:
        """A copy of the netlist with every position set (for writing the .plc and drawing)."""
        out = self.netlist.copy()
        out.x, out.y, out.orient = self.full_positions(placement)
        return out

    def snap(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> np.ndarray:
        """A legal placement near given macro centres (default: the input placement): each macro in
        order takes the nearest legal cell. Raises InfeasibleError when a macro finds no legal cell."""
        x = self.start_x[self.macros] if x is None else x
        y = self.start_y[self.macros] if y is None else y
        placement = np.full(self.num_nodes, UNPLACED, dtype=np.int64)
        cx, cy = self.grid.index_center(np.arange(self.num_cells))
        for i in range(self.num_nodes):
            legal = self.legal_mask(placement, i)[: self.num_cells]
            if not legal.any():
                raise InfeasibleError(f"no legal cell left for macro {self.netlist.names[self.macros[i]]!r} "
                                      f"({i + 1} of {self.num_nodes}) on the {self.grid.columns}x"
                                      f"{self.grid.rows} grid")
            d = (cx - x[i]) ** 2 + (cy - y[i]) ** 2
            placement[i] = int(np.argmin(np.where(legal, d, np.inf)))
        if self.orientations:
            codes = self.netlist.orient[self.macros]
            lookup = {int(c): k for k, c in enumerate(FOOTPRINT_ORIENTS)}
            k = np.array([lookup.get(int(c), 0) for c in codes])
            placement = placement + k * self.num_cells
        return placement

    def pack(self) -> np.ndarray:
        """A legal placement packed bottom-left: each macro in order takes the first legal cell in
        row-major order. Raises InfeasibleError when a macro finds no legal cell."""
        placement = np.full(self.num_nodes, UNPLACED, dtype=np.int64)
        for i in range(self.num_nodes):
            legal = np.flatnonzero(self.legal_mask(placement, i)[: self.num_cells])
            if legal.size == 0:
                raise InfeasibleError(f"no legal cell left for macro {self.netlist.names[self.macros[i]]!r} "
                                      f"({i + 1} of {self.num_nodes}) on the {self.grid.columns}x"
                                      f"{self.grid.rows} grid, even packed bottom-left")
            placement[i] = legal[0]
        return placement

    def initial_placement(self) -> np.ndarray:
        """The input placement snapped to the grid, or (when it does not fit) a bottom-left packing."""
        try:
            return self.snap()
        except InfeasibleError:
            return self.pack()

    def _node_features(self) -> np.ndarray:
        """Static features of the macros (see node_features)."""
        nl, g = self.netlist, self.grid
        pins_per_macro = np.bincount(nl.parent[nl.parent >= 0], minlength=nl.num_nodes)[self.macros]
        n = max(self.num_nodes, 1)
        return np.stack([self.w / g.width, self.h / g.height,
                         self.w * self.h / (g.cell_width * g.cell_height) / 4.0,
                         np.log1p(pins_per_macro) / np.log1p(max(pins_per_macro.max(initial=0), 1)),
                         np.arange(self.num_nodes) / n], axis=1).astype(np.float32)

    def _node_edges(self, top_k: int = 8, max_fanout: int = 100) -> np.ndarray:
        """Top-k strongest macro-macro connections (direct nets + through one soft macro)."""
        nl = self.netlist
        n_nodes, n = nl.num_nodes, self.num_nodes
        owner = np.where(nl.parent >= 0, nl.parent, np.arange(n_nodes))
        sizes = nl.net_sizes()
        net_of_pin = np.repeat(np.arange(nl.num_nets), sizes)
        keep = (sizes <= max_fanout)[net_of_pin]
        net_k, own_k = net_of_pin[keep], owner[nl.net_pins[keep]]
        hard_col = np.full(n_nodes, -1, np.int64)
        hard_col[self.macros] = np.arange(n)
        soft_col = np.full(n_nodes, -1, np.int64)
        soft_col[nl.soft_macros] = np.arange(len(nl.soft_macros))
        hard = np.zeros((nl.num_nets, n))  # net x hard macro incidence (dense: few hard macros)
        sel = hard_col[own_k] >= 0
        hard[net_k[sel], hard_col[own_k[sel]]] = 1.0
        sel = soft_col[own_k] >= 0
        pairs = np.unique(np.stack([net_k[sel], soft_col[own_k[sel]]]), axis=1)
        hs = np.zeros((max(len(nl.soft_macros), 1), n))  # soft macro x hard macro shared nets
        np.add.at(hs, pairs[1], hard[pairs[0]])
        adj = hard.T @ hard + 0.1 * hs.T @ hs
        np.fill_diagonal(adj, 0)
        src, dst = [], []
        for i in range(n):
            nz = np.flatnonzero(adj[i] > 0)
            best = nz[np.argsort(-adj[i, nz], kind="stable")[:top_k]]
            src.extend([i] * len(best))
            dst.extend(best.tolist())
        e = np.array([src, dst], dtype=np.int64).reshape(2, -1)
        e = np.unique(np.sort(e, axis=0), axis=1)
        return e
