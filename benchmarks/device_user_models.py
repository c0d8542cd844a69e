"""Two models a user would bring that belong to no built-in family, for `module:attr` tracing:
a U-Net-style encoder-decoder CNN with skip connections, and a wide-and-deep recommender MLP.

    moeplace place device --model benchmarks.device_user_models:unet --method expert,transfer
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UNet(nn.Module):
    """Three down blocks, three up blocks, skip connections by concatenation, a per-pixel loss."""

    def __init__(self, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.inp = nn.Conv2d(3, chans[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1)
                                  for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(depth))
        self.fuse = nn.ModuleList(nn.Conv2d(2 * chans[i], chans[i], 3, padding=1) for i in range(depth))
        self.out = nn.Conv2d(chans[0], 2, 1)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Segmentation loss of image batch x."""
        skips, h = [], F.relu(self.inp(x))
        for down in self.down:
            skips.append(h)
            h = F.relu(down(h))
        for i in reversed(range(len(self.up))):
            h = F.relu(self.fuse[i](torch.cat([self.up[i](h), skips[i]], dim=1)))
        return F.cross_entropy(self.out(h), target)


class WideDeep(nn.Module):
    """Embedding tables for sparse features, a deep MLP tower and a wide linear part."""

    def __init__(self, tables: int = 8, rows: int = 100_000, dim: int = 64, hidden: int = 1024) -> None:
        super().__init__()
        self.embeds = nn.ModuleList(nn.Embedding(rows, dim) for _ in range(tables))
        self.deep = nn.Sequential(nn.Linear(tables * dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                  nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(),
                                  nn.Linear(hidden // 2, 1))
        self.wide = nn.Linear(tables * dim, 1)

    def forward(self, idx: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Click-prediction loss of index batch idx [B, tables]."""
        z = torch.cat([e(idx[:, i]) for i, e in enumerate(self.embeds)], dim=1)
        return F.binary_cross_entropy_with_logits((self.deep(z) + self.wide(z))[:, 0], label)


def unet() -> tuple[nn.Module, tuple]:
    """U-Net on 16 RGB images of 128x128 (meta device: nothing allocated)."""
    with torch.device("meta"):
        return UNet(), (torch.empty(16, 3, 128, 128), torch.zeros(16, 128, 128, dtype=torch.long))


def wide_deep() -> tuple[nn.Module, tuple]:
    """Wide-and-deep on a batch of 512 examples of 8 sparse features."""
    with torch.device("meta"):
        return WideDeep(), (torch.zeros(512, 8, dtype=torch.long), torch.empty(512))
