"""Seeded synthetic chip designs in Circuit Training's format: a training corpus for placement policies.

A design is drawn from its seed alone. Hard macros come in banks of identical memories (a mix of a
few large, some medium and many small ones); the canvas is sized for a hard-macro utilisation of
20-50 % and a soft-macro (standard-cell cluster) utilisation of 10-30 %, with an aspect ratio of 1:2
to 2:1; the grid has near-square cells about the size of a typical macro, chosen so a legal greedy
placement of every hard macro exists (refined, then the canvas grown, until one does). Soft macros
sit around a few module centres; hard-macro banks sit beside a module that drives them. Nets
(synth_nets.py) follow Circuit Training's clustered netlists and are mostly local, as Rent's rule
describes. The initial placement puts soft macros at their latent positions and hard macros on the
grid cell nearest theirs (ChipProblem.snap, else its bottom-left packing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moeplace.errors import InfeasibleError
from moeplace.place.chip.netlist import Netlist, NodeKind
from moeplace.place.chip.plc import PlcHeader
from moeplace.place.chip.problem import ChipProblem

MIN_MACROS, MAX_MACROS = 20, 300
MAX_MACROS_LIMIT = 500  # the largest hard-macro count a design may ask for
MAX_GRID = 64  # cells per side
# (area range um^2, bank size range) per macro class: large memories, medium, small
_CLASSES = {"large": ((150.0**2, 420.0**2), (1, 2)), "medium": ((60.0**2, 160.0**2), (2, 8)),
            "small": ((18.0**2, 70.0**2), (2, 24))}


@dataclass
class Design:
    """One generated design: its netlist (initial placement in its positions), .plc header and figures."""

    name: str
    seed: int
    netlist: Netlist
    header: PlcHeader
    info: dict[str, object] = field(default_factory=dict)


def design_seed(corpus_seed: int, index: int) -> int:
    """The seed of design `index` of a corpus (so any design can be regenerated alone)."""
    return int(np.random.SeedSequence([corpus_seed, index]).generate_state(1, np.uint32)[0])


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size=None):
    """Log-uniform samples in [lo, hi]."""
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _macro_sizes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Widths, heights and bank ids of n hard macros, drawn bank by bank from a design-specific mix."""
    p_large, p_medium = rng.uniform(0.0, 0.2), rng.uniform(0.1, 0.5)
    probs = np.array([p_large, p_medium, 1.0 - p_large - p_medium])
    w, h, bank = [], [], []
    b = 0
    while len(w) < n:
        cls = list(_CLASSES)[int(rng.choice(3, p=probs))]
        (a_lo, a_hi), (c_lo, c_hi) = _CLASSES[cls]
        count = min(int(rng.integers(c_lo, c_hi + 1)), n - len(w))
        area, aspect = _loguniform(rng, a_lo, a_hi), _loguniform(rng, 1 / 3, 3)
        w += [round(float(np.sqrt(area * aspect)), 2)] * count
        h += [round(float(np.sqrt(area / aspect)), 2)] * count
        bank += [b] * count
        b += 1
    return np.array(w), np.array(h), np.array(bank)


def _canvas(rng: np.random.Generator, w: np.ndarray, h: np.ndarray) -> tuple[float, float, float]:
    """Canvas (width, height) for a hard-macro utilisation of 20-50 % and an aspect of 1:2 to 2:1; and
    the soft-macro utilisation."""
    util = rng.uniform(0.2, 0.5)
    area = float(np.sum(w * h)) / util
    aspect = _loguniform(rng, 0.5, 2.0)
    width, height = np.sqrt(area * aspect), np.sqrt(area / aspect)
    width, height = max(width, 1.2 * w.max()), max(height, 1.2 * h.max())
    soft_util = min(rng.uniform(0.1, 0.3), 0.8 - util)
    return round(float(width), 3), round(float(height), 3), float(soft_util)


def _grid(rng: np.random.Generator, width: float, height: float, w: np.ndarray,
          h: np.ndarray) -> tuple[int, int]:
    """Columns and rows: near-square cells (aspect 3:4 to 4:3) about the size of a typical macro
    (0.9-1.8 x the side of the median macro area), 4 to MAX_GRID a side."""
    side = float(np.sqrt(np.median(w * h))) * rng.uniform(0.9, 1.8)
    aspect = _loguniform(rng, 0.75, 4 / 3)
    cols = int(np.clip(round(width / (side * np.sqrt(aspect))), 4, MAX_GRID))
    rows = int(np.clip(round(height / (side / np.sqrt(aspect))), 4, MAX_GRID))
    return cols, rows


def _ports(rng: np.random.Generator, n: int, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """n port positions on the boundary: buses of 1-32 ports at a 0.5-4 um pitch on 1 to 4 sides."""
    n_sides = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.3, 0.2, 0.3]))
    sides = rng.permutation(4)[:n_sides]
    xs, ys = [], []
    while len(xs) < n:
        side = int(sides[rng.integers(n_sides)])
        length = width if side in (0, 1) else height
        size = min(int(rng.integers(1, 33)), n - len(xs))
        pitch = rng.uniform(0.5, 4.0)
        t = np.clip(rng.uniform(0.05, 0.95) * length + (np.arange(size) - size / 2) * pitch, 0.0, length)
        t = np.round(t, 3)
        if side == 0:
            xs += t.tolist(); ys += [0.0] * size  # noqa: E702  (bottom)
        elif side == 1:
            xs += t.tolist(); ys += [height] * size  # noqa: E702  (top)
        elif side == 2:
            xs += [0.0] * size; ys += t.tolist()  # noqa: E702  (left)
        else:
            xs += [width] * size; ys += t.tolist()  # noqa: E702  (right)
    return np.array(xs), np.array(ys)


def _latent_layout(rng: np.random.Generator, n_soft: int, bank: np.ndarray, w: np.ndarray, h: np.ndarray,
                   width: float, height: float):
    """Module centres, soft-macro positions and module, hard-macro positions and driving module."""
    k = int(np.clip(round(np.sqrt(n_soft) / 1.5), 2, 30))
    centres = rng.uniform(0.08, 0.92, (k, 2)) * [width, height]
    module_weight = rng.dirichlet(np.full(k, 2.0))
    module = rng.choice(k, size=n_soft, p=module_weight)
    spread = 0.5 / np.sqrt(k) * np.array([width, height])
    soft_xy = centres[module] + rng.normal(0.0, 1.0, (n_soft, 2)) * spread * 0.8
    soft_xy = np.clip(soft_xy, 0.02 * np.array([width, height]), 0.98 * np.array([width, height]))
    n_banks = int(bank.max()) + 1
    bank_module = rng.integers(k, size=n_banks)
    hard_xy = np.zeros((len(bank), 2))
    for b in range(n_banks):
        members = np.flatnonzero(bank == b)
        centre = centres[bank_module[b]] + rng.normal(0.0, 1.0, 2) * spread
        cols = int(np.ceil(np.sqrt(len(members))))
        col, row = np.arange(len(members)) % cols, np.arange(len(members)) // cols
        offs = np.stack([(col - (cols - 1) / 2) * w[members], (row - row.max() / 2) * h[members]], axis=1)
        hard_xy[members] = centre + offs
    hard_xy = np.clip(hard_xy, np.stack([w / 2, h / 2], 1), np.stack([width - w / 2, height - h / 2], 1))
    return np.round(soft_xy, 3), module, hard_xy, bank_module


def _legal_grid(rng: np.random.Generator, w: np.ndarray, h: np.ndarray, xy: np.ndarray, width: float,
                height: float) -> tuple[PlcHeader, np.ndarray, float]:
    """A header whose grid admits a legal greedy placement of the hard macros, and that placement's
    centres (snapped near `xy`). Refines the grid, then grows the canvas, until one exists. Returns
    (header, centres, canvas scale applied)."""
    cols, rows = _grid(rng, width, height, w, h)
    scale = 1.0
    for attempt in range(40):
        header = PlcHeader(columns=cols, rows=rows, width=round(width * scale, 3),
                           height=round(height * scale, 3))
        sx, sy = header.width / width, header.height / height
        nl = _macros_only(w, h, xy[:, 0] * sx, xy[:, 1] * sy, (header.width, header.height))
        problem = ChipProblem(nl, header, soft="fixed", fd_iterations=0, incremental=False)
        try:
            placement = problem.initial_placement()
        except InfeasibleError:
            if attempt % 3 == 2 or max(cols, rows) >= MAX_GRID:
                scale *= 1.08  # the grid is fine enough: give the macros more room
            else:
                cols, rows = min(int(np.ceil(cols * 1.2)), MAX_GRID), min(int(np.ceil(rows * 1.2)), MAX_GRID)
            continue
        x, y, _ = problem.positions(placement)  # node order: the macros alone
        if not _no_overlap(x, y, w, h, header.width, header.height):
            raise AssertionError("greedy placement is not legal")  # snap and pack place legal cells only
        return header, np.stack([x, y], 1), header.width / width
    raise InfeasibleError(f"no legal grid found for {len(w)} macros")  # not reached for sane sizes


def _no_overlap(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray, width: float,
                height: float, eps: float = 1e-6) -> bool:
    """True when every rectangle lies inside the canvas and no two overlap (touching is fine)."""
    inside = ((x - w / 2 >= -eps) & (x + w / 2 <= width + eps) & (y - h / 2 >= -eps)
              & (y + h / 2 <= height + eps))
    ox = np.abs(x[:, None] - x[None, :]) < (w[:, None] + w[None, :]) / 2 - eps
    oy = np.abs(y[:, None] - y[None, :]) < (h[:, None] + h[None, :]) / 2 - eps
    overlap = ox & oy
    np.fill_diagonal(overlap, False)
    return bool(inside.all() and not overlap.any())


def _macros_only(w: np.ndarray, h: np.ndarray, x: np.ndarray, y: np.ndarray,
                 canvas: tuple[float, float]) -> Netlist:
    """A netlist of hard macros alone (legality depends on nothing else)."""
    n = len(w)
    z, e = np.zeros(n), np.zeros(0, np.int64)
    return Netlist(names=[f"m{i}" for i in range(n)], kind=np.full(n, int(NodeKind.HARD_MACRO), np.int8),
                   width=w.astype(float), height=h.astype(float), x=x.astype(float), y=y.astype(float),
                   orient=np.zeros(n, np.int8), fixed=np.zeros(n, bool), parent=np.full(n, -1, np.int64),
                   x_offset=z, y_offset=z.copy(), weight=np.ones(n), net_driver=e,
                   net_ptr=np.zeros(1, np.int64), net_pins=e, net_weight=np.zeros(0), canvas=canvas)


def generate_design(seed: int, name: str = "design", min_macros: int = MIN_MACROS,
                    max_macros: int = MAX_MACROS) -> Design:
    """One synthetic design drawn from `seed`: its netlist (with the initial placement) and header."""
    from moeplace.place.chip.synth_nets import build_netlist

    if not 1 <= min_macros <= max_macros:
        raise ValueError(f"need 1 <= min_macros <= max_macros, got {min_macros}, {max_macros}")
    rng = np.random.default_rng(seed)
    n_hard = int(np.clip(round(float(_loguniform(rng, min_macros, max_macros + 1)) - 0.5), min_macros,
                         max_macros))
    w, h, bank = _macro_sizes(rng, n_hard)
    width, height, soft_util = _canvas(rng, w, h)
    n_soft = int(np.clip(round(n_hard * rng.uniform(1.5, 4.0)), 40, 600))
    soft_xy, module, hard_xy, bank_module = _latent_layout(rng, n_soft, bank, w, h, width, height)
    header, hard_xy, scale = _legal_grid(rng, w, h, hard_xy, width, height)
    width, height = header.width, header.height
    soft_xy = np.round(soft_xy * scale, 3)
    n_ports = int(np.clip(round(_loguniform(rng, 16, max(32.0, 8 + 2.5 * n_hard))), 8, 600))
    port_x, port_y = _ports(rng, n_ports, width, height)
    area = _loguniform(rng, 1.0, 8.0, n_soft)
    area *= soft_util * width * height / area.sum()
    aspect = _loguniform(rng, 0.5, 2.0, n_soft)
    soft_w, soft_h = np.round(np.sqrt(area * aspect), 3), np.round(np.sqrt(area / aspect), 3)
    header.hroutes_per_micron = round(float(rng.uniform(45.0, 80.0)), 3)
    header.vroutes_per_micron = round(header.hroutes_per_micron * float(rng.uniform(0.9, 1.1)), 3)
    header.hrouting_alloc = round(header.hroutes_per_micron * float(rng.uniform(0.45, 0.75)), 3)
    header.vrouting_alloc = round(header.vroutes_per_micron * float(rng.uniform(0.45, 0.75)), 3)
    header.smoothing = float(rng.choice([0.0, 1.0, 2.0]))
    header.lines = [" Placement file for Circuit Training", " Source input file(s) : netlist.pb.txt",
                    f" Generated by : moeplace place chip generate (design seed {seed})",
                    " Project : moeplace_synthetic", f" Block : {name}"]
    netlist = build_netlist(rng, hard=(w, h, bank, hard_xy, bank_module),
                            soft=(soft_w, soft_h, soft_xy, module), ports=(port_x, port_y),
                            canvas=(width, height))
    info = {"name": name, "seed": seed, "hard_macros": n_hard, "soft_macros": n_soft, "ports": n_ports,
            "nets": netlist.num_nets, "canvas": [width, height], "grid": [header.columns, header.rows],
            "hard_utilization": round(float(np.sum(w * h)) / (width * height), 4),
            "soft_utilization": round(float(np.sum(soft_w * soft_h)) / (width * height), 4)}
    return Design(name=name, seed=seed, netlist=netlist, header=header, info=info)
