"""Benchmark models for device placement, written as plain nn.Modules that torch.fx traces.

LSTMs are unrolled over a short fixed sequence with nn.LSTMCell, so the graph has an op per layer
per timestep, as the TensorFlow graphs of the 2017 device-placement paper did. Each builder takes
sizes; `build_benchmark(name, size)` returns (module, example inputs) at "full" size (the figures
in docs/benchmarks.md), "small" (calibration on this CPU) or "tiny" (tests), on the meta device
by default (shapes only, no memory) or a real one. Every model returns the scalar training loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class StackedCells(nn.Module):
    """A stack of LSTM cells (one per layer), unrolled by the caller one timestep at a time."""

    def __init__(self, input_size: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.cells = nn.ModuleList(
            nn.LSTMCell(input_size if i == 0 else hidden, hidden) for i in range(layers)
        )


def _unroll(cells: nn.ModuleList, xs: list[Tensor], hidden: int) -> list[Tensor]:
    """Run every cell over every timestep; returns the top layer's outputs per step."""
    b = xs[0].shape[0]
    state = [(xs[0].new_zeros(b, hidden), xs[0].new_zeros(b, hidden)) for _ in cells]
    outs = []
    for x in xs:
        for i, cell in enumerate(cells):
            hc = cell(x, state[i])
            state[i] = (hc[0], hc[1])
            x = hc[0]
        outs.append(x)
    return outs


class RNNLM(nn.Module):
    """Language model: embedding, stacked LSTM unrolled over `steps`, softmax projection per step."""

    def __init__(self, vocab: int = 16000, hidden: int = 1024, layers: int = 2, steps: int = 10) -> None:
        super().__init__()
        self.steps, self.hidden = steps, hidden
        self.embed = nn.Embedding(vocab, hidden)
        self.lstm = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))
        self.proj = nn.Linear(hidden, vocab)

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Sum over steps of the cross-entropy of the next token."""
        e = self.embed(idx)
        outs = _unroll(self.lstm, [e[:, t] for t in range(self.steps)], self.hidden)
        losses = [F.cross_entropy(self.proj(h), targets[:, t]) for t, h in enumerate(outs)]
        return torch.stack(losses).sum()


class Attention(nn.Module):
    """Luong dot-product attention over the encoder states, combined with the decoder state."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.combine = nn.Linear(2 * hidden, hidden)

    def forward(self, h: Tensor, memory: Tensor) -> Tensor:
        """h [B,H], memory [B,S,H] -> attentional hidden state [B,H]."""
        scores = torch.bmm(memory, h.unsqueeze(2))  # [B,S,1]
        weights = torch.softmax(scores, dim=1)
        context = torch.bmm(weights.transpose(1, 2), memory).squeeze(1)  # [B,H]
        return torch.tanh(self.combine(torch.cat([h, context], dim=1)))


class NMT(nn.Module):
    """GNMT-style sequence-to-sequence: LSTM encoder, LSTM decoder, attention, softmax per step."""

    def __init__(self, vocab: int = 16000, hidden: int = 1024, layers: int = 4, steps: int = 10) -> None:
        super().__init__()
        self.steps, self.hidden = steps, hidden
        self.embed_src = nn.Embedding(vocab, hidden)
        self.encoder = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))
        self.embed_tgt = nn.Embedding(vocab, hidden)
        self.decoder = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))
        self.attention = Attention(hidden)
        self.proj = nn.Linear(hidden, vocab)

    def forward(self, src: Tensor, tgt: Tensor, targets: Tensor) -> Tensor:
        """Teacher-forced training loss."""
        es, et = self.embed_src(src), self.embed_tgt(tgt)
        enc = _unroll(self.encoder, [es[:, t] for t in range(self.steps)], self.hidden)
        memory = torch.stack(enc, dim=1)
        dec = _unroll(self.decoder, [et[:, t] for t in range(self.steps)], self.hidden)
        losses = [
            F.cross_entropy(self.proj(self.attention(h, memory)), targets[:, t]) for t, h in enumerate(dec)
        ]
        return torch.stack(losses).sum()


class ConvBN(nn.Sequential):
    """Convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
        )


class InceptionBlock(nn.Module):
    """Four branches (1x1; 1x1-3x3; 1x1-3x3-3x3; pool-1x1) concatenated, Inception-V3 style."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.b1 = ConvBN(cin, width, 1)
        self.b3 = nn.Sequential(ConvBN(cin, width, 1), ConvBN(width, width, 3, padding=1))
        self.b5 = nn.Sequential(
            ConvBN(cin, width, 1), ConvBN(width, width, 3, padding=1), ConvBN(width, width, 3, padding=1)
        )
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.bp = ConvBN(cin, width, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the branches along channels."""
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(self.pool(x))], dim=1)


class InceptionNet(nn.Module):
    """An Inception-V3-style CNN: a stem, inception blocks with two grid reductions, a classifier."""

    def __init__(self, classes: int = 1000, width: int = 64, blocks: int = 9) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvBN(3, 32, 3, 2),
            ConvBN(32, 64, 3, padding=1),
            nn.MaxPool2d(3, 2),
            ConvBN(64, 4 * width, 3, padding=1),
            nn.MaxPool2d(3, 2),
        )
        layers: list[nn.Module] = []
        for i in range(blocks):
            layers.append(InceptionBlock(4 * width, width))
            if i in (blocks // 3, 2 * blocks // 3):
                layers.append(nn.MaxPool2d(3, 2))
        self.blocks = nn.ModuleList(layers)
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: Tensor, targets: Tensor) -> Tensor:
        """Classification loss."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return F.cross_entropy(self.head(x.mean(dim=(2, 3))), targets)


class Block(nn.Module):
    """Pre-norm Transformer block: causal self-attention and an MLP, each with a residual."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        """x [B,T,d] -> [B,T,d]."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.out(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Transformer(nn.Module):
    """Decoder-only Transformer language model."""

    def __init__(
        self, vocab: int = 16000, d: int = 1024, heads: int = 16, layers: int = 6, seq: int = 256
    ) -> None:
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.proj = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Next-token loss."""
        x = self.embed(idx) + self.pos.weight[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        logits = self.proj(self.ln(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class MoELSTM(nn.Module):
    """The MoE paper's language model: LSTM layers with a sparsely-gated MoE layer after each but the last."""

    def __init__(
        self,
        vocab: int = 16000,
        hidden: int = 1024,
        experts: int = 64,
        expert_hidden: int = 4096,
        k: int = 4,
        lstm_layers: int = 3,
        steps: int = 10,
    ) -> None:
        super().__init__()
        from moeplace.moe import MoE

        self.steps, self.hidden = steps, hidden
        self.embed = nn.Embedding(vocab, hidden)
        self.lstm = nn.ModuleList(nn.ModuleList([nn.LSTMCell(hidden, hidden)]) for _ in range(lstm_layers))
        self.moe = nn.ModuleList(MoE(hidden, expert_hidden, experts, k) for _ in range(lstm_layers - 1))
        self.proj = nn.Linear(hidden, vocab)

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        """LSTM -> MoE (over all timesteps at once) -> LSTM ... -> softmax per step."""
        x = self.embed(idx)
        xs = [x[:, t] for t in range(self.steps)]
        for i, cells in enumerate(self.lstm):
            xs = _unroll(cells, xs, self.hidden)
            if i < len(self.moe):
                y = self.moe[i](torch.stack(xs, dim=1))
                xs = [y[:, t] for t in range(self.steps)]
        losses = [F.cross_entropy(self.proj(h), targets[:, t]) for t, h in enumerate(xs)]
        return torch.stack(losses).sum()


def _tokens(batch: int, steps: int, vocab: int, device: str, n: int) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(
        torch.randint(0, vocab, (batch, steps), generator=g, device="cpu").to(device) for _ in range(n)
    )


def _lm(cls: type, **kw: int) -> Callable:
    def build(size: dict, batch: int, device: str) -> tuple[nn.Module, tuple]:
        m = cls(**{**kw, **size})
        steps = getattr(m, "steps", size.get("seq", 8))
        return m, _tokens(batch, steps, size.get("vocab", 16000), device, 2)

    return build


def _nmt(layers: int) -> Callable:
    def build(size: dict, batch: int, device: str) -> tuple[nn.Module, tuple]:
        m = NMT(layers=layers, **size)
        return m, _tokens(batch, m.steps, size.get("vocab", 16000), device, 3)

    return build


def _inception(size: dict, batch: int, device: str) -> tuple[nn.Module, tuple]:
    res = size.pop("resolution", 299)
    m = InceptionNet(**size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, res, res, generator=g, device="cpu").to(device)
    return m, (x, torch.randint(0, size.get("classes", 1000), (batch,), generator=g, device="cpu").to(device))


_TINY_LSTM = {"vocab": 50, "hidden": 16, "steps": 4}
_SMALL_LSTM = {"vocab": 2000, "hidden": 256, "steps": 6}
# name -> ({size: model kwargs}, {size: batch}, builder)
_BATCH = {"full": 64, "small": 32, "tiny": 4}
BENCHMARKS: dict[str, tuple[dict[str, dict], dict[str, int], Callable]] = {
    "rnnlm": ({"full": {}, "small": _SMALL_LSTM, "tiny": _TINY_LSTM}, _BATCH, _lm(RNNLM)),
    "nmt2": ({"full": {}, "small": _SMALL_LSTM, "tiny": _TINY_LSTM}, _BATCH, _nmt(2)),
    "nmt4": ({"full": {}, "small": _SMALL_LSTM, "tiny": _TINY_LSTM}, _BATCH, _nmt(4)),
    "nmt8": ({"full": {}, "small": _SMALL_LSTM, "tiny": _TINY_LSTM}, _BATCH, _nmt(8)),
    "inception": (
        {
            "full": {},
            "small": {"classes": 100, "width": 16, "blocks": 6, "resolution": 96},
            "tiny": {"classes": 10, "width": 4, "blocks": 3, "resolution": 64},
        },
        {"full": 32, "small": 8, "tiny": 2},
        _inception,
    ),
    "transformer": (
        {
            "full": {},
            "small": {"vocab": 2000, "d": 256, "heads": 4, "layers": 4, "seq": 64},
            "tiny": {"vocab": 50, "d": 16, "heads": 2, "layers": 2, "seq": 8},
        },
        {"full": 32, "small": 8, "tiny": 2},
        _lm(Transformer),
    ),
    "moe_lstm": (
        {
            "full": {},
            "small": {**_SMALL_LSTM, "experts": 8, "expert_hidden": 512, "k": 2},
            "tiny": {**_TINY_LSTM, "experts": 4, "expert_hidden": 32, "k": 2},
        },
        _BATCH,
        _lm(MoELSTM),
    ),
}
SIZES = ("full", "small", "tiny")


def build_benchmark(
    name: str, size: str = "full", device: str = "meta", batch: int | None = None
) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """(module, example inputs) of a benchmark model; size "full", "small" or "tiny"; meta by default."""
    from moeplace.errors import InputError

    if name not in BENCHMARKS:
        raise InputError(f"--model {name}: unknown benchmark model (choose from {', '.join(BENCHMARKS)})")
    if size not in SIZES:
        raise InputError(f"--size {size}: choose from {', '.join(SIZES)}")
    sizes, batches, builder = BENCHMARKS[name]
    with torch.device(device):
        torch.manual_seed(0)
        module, inputs = builder(
            dict(sizes[size]), batch or batches[size], "cpu" if device == "meta" else device
        )
    if device == "meta":
        inputs = tuple(x.to("meta") for x in inputs)
    return module, inputs
