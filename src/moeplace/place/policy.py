"""Placement policy: a graph encoder over the problem's node graph plus a per-slot action head.

The encoder runs a few rounds of mean-aggregation message passing (plain torch, index_add_) over
`problem.node_edges()`. Each node's input is its static features, whether it is placed, the
features of the slot it sits on, and whether it is the node to place now. Two heads score slots:
"attention" (scaled dot product between a query from the current node and the graph, and slot
embeddings; any problem) and "conv" (a small CNN over the grid of slot maps conditioned on the
query; grid problems such as chip canvases, as in Circuit Training). Returns (logits, value).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from moeplace.place.core import PlacementProblem

MASKED_LOGIT = -1e9


class MessagePassing(nn.Module):
    """One round: h <- h + MLP([h, mean of neighbours' h]) with layer norm."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                inv_deg: torch.Tensor) -> torch.Tensor:
        """h [B, N, H]; edges src->dst (both directions present); inv_deg [N, 1]."""
        agg = torch.zeros_like(h).index_add_(1, dst, h[:, src]) * inv_deg
        return self.norm(h + self.mlp(torch.cat([h, agg], dim=-1)))


class GraphEncoder(nn.Module):
    """Embeds every node from its features, placement and neighbourhood; returns [B, N, H]."""

    def __init__(self, in_dim: int, hidden: int, rounds: int, edges: np.ndarray, num_nodes: int) -> None:
        super().__init__()
        e = torch.as_tensor(np.asarray(edges, dtype=np.int64).reshape(2, -1))
        src = torch.cat([e[0], e[1]])
        dst = torch.cat([e[1], e[0]])
        deg = torch.zeros(num_nodes).index_add_(0, dst, torch.ones(dst.numel()))
        self.register_buffer("src", src, persistent=False)
        self.register_buffer("dst", dst, persistent=False)
        self.register_buffer("inv_deg", (1.0 / deg.clamp(min=1.0)).unsqueeze(-1), persistent=False)
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.rounds = nn.ModuleList(MessagePassing(hidden) for _ in range(rounds))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, in_dim] -> node embeddings [B, N, H]."""
        h = self.embed(x)
        for layer in self.rounds:
            h = layer(h, self.src, self.dst, self.inv_deg)
        return h


class AttentionHead(nn.Module):
    """Logit of slot s = <W_q query, slot embedding_s> / sqrt(H): works for any set of slots."""

    def __init__(self, slot_dim: int, hidden: int) -> None:
        super().__init__()
        self.slot = nn.Sequential(nn.Linear(slot_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.query = nn.Linear(hidden, hidden)

    def forward(self, query: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """query [B, H], slots [B, S, slot_dim] -> logits [B, S]."""
        k = self.slot(slots)
        return torch.einsum("bh,bsh->bs", self.query(query), k) / math.sqrt(k.shape[-1])


class ConvHead(nn.Module):
    """A CNN over the grid of slot maps plus the broadcast query; one logit per grid cell."""

    def __init__(self, slot_dim: int, hidden: int, grid_shape: tuple[int, int], channels: int = 32) -> None:
        super().__init__()
        self.rows, self.cols = grid_shape
        self.film = nn.Linear(hidden, channels)
        self.inp = nn.Conv2d(slot_dim, channels, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, 1, 1))

    def forward(self, query: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """query [B, H], slots [B, S, slot_dim] with S = rows*cols row-major -> logits [B, S]."""
        b = slots.shape[0]
        grid = slots.transpose(1, 2).reshape(b, -1, self.rows, self.cols)
        z = self.inp(grid) + self.film(query)[:, :, None, None]
        return self.body(z).reshape(b, -1)


class PlacementPolicy(nn.Module):
    """(logits over slots, value) for the PlacementEnv observation of any PlacementProblem."""

    def __init__(self, problem: PlacementProblem, hidden: int = 64, rounds: int = 3,
                 head: str = "auto") -> None:
        super().__init__()
        node_f = np.asarray(problem.node_features(), dtype=np.float32)
        slot_f = np.asarray(problem.slot_features(), dtype=np.float32)
        self.num_nodes, self.num_slots = node_f.shape[0], slot_f.shape[0]
        self.node_dim, self.slot_dim = node_f.shape[1], slot_f.shape[1]
        grid = getattr(problem, "grid_shape", None)
        if head == "auto":
            head = "conv" if grid is not None else "attention"
        if head == "conv" and (grid is None or grid[0] * grid[1] != self.num_slots):
            raise ValueError("head='conv' needs problem.grid_shape with rows*cols == num_slots")
        if head not in ("conv", "attention"):
            raise ValueError(f"head must be 'auto', 'conv' or 'attention', got {head!r}")
        self.head_kind = head
        # per-node input: features, placed flag, features of its slot, is-current flag
        self.encoder = GraphEncoder(self.node_dim + 1 + self.slot_dim + 1, hidden, rounds,
                                    problem.node_edges(), self.num_nodes)
        self.query = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU())
        slot_in = self.slot_dim + 1  # slot features + occupancy
        self.head: nn.Module = (ConvHead(slot_in, hidden, grid) if head == "conv"
                                else AttentionHead(slot_in, hidden))
        self.value = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """obs: the env's Dict observation as tensors, batched [B, ...] or unbatched."""
        node_f = torch.as_tensor(obs["node_features"], dtype=torch.float32)
        unbatched = node_f.dim() == 2
        if unbatched:
            obs = {k: torch.as_tensor(v).unsqueeze(0) for k, v in obs.items()}
            node_f = node_f.unsqueeze(0)
        placement = torch.as_tensor(obs["placement"]).long().reshape(node_f.shape[0], -1)
        current = torch.as_tensor(obs["current_node"]).long().reshape(-1)
        slot_f = torch.as_tensor(obs["slot_features"], dtype=torch.float32)
        occupancy = torch.as_tensor(obs["slot_occupancy"], dtype=torch.float32)
        b, n = placement.shape
        placed = (placement >= 0).float().unsqueeze(-1)
        where = placement.clamp(min=0)
        node_slot_f = torch.gather(slot_f, 1, where.unsqueeze(-1).expand(b, n, self.slot_dim)) * placed
        is_current = F.one_hot(current, n).float().unsqueeze(-1)
        h = self.encoder(torch.cat([node_f, placed, node_slot_f, is_current], dim=-1))
        context = torch.cat([h[torch.arange(b), current], h.mean(dim=1)], dim=-1)
        logits = self.head(self.query(context), torch.cat([slot_f, occupancy.unsqueeze(-1)], dim=-1))
        if "action_mask" in obs:
            mask = torch.as_tensor(obs["action_mask"]).reshape(b, -1).bool()
            logits = logits.masked_fill(~mask, MASKED_LOGIT)
        value = self.value(context).squeeze(-1)
        if unbatched:
            return logits.squeeze(0), value.squeeze(0)
        return logits, value
