"""Benchmark: forward+backward time of the MoE layer against a dense FFN, an HF-style loop and GShard one-hot.

Usage:
    .venv/bin/python benchmarks/moe_layer.py                 # the CPU configurations
    .venv/bin/python benchmarks/moe_layer.py --configs 16:2 --reps 5
    .venv/bin/python benchmarks/moe_layer.py --threads 1          # single-threaded torch
    .venv/bin/python benchmarks/moe_layer.py --smoke              # tiny sizes: every candidate runs
    python benchmarks/moe_layer.py --device cuda   # the GPU grid: 4,096 and 65,536 tokens, bf16 and float32

CPU defaults: 2,048 tokens, d=512, h=1,024, float32, torch's default thread count; `--device cuda` defaults
to tokens 4096,65536 and dtypes bfloat16,float32 (each a comma list). All candidates use softmax top-k
routing so only dispatch and expert computation differ. Repetitions of the candidates are interleaved and
medians taken, so a noisy shared machine affects every candidate alike. `experts_only` times the layer's
expert matmuls alone on balanced pre-sorted rows: the floor any sorted-dispatch layer meets on this CPU
(small per-expert matmuls run below the dense matmul's FLOP rate); on CUDA `padded_experts_only` is the
same for the padded path (two batched matmuls over [E, T·k/E, d]). `moeplace_cf_sorted` and
`moeplace_cf_padded` are the layer with capacity factor 1.25 on its two dispatch paths (auto picks padded
on CUDA, sorted on CPU); `titan` is a torchtitan-style layer written here (argsort by expert, groups
padded to 16 rows, torch._grouped_mm where it is fused, else a per-expert loop over `.tolist()` counts).
On CUDA every step is synchronised before and after, and `moeplace_loop` is the dropless layer on its
sorted per-expert loop (the float32 path before the padded one). A config E:k:T runs at its own T tokens
only, without the baselines (the CPU default adds 64:4:16384 and 256:4:16384: the paper's >= 64 tokens per
expert). The last line is JSON.
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
from moeplace.moe.experts import MAX_GROUPS, fused_grouped_mm_available
from moeplace.moe.padded import padded_expert_ffn
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


class TitanStyleMoE(nn.Module):
    """torchtitan-style dropless layer: argsort assignments by expert, gather, grouped GEMM, scatter-add.

    Each expert's rows are padded to a multiple of ALIGN inside a buffer of static size T·k + E·ALIGN (no
    host read), then torch._grouped_mm runs each matrix where it is fused (bfloat16 on Hopper/Blackwell,
    up to MAX_GROUPS experts); elsewhere a per-expert loop over the counts read with `.tolist()`, as
    torchtitan's fallback does. ReLU experts without biases (torchtitan's experts have none).
    """

    ALIGN = 16

    def __init__(self, d: int, h: int, E: int, k: int) -> None:
        super().__init__()
        self.k, self.E = k, E
        self.gate = nn.Linear(d, E, bias=False)
        self.w1 = nn.Parameter(torch.randn(E, d, h) / math.sqrt(d))
        self.w2 = nn.Parameter(torch.randn(E, h, d) / math.sqrt(h))

    def forward(self, x: Tensor) -> Tensor:
        probs = torch.softmax(self.gate(x).float(), dim=-1)
        w, sel = probs.topk(self.k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        order = torch.argsort(sel.reshape(-1), stable=True)
        token = order // self.k
        counts = torch.zeros(self.E, dtype=torch.long, device=x.device).index_add_(
            0, sel.reshape(-1), torch.ones_like(sel.reshape(-1)))
        xs = x.index_select(0, token)
        if fused_grouped_mm_available(x, self.w1) and self.E <= MAX_GROUPS:
            ys = self._grouped(xs, counts)
        else:
            sizes = counts.tolist()
            ys = torch.cat([F.relu(xe @ self.w1[e]) @ self.w2[e] for e, xe in enumerate(xs.split(sizes))])
        ys = ys * w.reshape(-1)[order, None].to(ys.dtype)
        return torch.zeros_like(x).index_add_(0, token, ys)

    def _grouped(self, xs: Tensor, counts: Tensor) -> Tensor:
        """Both matrices through torch._grouped_mm on groups padded to ALIGN rows (static buffer size)."""
        padded = (counts + self.ALIGN - 1) // self.ALIGN * self.ALIGN
        starts, padded_starts = torch.cumsum(counts, 0) - counts, torch.cumsum(padded, 0) - padded
        expert = torch.repeat_interleave(torch.arange(self.E, device=xs.device), counts,
                                         output_size=xs.shape[0])
        dest = padded_starts[expert] + torch.arange(xs.shape[0], device=xs.device) - starts[expert]
        size = xs.shape[0] + self.E * self.ALIGN
        buf = xs.new_zeros(size, xs.shape[1]).index_copy(0, dest, xs)
        offs = torch.cumsum(padded, 0, dtype=torch.int32)
        hid = F.relu(torch._grouped_mm(buf, self.w1, offs=offs))
        return torch._grouped_mm(hid, self.w2, offs=offs).index_select(0, dest)


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


class PaddedExpertsOnly(nn.Module):
    """The padded path's expert computation alone: the k copies of the tokens as [E, C, d] slots with
    C = ceil(T·k/E) (perfect balance, no router, no slot assignment): its floor on this device."""

    def __init__(self, moe: MoE, tokens: int) -> None:
        super().__init__()
        self.experts, self.k = moe.experts, moe.k
        self.E, self.C = moe.num_experts, math.ceil(tokens * moe.k / moe.num_experts)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.repeat(self.k, 1)
        rows = torch.cat([rows, rows.new_zeros(self.E * self.C - rows.shape[0], rows.shape[1])])
        y = padded_expert_ffn(self.experts, rows.view(self.E, self.C, -1))
        return y.view(self.E * self.C, -1)[: x.shape[0]]


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
                device: str = "cpu", dtype: torch.dtype = torch.float32, onehot_max_gb: float = 8.0,
                compile_padded: bool = False) -> dict:
    """Median step times of all candidates at one (E, k, T, dtype), interleaved, as ratios to dense."""
    torch.manual_seed(0)
    moe = {"router": "softmax_topk", "aux_loss_weight": 0.0, "check_finite": False}
    cands: dict[str, nn.Module] = {"dense": DenseFFN(d, k * h), "moeplace": MoE(d, h, E, k, **moe)}
    cands["experts_only"] = ExpertsOnly(cands["moeplace"], T)
    if device != "cpu":  # on CPU auto already is the sorted loop
        cands["moeplace_loop"] = MoE(d, h, E, k, dispatch="sorted", **moe)
        cands["moeplace_loop"].experts.grouped_mm = False
        cands["padded_experts_only"] = PaddedExpertsOnly(cands["moeplace"], T)
    cands["moeplace_cf_sorted"] = MoE(d, h, E, k, capacity_factor=1.25, dispatch="sorted", **moe)
    cands["moeplace_cf_padded"] = MoE(d, h, E, k, capacity_factor=1.25, dispatch="padded", **moe)
    if compile_padded:  # static shapes: one graph; inductor fuses the routing and slot arithmetic
        padded = copy.deepcopy(cands["moeplace_cf_padded"]).to(device, dtype)
        cands["moeplace_cf_padded_compiled"] = torch.compile(padded, fullgraph=True)
    if baselines:
        cands["titan"] = TitanStyleMoE(d, h, E, k)
        cands["hf_loop"] = LoopMoE(d, h, E, k)
        onehot_gb = 2 * 1.25 * (T * k) ** 2 * 8 / 2**30  # two int64 [T·k, E, C] slot tensors, E·C = 1.25·T·k
        if onehot_gb <= onehot_max_gb:
            cands["onehot_einsum"] = OneHotMoE(d, h, E, k)
    for m in cands.values():
        m.to(device, dtype)
    x = torch.randn(T, d, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn(T, d, device=device, dtype=dtype)
    times: dict[str, list[float]] = {n: [] for n in cands}
    for m in cands.values():  # warm-up
        step_time(m, x, g)
    for r in range(reps):
        names = list(cands) if r % 2 == 0 else list(reversed(cands))
        for name in names:
            times[name].append(step_time(cands[name], x, g))
    med = {n: statistics.median(v) for n, v in times.items()}
    row = {"tokens": T, "dtype": str(dtype).removeprefix("torch."), "E": E, "k": k,
           "dense_ms": 1e3 * med["dense"]}
    for n in cands:
        if n != "dense":
            row[f"{n}_x_dense"] = med[n] / med["dense"]
    del cands
    gc.collect()
    if device != "cpu":
        torch.cuda.empty_cache()
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
    ap.add_argument("--configs", default=None,
                    help="E:k or E:k:tokens, comma separated (default 16:2,64:4,256:4,1024:4, plus "
                         "64:4:16384,256:4:16384 on CPU: the paper's >= 64 tokens per expert)")
    ap.add_argument("--tokens", default=None, help="comma list (default 2048 on CPU, 4096,65536 on CUDA)")
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--d-hidden", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions per configuration")
    ap.add_argument("--baselines-max-experts", type=int, default=256,
                    help="run the titan, loop and one-hot baselines only up to this many experts")
    ap.add_argument("--onehot-max-gb", type=float, default=8.0,
                    help="skip one-hot dispatch where its [T, E, C] tensors would pass this size")
    ap.add_argument("--memory-tokens", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="leave glibc's allocator thresholds (default: keep freed memory, as the lm commands "
                         "do; at 16,384 tokens the dense FFN's 268-MB activations are otherwise page-faulted "
                         "in every step)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default=None,
                    help="comma list of float32, bfloat16 (default float32 on CPU, bfloat16,float32 on CUDA)")
    ap.add_argument("--compile", action="store_true",
                    help="also time the padded layer under torch.compile(fullgraph=True) (compiles per row)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes (256 tokens, d 64, h 128, E 16 and 64, 2 reps): checks everything runs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.glibc_defaults:
        retain_freed_memory()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"moe_layer.py: error: --device {args.device}: CUDA is not available")
    cuda = args.device.startswith("cuda")
    if args.smoke:
        args.configs, args.d_model, args.d_hidden, args.reps = "16:2,64:4", 64, 128, 2
        args.tokens, args.memory_tokens = args.tokens or "256", "256,512"
    tokens = [int(t) for t in (args.tokens or ("4096,65536" if cuda else "2048")).split(",")]
    dtypes = (args.dtype or ("bfloat16,float32" if cuda else "float32")).split(",")
    for name in dtypes:
        if name not in ("float32", "bfloat16"):
            raise SystemExit(f"moe_layer.py: error: --dtype {name}: expected float32 or bfloat16")
    where = torch.cuda.get_device_name(args.device) if cuda else f"threads {torch.get_num_threads()}"
    print(f"torch {torch.__version__}, {where}, tokens {','.join(map(str, tokens))}, d {args.d_model}, "
          f"h {args.d_hidden}, {','.join(dtypes)}, reps {args.reps}, "
          f"freed memory {'released' if args.glibc_defaults else 'kept'}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    if args.configs is None:
        args.configs = "16:2,64:4,256:4,1024:4" + ("" if cuda else ",64:4:16384,256:4:16384")
    specs = [[int(v) for v in spec.split(":")] for spec in args.configs.split(",")]
    rows = []
    for name in dtypes:
        for T in tokens:
            for spec in specs:
                if len(spec) == 3 and tokens[0] != T:
                    continue  # a row with its own token count runs once per dtype
                E, k = spec[:2]
                rows.append(time_config(E, k, spec[2] if len(spec) == 3 else T, args.d_model, args.d_hidden,
                                        args.reps, args.baselines_max_experts >= E and len(spec) == 2,
                                        args.device, getattr(torch, name), args.onehot_max_gb, args.compile))
                print(markdown_table([rows[-1]]), flush=True)
    print("\nforward+backward time, ratio to the dense FFN of hidden k*h (lower is better)")
    print(markdown_table(rows))
    mem = []
    if args.memory_tokens:
        mem_tokens = [int(t) for t in args.memory_tokens.split(",")]
        mem = memory_growth(16, 2, args.d_model, args.d_hidden, mem_tokens)
        print("\nextra activation memory saved for backward beyond the dense FFN (E=16, k=2)")
        print(markdown_table(mem))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print_json_line({"threads": torch.get_num_threads(), "device": where, "dtypes": dtypes,
                     "tokens": tokens, "timing": rows, "memory": mem})


if __name__ == "__main__":
    main()
