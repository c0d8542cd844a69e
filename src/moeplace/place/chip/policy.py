"""A chip placement policy whose weights do not depend on the netlist's size or the grid's.

As in Circuit Training, a graph encoder embeds the netlist's macros once per forward (static node
features, message passing over the macro graph: weights shared across nodes), and a fully
convolutional head scores every grid cell (weights shared across cells), conditioned on the macro
to place now (FiLM from its embedding and the graph's mean). The per-step state enters through cell
maps: static cell features, occupancy, the legality mask, and the "pull" of the current macro's
already-placed neighbours (their edge weight at their cell), each cell's distance to the canvas edge,
and the wire mask (the HPWL each cell would add, `WireMask`): relative, as the growth over the
legal minimum in units of `wire_unit` (one cell further from every net of the macro), and absolute,
as log1p(HPWL / (W + H)). The wire mask also enters the logits directly, times a learned weight
(`wire_weight`, starting at 4 per cell of extra wire per unit of net weight), and so does the
distance to the canvas edge in cells (`edge_weight`, starting at 0: whether macros belong at the
periphery is learnt). The conv head's output starts at zero: an untrained policy is the wire-mask
greedy, and training learns where density and congestion should overrule it. Netlists are
registered with `add_design` (not part of the weights), so one set of weights serves any number of
designs of any size; the observation's `design` says which one a batch belongs to. Returns (logits, value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from moeplace.place.chip.problem import ChipProblem

MASKED_LOGIT = -1e9
PRIOR_GAIN = 20.0  # the two prior weights are stored / PRIOR_GAIN: Adam moves them PRIOR_GAIN x faster
NODE_DIM, CELL_DIM = 5, 4  # ChipProblem.node_features / slot_features widths


@dataclass
class Design:
    """The static tensors of one netlist on its grid."""

    nodes: torch.Tensor  # [n, NODE_DIM]
    adj: torch.Tensor  # [n, n] row-normalised adjacency (mean over neighbours)
    pull: torch.Tensor  # [n, n] adjacency rows normalised to sum 1 (weights of the pull map)
    cells: torch.Tensor  # [CELL_DIM, rows, cols]
    rows: int
    cols: int
    span: float  # canvas width + height (microns): the wire mask's absolute scale
    wire_unit: torch.Tensor  # [n] per macro: its nets' total weight x the mean cell side (microns)


def design_of(problem: ChipProblem) -> Design:
    """The policy's static view of a chip problem (orientations=False)."""
    n = problem.num_nodes
    a = np.zeros((n, n), np.float32)
    e = problem.node_edges()
    a[e[0], e[1]] = a[e[1], e[0]] = 1.0
    deg = np.maximum(a.sum(1, keepdims=True), 1.0)
    rows, cols = problem.grid.rows, problem.grid.columns
    cells = np.asarray(problem.slot_features(), np.float32).T.reshape(-1, rows, cols)
    return Design(torch.as_tensor(problem.node_features(), dtype=torch.float32), torch.as_tensor(a / deg),
                  torch.as_tensor(a / deg), torch.as_tensor(cells), rows, cols,
                  float(problem.grid.width + problem.grid.height), _wire_unit(problem))


def _wire_unit(problem: ChipProblem) -> torch.Tensor:
    """The HPWL growth of moving macro i one cell further from all its nets' pins: the unit in which
    the policy reads wire-mask differences (design-size independent)."""
    from moeplace.place.chip.wiremask import WireMask

    wm, g = WireMask(problem), problem.grid
    pitch = (g.cell_width + g.cell_height) / 2
    total = np.array([wm.weight[k].sum() for k in wm.nets], np.float64)
    return torch.as_tensor(np.maximum(total, 1.0) * pitch, dtype=torch.float32)


class GraphEncoder(nn.Module):
    """h <- LayerNorm(h + MLP([h, mean of neighbours' h])), a few rounds; dense adjacency."""

    def __init__(self, in_dim: int, hidden: int, rounds: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                                nn.Linear(hidden, hidden)) for _ in range(rounds))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(rounds))

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """x [n, in_dim], adj [n, n] -> [n, hidden]."""
        h = self.embed(x)
        for mlp, norm in zip(self.mlps, self.norms):
            h = norm(h + mlp(torch.cat([h, adj @ h], dim=-1)))
        return h


class ChipPolicy(nn.Module):
    """(masked logits over grid cells [B, cells], value [B]) for BatchedChipEnv observations."""

    def __init__(self, hidden: int = 64, rounds: int = 3, channels: int = 16) -> None:
        super().__init__()
        self.hidden, self.rounds, self.channels = hidden, rounds, channels
        self.temperature = 1.0  # sampling temperature: logits are divided by it (greedy choice unchanged)
        self.incumbent_logit = 0.0  # improvement mode: added to the incumbent's cell (obs "incumbent")
        self.encoder = GraphEncoder(NODE_DIM, hidden, rounds)
        self.query = nn.Sequential(nn.Linear(2 * hidden + 1, hidden), nn.ReLU())
        in_maps = CELL_DIM + 6  # static cells, edge distance, occupancy, mask, pull, wire mask (rel., abs.)
        self.inp = nn.Conv2d(in_maps, channels, 3, padding=1)
        self.film = nn.Linear(hidden, 2 * channels)
        self.body = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1),
                                   nn.Conv2d(channels, channels, 3, padding=2, dilation=2)])
        self.out = nn.Conv2d(channels, 1, 1)
        with torch.no_grad():
            self.out.weight.zero_()  # untrained: the wire-mask greedy; the conv head learns corrections
            self.out.bias.zero_()
        # logits -= exp(wire) * relative wire mask + edge * cells to the canvas edge (see PRIOR_GAIN)
        self.wire_weight = nn.Parameter(torch.tensor(float(np.log(4.0)) / PRIOR_GAIN))
        self.edge_weight = nn.Parameter(torch.zeros(()))
        self.value = nn.Sequential(nn.Linear(hidden + channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self._designs: list[Design] = []
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def add_design(self, problem: ChipProblem) -> int:
        """Register a netlist; returns its design id (the env's `design`)."""
        self._designs.append(design_of(problem))
        return len(self._designs) - 1

    def _encode(self, d: int, g: Design) -> torch.Tensor:
        """Node embeddings of design d; without autograd (rollouts) cached until a weight changes."""
        if torch.is_grad_enabled():
            return self.encoder(g.nodes, g.adj)
        key = (d, tuple(p._version for p in self.encoder.parameters()))  # in-place updates bump _version
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.encoder(g.nodes, g.adj))
        return self._cache[1]

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """obs: BatchedChipEnv observations as tensors, batched [B, ...] (one design per batch)."""
        design = torch.as_tensor(obs["design"]).reshape(-1)
        d = int(design[0])
        if not bool((design == d).all()):
            raise ValueError("ChipPolicy: a batch must hold one design")
        if not 0 <= d < len(self._designs):
            raise ValueError(f"ChipPolicy: design {d} not registered (add_design)")
        g = self._designs[d]
        placement = torch.as_tensor(obs["placement"]).long()
        b, n = placement.shape
        current = torch.as_tensor(obs["current_node"]).long().reshape(b)
        placed = placement >= 0
        h = self._encode(d, g)  # [n, H], once for the whole batch
        progress = placed.float().mean(dim=1, keepdim=True)
        context = torch.cat([h[current], h.mean(dim=0).expand(b, -1), progress], dim=-1)
        q = self.query(context)
        pull = torch.zeros(b, g.rows * g.cols).scatter_add_(1, placement.clamp(min=0),
                                                            g.pull[current] * placed.float())
        occupancy = torch.as_tensor(obs["slot_occupancy"], dtype=torch.float32)
        mask = torch.as_tensor(obs["action_mask"]).reshape(b, -1).bool()
        wire = torch.as_tensor(obs["wiremask"], dtype=torch.float32).reshape(b, -1)
        lo = wire.masked_fill(~mask, float("inf")).amin(dim=1, keepdim=True)
        rel = ((wire - lo) / g.wire_unit[current][:, None]).masked_fill(~mask, 0.0)
        rel = torch.nan_to_num(rel, nan=0.0, posinf=0.0)  # no legal cell: the env ends the episode anyway
        absolute = torch.log1p(wire / g.span)
        cx, cy = g.cells[0], g.cells[1]  # cell centre, canvas fractions
        edge = 2 * torch.minimum(torch.minimum(cx, 1 - cx), torch.minimum(cy, 1 - cy))
        maps = torch.cat([g.cells.expand(b, -1, -1, -1), edge.expand(b, 1, -1, -1),
                          torch.stack([occupancy, mask.float(), pull, rel / (1 + rel), absolute], dim=1)
                          .reshape(b, 5, g.rows, g.cols)], dim=1)
        scale, shift = self.film(q).chunk(2, dim=-1)
        z = F.relu(self.inp(maps) * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
        for conv in self.body:
            z = F.relu(z + conv(z))
        wire_w, edge_w = (PRIOR_GAIN * self.wire_weight).exp(), PRIOR_GAIN * self.edge_weight
        to_edge = (edge * (min(g.rows, g.cols) / 2)).reshape(1, -1)  # cells to the canvas edge
        logits = self.out(z).reshape(b, -1) - wire_w * rel - edge_w * to_edge
        if self.incumbent_logit and "incumbent" in obs:  # samples become variations of the incumbent
            inc = torch.as_tensor(obs["incumbent"]).long().reshape(b)
            has = torch.nonzero(inc >= 0).squeeze(-1)
            logits = logits.index_put((has, inc[has]), torch.tensor(self.incumbent_logit), accumulate=True)
        logits = logits / self.temperature
        logits = logits.masked_fill(~mask, MASKED_LOGIT)
        value = self.value(torch.cat([q, z.mean(dim=(2, 3))], dim=-1)).squeeze(-1)
        return logits, value


def set_priors(policy: ChipPolicy, wire: float | None = None, edge: float | None = None) -> None:
    """Set the untrained policy's prior weights: `wire` (logit per cell of extra wire per unit of net
    weight) and `edge` (logit per cell to the canvas edge); None leaves one as it is."""
    with torch.no_grad():
        if wire is not None:
            policy.wire_weight.fill_(float(np.log(wire)) / PRIOR_GAIN)
        if edge is not None:
            policy.edge_weight.fill_(float(edge) / PRIOR_GAIN)
