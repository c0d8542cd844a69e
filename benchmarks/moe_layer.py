"""Benchmark: forward+backward time of the MoE layer against a dense FFN, an HF-style loop and GShard one-hot.

Usage:
    .venv/bin/python benchmarks/moe_layer.py                 # the issue's configurations
    .venv/bin/python benchmarks/moe_layer.py --configs 16:2 --reps 5
    .venv/bin/python benchmarks/moe_layer.py --threads 1          # single-threaded torch
    python benchmarks/moe_layer.py --device cuda --dtype bfloat16 --tokens 16384   # on a GPU

2,048 tokens (rows E:k:T set their own), d=512, h=1,024, float32, torch's default thread count. All
candidates use softmax top-k routing so only dispatch and expert computation differ. Repetitions of the
candidates are interleaved and medians taken, so a noisy shared machine affects every candidate alike.
`experts_only` times the layer's expert matmuls alone on balanced pre-sorted rows: the floor any sorted-
dispatch layer meets on this CPU (small per-expert matmuls run below the dense matmul's FLOP rate). On
CUDA every step is synchronised before and after, and `moeplace_loop` is the layer with its fused grouped
GEMM turned off (per-expert loop), shown where the fused path applies (bfloat16 on Hopper). The last line
is JSON.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moeplace.allocator import retain_freed_memory
from moeplace.moe import MoE
from moeplace.utils import markdown_table, print_json_line


class DenseFFN(nn.Module):
    """The physical limit: one FFN with hidden size k·h (the same active parameters as k experts)."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class LoopMoE(nn.Module):
    """Per-expert loop in the style of Hugging Face's MixtralSparseMoeBlock (ModuleList of experts)."""

    def __init__(self, d: int, h: int, E: int, k: int) -> None:
        super().__init__()
        self.k, self.E = k, E
        self.gate = nn.Linear(d, E, bias=False)
        self.experts = nn.ModuleList(DenseFFN(d, h) for _ in range(E))

    def forward(self, x: Tensor) -> Tensor:
        probs = torch.softmax(self.gate(x), dim=-1)
        w, sel = probs.topk(self.k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        mask = F.one_hot(sel, self.E).permute(2, 1, 0)  # [E, k, T]
        for e in torch.nonzero(mask.sum((1, 2))).flatten().tolist():
            rank, tok = torch.where(mask[e])
            y = self.experts[e](x[tok]) * w[tok, rank, None]
            out.index_add_(0, tok, y)
        return out


class OneHotMoE(nn.Module):
    """GShard / DeepSpeed style: one-hot dispatch [T, E, C] and combine tensors with einsum."""

    def __init__(self, d: int, h: int, E: int, k: int, capacity_factor: float = 1.25) -> None:
        super().__init__()
        self.k, self.E, self.cf = k, E, capacity_factor
        self.gate = nn.Linear(d, E, bias=False)
        self.w1 = nn.Parameter(torch.randn(E, d, h) / math.sqrt(d))
        self.b1 = nn.Parameter(torch.zeros(E, 1, h))
        self.w2 = nn.Parameter(torch.randn(E, h, d) / math.sqrt(h))
        self.b2 = nn.Parameter(torch.zeros(E, 1, d))

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[0]
        C = math.ceil(self.cf * T * self.k / self.E)
        probs = torch.softmax(self.gate(x), dim=-1)
        w, sel = probs.topk(self.k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        onehot = F.one_hot(sel.t().reshape(-1), self.E)  # [k*T, E], rank-major priority
        position = (torch.cumsum(onehot, 0) - 1) * onehot
        keep = (position < C) & (onehot > 0)
        slot = F.one_hot(position.clamp(max=C - 1), C) * keep[..., None]  # [k*T, E, C]
        dispatch = slot.view(self.k, T, self.E, C).sum(0).to(x.dtype)  # [T, E, C]
        combine = (slot.view(self.k, T, self.E, C) * w.t().reshape(self.k, T, 1, 1)).sum(0)
        xe = torch.einsum("tec,td->ecd", dispatch, x)
        ye = torch.bmm(F.relu(torch.bmm(xe, self.w1) + self.b1), self.w2) + self.b2
        return torch.einsum("tec,ecd->td", combine, ye)


class ExpertsOnly(nn.Module):
    """The layer's expert computation alone on perfectly balanced rows (no router, no sort, no combine).

    The rows are the tokens repeated k times (one copy, as the dispatch gather makes).

    Its ratio to the dense FFN is the floor of the sorted-dispatch design on this machine: the same FLOPs
    as the dense FFN, but as E groups of matmuls with T·k/E rows each.
    """

    def __init__(self, moe: MoE, tokens: int) -> None:
        super().__init__()
        self.experts, self.k = moe.experts, moe.k
        E = moe.num_experts
        rows = tokens * moe.k
        self.register_buffer("counts", torch.tensor([rows // E + (e < rows % E) for e in range(E)]))

    def forward(self, x: Tensor) -> Tensor:
        return self.experts(x.repeat(self.k, 1), self.counts)[: x.shape[0]]


def step_time(model: nn.Module, x: Tensor, g: Tensor) -> float:
    """Seconds of one forward + backward (gradients reset to None first; CUDA work waited for)."""
    model.zero_grad(set_to_none=True)
    x.grad = None
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t = time.perf_counter()
    model(x).backward(g)
    sync()
    return time.perf_counter() - t


def saved_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of activations autograd saves for backward in one forward (parameters excluded)."""
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        if t.data_ptr() not in params and t.data_ptr() != x.data_ptr():
            seen[t.data_ptr()] = max(seen.get(t.data_ptr(), 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


def time_config(E: int, k: int, T: int, d: int, h: int, reps: int, baselines: bool,
                device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    """Median step times of all candidates at one (E, k), interleaved, as ratios to the dense FFN."""
    torch.manual_seed(0)
    cands: dict[str, nn.Module] = {"dense": DenseFFN(d, k * h),
                                   "moeplace": MoE(d, h, E, k, router="softmax_topk", aux_loss_weight=0.0)}
    cands["experts_only"] = ExpertsOnly(cands["moeplace"], T)
    if baselines:
        cands["hf_loop"] = LoopMoE(d, h, E, k)
        cands["onehot_einsum"] = OneHotMoE(d, h, E, k)
    for m in cands.values():
        m.to(device, dtype)
    x = torch.randn(T, d, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn(T, d, device=device, dtype=dtype)
    if cands["moeplace"].experts._use_grouped_mm(x):
        loop = copy.deepcopy(cands["moeplace"])
        loop.experts.grouped_mm = False
        cands["moeplace_loop"] = loop
    times: dict[str, list[float]] = {n: [] for n in cands}
    for m in cands.values():  # warm-up
        step_time(m, x, g)
    for r in range(reps):
        names = list(cands) if r % 2 == 0 else list(reversed(cands))
        for name in names:
            times[name].append(step_time(cands[name], x, g))
    med = {n: statistics.median(v) for n, v in times.items()}
    row = {"E": E, "k": k, "tokens": T, "dense_ms": 1e3 * med["dense"]}
    for n in cands:
        if n != "dense":
            row[f"{n}_x_dense"] = med[n] / med["dense"]
    del cands
    gc.collect()
    return row


def memory_growth(E: int, k: int, d: int, h: int, tokens: list[int]) -> list[dict]:
    """Activation bytes saved for backward per token, ours and one-hot, minus the dense FFN's, as T grows."""
    torch.manual_seed(0)
    dense, ours, onehot = DenseFFN(d, k * h), MoE(d, h, E, k, router="softmax_topk"), OneHotMoE(d, h, E, k)
    rows = []
    for T in tokens:
        x = torch.randn(T, d, requires_grad=True)
        base = saved_bytes(dense, x)
        row = {"tokens": T, "moeplace_extra_MB": (saved_bytes(ours, x) - base) / 2**20}
        row["onehot_extra_MB"] = (saved_bytes(onehot, x) - base) / 2**20 if T <= 4096 else None
        rows.append(row)
    return rows


def main() -> None:
    """Run every configuration and print a table and the JSON figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="16:2,64:4,256:4,1024:4,64:4:16384,256:4:16384",
                    help="E:k or E:k:tokens (default --tokens), comma separated; the 16,384-token rows "
                         "are the paper's regime of >= 64 tokens per expert")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--d-hidden", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions per configuration")
    ap.add_argument("--baselines-max-experts", type=int, default=256,
                    help="run the loop and one-hot baselines only up to this many experts (memory)")
    ap.add_argument("--baselines-max-tokens", type=int, default=4096,
                    help="... and up to this many tokens (one-hot dispatch at 16,384 tokens, E=256: 5 GB)")
    ap.add_argument("--memory-tokens", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="leave glibc's allocator thresholds (default: keep freed memory, as the lm commands "
                         "do; at 16,384 tokens the dense FFN's 268-MB activations are otherwise page-faulted "
                         "in every step)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.glibc_defaults:
        retain_freed_memory()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"moe_layer.py: error: --device {args.device}: CUDA is not available")
    dtype = getattr(torch, args.dtype)
    where = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
             else f"threads {torch.get_num_threads()}")
    print(f"torch {torch.__version__}, {where}, tokens {args.tokens}, d {args.d_model}, h {args.d_hidden}, "
          f"{args.dtype}, reps {args.reps}, freed memory {'released' if args.glibc_defaults else 'kept'}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
          flush=True)
    rows = []
    for spec in args.configs.split(","):
        E, k, T = ([int(v) for v in spec.split(":")] + [args.tokens])[:3]
        rows.append(time_config(E, k, T, args.d_model, args.d_hidden, args.reps,
                                args.baselines_max_experts >= E and args.baselines_max_tokens >= T,
                                args.device, dtype))
        print(markdown_table([rows[-1]]), flush=True)
    print("\nforward+backward time, ratio to the dense FFN of hidden k*h (lower is better)")
    print(markdown_table(rows))
    mem = []
    if args.memory_tokens:
        tokens = [int(t) for t in args.memory_tokens.split(",")]
        mem = memory_growth(16, 2, args.d_model, args.d_hidden, tokens)
        print("\nextra activation memory saved for backward beyond the dense FFN (E=16, k=2)")
        print(markdown_table(mem))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print_json_line({"threads": torch.get_num_threads(), "device": where, "dtype": args.dtype,
                     "tokens": args.tokens, "timing": rows, "memory": mem})


if __name__ == "__main__":
    main()
