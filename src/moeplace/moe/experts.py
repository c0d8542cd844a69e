"""A bank of E feed-forward experts with stacked weights and a grouped forward over expert-sorted tokens.

The expert matmuls go through `GroupedLinear`, a custom autograd function that loops over the non-empty
experts' contiguous row segments with plain matmuls and, in backward, writes each expert's weight gradient
into one preallocated [E, in, out] buffer. Slicing a stacked weight per expert under autograd instead makes
every slice's backward materialise a full-size [E, in, out] gradient (measured 10x slower backward).

On CPU the [E, in, out] weight gradient is the largest fresh allocation of a training step (512 MB per
matrix at E=256, d=512, h=1,024), and torch's CPU allocator returns it to the OS when the optimiser sets
grads to None, so every step page-faults it in again (measured ~0.6 s per matrix here, more than its
matmuls). `GradBuffer` keeps that memory and reuses it once nothing else holds it.

On CUDA in bfloat16 on Hopper or Blackwell GPUs, `Experts` uses torch's fused grouped GEMM
(`torch._grouped_mm`, a CUTLASS kernel) instead: one launch per matrix and no host synchronisation,
where the per-expert loop needs the row counts on the host and one launch per expert.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
}


def _storage_use_count(storage: torch.UntypedStorage) -> int:
    """How many tensors/storage handles share this memory (torch-internal counter; 0 when unavailable)."""
    counter = getattr(torch._C, "_storage_Use_Count", None)
    return int(counter(storage._cdata)) if counter is not None else 0


class GradBuffer:
    """Memory for one stacked weight's gradient, reused across steps once no tensor refers to it any more.

    Only on CPU (CUDA's caching allocator already reuses memory). The buffer is handed out only when this
    object holds the sole reference, so a gradient still held anywhere (p.grad, an optimiser, user code) is
    never overwritten. Costs: the memory of one gradient stays allocated between steps; copies of a model
    (deepcopy, pickling) start with an empty buffer.
    """

    def __init__(self) -> None:
        self.storage: torch.UntypedStorage | None = None

    def empty(self, like: Tensor) -> Tensor:
        """An uninitialised contiguous tensor shaped like `like` (reusing the kept memory when free)."""
        if like.device.type != "cpu":
            return like.new_empty(like.shape)
        nbytes = like.numel() * like.element_size()
        s = self.storage
        if s is not None and s.nbytes() == nbytes and s.device == like.device and _storage_use_count(s) == 1:
            return like.new_empty(0).set_(s, 0, like.shape)
        out = like.new_empty(like.shape)
        self.storage = out.untyped_storage() if _storage_use_count(out.untyped_storage()) else None
        return out

    def __deepcopy__(self, memo: dict) -> GradBuffer:
        return GradBuffer()

    def __getstate__(self) -> dict:
        return {"storage": None}


_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0  # the process that created _POOL (a forked child has the object but not its threads)
_POOL_LOCK = threading.Lock()


def _single_threaded_worker() -> None:
    """Pool thread initialiser: torch ops on this thread use one intra-op thread (thread-local setting)."""
    torch.set_num_threads(1)


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process-wide pool of helper threads for per-expert work (grown when more threads are wanted)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers or os.getpid() != _POOL_PID:
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix="moeplace-experts",
                                       initializer=_single_threaded_worker)
            _POOL_PID = os.getpid()
        return _POOL


def for_each_expert(work: Callable[[int], object], experts: list[int], counts: Sequence[int],
                    device: torch.device) -> None:
    """Run work(e) for every expert in `experts`; on a multi-threaded CPU, spread the experts over threads.

    Each expert's small matmul is run single-threaded and the experts are shared out dynamically among
    torch.get_num_threads() threads (this thread and pool helpers), so a step has one join per loop
    instead of a fork/join per matmul (each of which waits for a descheduled thread on a busy machine).
    The caller's intra-op thread count is set to 1 for the loop and restored afterwards (it is
    process-wide in torch: other threads' torch ops also run single-threaded meanwhile). When one expert
    holds more than a thread's share of the rows (counts), its matmul keeps torch's own threading instead.
    """
    threads = torch.get_num_threads()
    if (device.type != "cpu" or threads <= 1 or len(experts) < 2
            or max(counts) * threads > sum(counts)):
        for e in experts:
            work(e)
        return
    pending = iter(experts)  # shared; next() on a list iterator is atomic under the GIL

    def drain() -> None:
        with torch.no_grad():
            for e in pending:
                work(e)

    torch.set_num_threads(1)
    try:
        helpers = [_pool(threads - 1).submit(drain) for _ in range(threads - 1)]
        drain()
        for h in helpers:
            h.result()
    finally:
        torch.set_num_threads(threads)


class GroupedLinear(torch.autograd.Function):
    """y[rows of expert e] = x[rows of e] @ weight[e] + bias[e], for rows already sorted by expert.

    Per-expert views come from one `split` / `unbind` call each (not thousands of Python indexing ops), and
    the bias is fused into each expert's matmul (addmm) and summed per expert in backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, counts: tuple[int, ...],
                grad_buffer: GradBuffer | None = None) -> Tensor:
        """Run one matmul per non-empty expert, writing straight into the output rows."""
        used = [e for e, c in enumerate(counts) if c > 0]
        out = x.new_empty(x.shape[0], weight.shape[2])
        xs, outs, ws = x.split(counts), out.split(counts), weight.unbind(0)
        if bias is None:
            for_each_expert(lambda e: torch.mm(xs[e], ws[e], out=outs[e]), used, counts, x.device)
        else:
            bs = bias.unbind(0)
            for_each_expert(lambda e: torch.addmm(bs[e], xs[e], ws[e], out=outs[e]), used, counts, x.device)
        ctx.save_for_backward(x, weight)
        ctx.counts, ctx.used = counts, used
        ctx.has_bias = bias is not None
        ctx.grad_buffer = grad_buffer
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        """Fill grad_x row segments and the [E, in, out] weight gradient expert by expert."""
        x, weight = ctx.saved_tensors
        counts, used = ctx.counts, ctx.used
        grad_out = grad_out.contiguous()
        gs, ws = grad_out.split(counts), weight.unbind(0)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = ctx.has_bias and ctx.needs_input_grad[2]
        grad_x = x.new_empty(x.shape) if need_x else None
        grad_w = None
        if need_w:
            grad_w = ctx.grad_buffer.empty(weight) if ctx.grad_buffer else weight.new_empty(weight.shape)
        grad_b = grad_out.new_zeros(weight.shape[0], weight.shape[2]) if need_b else None
        xs = x.split(counts)
        gxs = grad_x.split(counts) if need_x else None
        gws = grad_w.unbind(0) if need_w else None
        gbs = grad_b.unbind(0) if need_b else None

        def one_expert(e: int) -> None:
            if need_x:
                torch.mm(gs[e], ws[e].t(), out=gxs[e])
            if need_w:
                torch.mm(xs[e].t(), gs[e], out=gws[e])
            if need_b:
                torch.sum(gs[e], 0, out=gbs[e])

        for_each_expert(one_expert, used, counts, x.device)
        if need_w and len(used) < len(counts):
            for e, c in enumerate(counts):
                if c == 0:
                    gws[e].zero_()
        return grad_x, grad_w, grad_b, None, None


def grouped_linear(x: Tensor, weight: Tensor, bias: Tensor | None, counts: Sequence[int],
                   grad_buffer: GradBuffer | None = None) -> Tensor:
    """Functional form of `GroupedLinear` (counts: rows per expert, summing to x.shape[0]).

    grad_buffer: optional `GradBuffer` whose memory the weight gradient reuses (one per weight).
    """
    return GroupedLinear.apply(x, weight, bias, tuple(int(c) for c in counts), grad_buffer)


def fused_grouped_mm_available(x: Tensor, weight: Tensor) -> bool:
    """Whether torch's fused grouped GEMM serves x @ weight[e]: CUDA, bfloat16, compute capability 9 or 10.

    Elsewhere torch's `_grouped_mm` falls back to a per-group loop that copies the offsets to the host,
    which is no better than `GroupedLinear`. Rows of both operands must be 16-byte aligned.
    """
    return (hasattr(torch, "_grouped_mm") and x.is_cuda and x.dtype == weight.dtype == torch.bfloat16
            and torch.cuda.get_device_capability(x.device)[0] in (9, 10) and grouped_mm_aligned(weight))


def grouped_mm_aligned(weight: Tensor) -> bool:
    """torch._grouped_mm needs every row of x [N, in] and of weight [E, in, out] to start 16 bytes apart."""
    return all((n * weight.element_size()) % 16 == 0 for n in weight.shape[1:])


MAX_GROUPS = 512  # experts per torch._grouped_mm call (CUDA refused 1,024 groups on torch 2.11)


def grouped_mm_linear(x: Tensor, weight: Tensor, bias: Tensor | None, ends: Tensor,
                      expert_of_row: Tensor | None) -> Tensor:
    """y[rows of e] = x[rows of e] @ weight[e] + bias[e] through `torch._grouped_mm` (autograd built in).

    ends: int32 cumulative row counts per expert, kept on the device; expert_of_row [N]: each row's
    expert, used to gather the biases (needed only with a bias). Up to MAX_GROUPS experts this is one
    call with no host synchronisation; more experts go in chunks of MAX_GROUPS, whose row bounds are
    read back once per call.
    """
    E = weight.shape[0]
    x = x.contiguous()
    if E <= MAX_GROUPS:
        y = torch._grouped_mm(x, weight, offs=ends)
    else:
        firsts = list(range(0, E, MAX_GROUPS))
        bounds = [0, *ends[[f - 1 for f in firsts[1:]]].tolist(), x.shape[0]]
        parts = [torch._grouped_mm(x[r0:r1], weight[f:f + MAX_GROUPS], offs=ends[f:f + MAX_GROUPS] - r0)
                 for f, r0, r1 in zip(firsts, bounds, bounds[1:]) if r1 > r0]
        y = torch.cat(parts) if parts else x.new_empty(0, weight.shape[2])
    return y if bias is None else y + bias.index_select(0, expert_of_row)


class Experts(nn.Module):
    """E two-layer feed-forward experts, weights stacked: w1 [E,d,h], b1 [E,h], w2 [E,h,d], b2 [E,d].

    grouped_mm: None (default) uses torch's fused grouped GEMM where it is fast (CUDA, bfloat16, Hopper or
    Blackwell) and `GroupedLinear`'s per-expert loop elsewhere; True asks for the fused call wherever torch
    has it and the sizes are 16-byte aligned (also on CPU, for tests); False always loops.
    """

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "relu",
                 bias: bool = True, grouped_mm: bool | None = None) -> None:
        super().__init__()
        self.grouped_mm = grouped_mm
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.num_experts, self.d_model, self.d_hidden = num_experts, d_model, d_hidden
        self.activation = activation
        self.w1 = nn.Parameter(torch.empty(num_experts, d_model, d_hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, d_hidden, d_model))
        self.b1 = nn.Parameter(torch.empty(num_experts, d_hidden)) if bias else None
        self.b2 = nn.Parameter(torch.empty(num_experts, d_model)) if bias else None
        self.grad_buffers = (GradBuffer(), GradBuffer())  # memory of w1's and w2's gradients, reused
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's default init per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        for w, b, fan_in in ((self.w1, self.b1, self.d_model), (self.w2, self.b2, self.d_hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            if b is not None:
                nn.init.uniform_(b, -bound, bound)

    def forward(self, x_sorted: Tensor, tokens_per_expert: Tensor) -> Tensor:
        """Apply expert e to its contiguous rows of x_sorted [N, d]; tokens_per_expert [E] sums to N."""
        if self._use_grouped_mm(x_sorted):  # group ends and row experts once, for both layers
            ends = torch.cumsum(tokens_per_expert, 0, dtype=torch.int32)
            expert_of_row = None
            if self.b1 is not None:  # repeat_interleave with a known size: no host synchronisation
                expert_of_row = torch.repeat_interleave(
                    torch.arange(self.num_experts, device=x_sorted.device), tokens_per_expert,
                    output_size=x_sorted.shape[0])
            h = grouped_mm_linear(x_sorted, self.w1, self.b1, ends, expert_of_row)
            h = ACTIVATIONS[self.activation](h)
            return grouped_mm_linear(h, self.w2, self.b2, ends, expert_of_row)
        counts = tokens_per_expert.tolist()
        h = grouped_linear(x_sorted, self.w1, self.b1, counts, self.grad_buffers[0])
        h = ACTIVATIONS[self.activation](h)
        return grouped_linear(h, self.w2, self.b2, counts, self.grad_buffers[1])

    def _use_grouped_mm(self, x: Tensor) -> bool:
        """Whether this forward goes through `grouped_mm_linear` (see the class docstring)."""
        if self.grouped_mm is False or not grouped_mm_aligned(self.w2):
            return False
        if self.grouped_mm is None:
            return fused_grouped_mm_available(x, self.w1)  # also checks w1's alignment
        return (hasattr(torch, "_grouped_mm") and x.dtype == self.w1.dtype
                and x.dtype in (torch.float32, torch.bfloat16, torch.float16) and grouped_mm_aligned(self.w1))

    def forward_dense(self, x: Tensor) -> Tensor:
        """Every expert on every token: [T, d] -> [E, T, d] (for references and tiny layers only)."""
        h = torch.einsum("td,edh->eth", x, self.w1)
        if self.b1 is not None:
            h = h + self.b1[:, None, :]
        h = ACTIVATIONS[self.activation](h)
        y = torch.einsum("eth,ehd->etd", h, self.w2)
        if self.b2 is not None:
            y = y + self.b2[:, None, :]
        return y

    def flops_per_token(self) -> int:
        """Forward FLOPs of one expert on one token (2 per multiply-add; biases and activation ignored)."""
        return 4 * self.d_model * self.d_hidden
