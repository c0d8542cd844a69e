"""Expert parallelism: expert-weight memory per process and training throughput at 1, 2, 4 processes.

    python benchmarks/moe_parallel.py [--worlds 1,2,4] [--steps 12] [--tokens 4096]

Each world size trains the same model (data-parallel projection -> MoE layer -> data-parallel head)
on the same global batch of tokens, each rank taking rows [rank::world], with gloo on CPU (NCCL on
CUDA when at least `world` GPUs are visible). Reported per world size: expert-weight bytes held by
one process (must fall as 1/world), tokens/s of the global batch, the share of step time spent
inside all_to_all_single (token exchange, forward and backward) and in the gradient all-reduce
(medians over the timed steps: robust to other programs' bursts on a shared machine), and the
final loss (equal across world sizes: the same computation, only placed differently).
The last line is one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from moeplace.moe import MoE, parallel
from moeplace.utils import markdown_table, print_json_line


class Net(nn.Module):
    """Projection -> MoE (softmax top-k, deterministic) -> head: one block of an MoE model."""

    def __init__(self, d: int, h: int, E: int, k: int):
        super().__init__()
        self.inp = nn.Linear(d, d)
        self.moe = MoE(d, h, E, k, router="softmax_topk", aux_loss_weight=0.0)
        self.head = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.head(h + self.moe(h))


class Timed:
    """Wraps a torch.distributed collective and adds up the seconds spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t


def worker(args: argparse.Namespace) -> None:
    """One rank: build, parallelise, train `steps` steps, report timings (rank 0 writes the JSON)."""
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    use_cuda = args.backend == "nccl"
    device = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(args.threads_per_rank)
    if world > 1:
        dist.init_process_group(args.backend)
    torch.manual_seed(0)
    model = Net(args.d_model, args.d_hidden, args.experts, args.k).to(device)
    if world > 1:
        parallel.apply_expert_parallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    experts = parallel.expert_param_names(model)
    expert_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n in experts)
    other_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n not in experts)
    a2a = Timed(dist.all_to_all_single)
    allreduce = Timed(dist.all_reduce)
    dist.all_to_all_single, dist.all_reduce = a2a, allreduce
    g = torch.Generator().manual_seed(1)
    x_global = torch.randn(args.tokens, args.d_model, generator=g)
    y_global = torch.randn(args.tokens, args.d_model, generator=g)
    x, y = x_global[rank::world].to(device), y_global[rank::world].to(device)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        parallel.sync_gradients(model)
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    times = torch.zeros(3, args.steps, dtype=torch.float64)  # step, all-to-all, all-reduce seconds
    losses = []
    for i in range(args.steps):
        if world > 1:
            dist.barrier()  # every rank starts the step together (outside the timing)
        if use_cuda:
            torch.cuda.synchronize()
        a2a.seconds = allreduce.seconds = 0.0
        t0 = time.perf_counter()
        losses.append(step())
        if use_cuda:
            torch.cuda.synchronize()
        times[:, i] = torch.tensor([time.perf_counter() - t0, a2a.seconds, allreduce.seconds])
    final_loss = losses[-1]
    if world > 1:
        slowest = times[0].clone().to(device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # the slowest rank sets each step's pace
        shares = (times[1:] / times[0]).to(device)
        dist.all_reduce(shares)  # mean over ranks of each step's share
        final = torch.tensor(final_loss, dtype=torch.float64, device=device)
        dist.all_reduce(final)
        step_s, shares, final_loss = slowest.cpu(), shares.cpu() / world, float(final) / world
    else:
        step_s, shares = times[0], times[1:] / times[0]
    if rank == 0:
        median = float(step_s.median())  # robust to other programs' bursts on a shared machine
        row = {"backend": args.backend, "world": world, "expert_bytes_per_process": expert_bytes,
               "other_bytes_per_process": other_bytes, "tokens_per_s": args.tokens / median,
               "step_ms": 1000 * median, "all_to_all_share": float(shares[0].median()),
               "all_reduce_share": float(shares[1].median()), "final_loss": final_loss}
        Path(args.result).write_text(json.dumps(row))
    if world > 1:
        dist.destroy_process_group()


def run_world(world: int, backend: str, args: argparse.Namespace) -> dict:
    """Launch `world` ranks of this script (torchrun's environment) and return rank 0's row."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "row.json"
        argv = [sys.executable, __file__, "--worker", "--backend", backend, "--result", str(result),
                *sys.argv[1:]]
        procs = []
        for r in range(world):
            env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen(argv, env=env))
        codes = [p.wait(timeout=900) for p in procs]
        if any(codes):
            raise SystemExit(f"world {world} ({backend}): ranks exited with {codes}")
        return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", default="1,2,4", help="comma-separated process counts")
    p.add_argument("--tokens", type=int, default=4096, help="tokens in the global batch")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--d-hidden", type=int, default=512, help="hidden units of one expert")
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--steps", type=int, default=15, help="timed training steps (the median counts)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads-per-rank", type=int, default=1,
                   help="torch threads of each process (1: no oversubscription of busy cores)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="gloo", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    worlds = [int(w) for w in args.worlds.split(",")]
    print(f"global batch {args.tokens} tokens, d_model {args.d_model}, {args.experts} experts of "
          f"{args.d_hidden} hidden units, k={args.k}; {args.steps} timed steps; "
          f"{args.threads_per_rank} torch thread(s) per process; {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f} before the runs", flush=True)
    load_before = os.getloadavg()[0]
    rows = [run_world(w, "gloo", args) for w in worlds]
    gpus = torch.cuda.device_count()
    nccl_worlds = [w for w in worlds if 1 <= w <= gpus]
    rows += [run_world(w, "nccl", args) for w in nccl_worlds]
    base = {r["backend"]: r for r in rows if r["world"] == 1}
    table = []
    for r in rows:
        b = base.get(r["backend"], rows[0])
        table.append({"backend": r["backend"], "processes": r["world"],
                      "expert MB/process": r["expert_bytes_per_process"] / 2**20,
                      "x of 1 process": r["expert_bytes_per_process"] / b["expert_bytes_per_process"],
                      "tokens/s": r["tokens_per_s"], "speed-up": r["tokens_per_s"] / b["tokens_per_s"],
                      "all-to-all share": r["all_to_all_share"], "all-reduce share": r["all_reduce_share"],
                      "final loss": r["final_loss"]})
    print(markdown_table(table))
    if not nccl_worlds:
        print("NCCL path not measured: no GPU visible on this machine.")
    figures = {f"{r['backend']}_world{r['world']}": r for r in rows}
    figures["nccl_measured"] = bool(nccl_worlds)
    figures["load_average_before"], figures["load_average_after"] = load_before, os.getloadavg()[0]
    print(f"load average after the runs: {os.getloadavg()[0]:.1f} (other programs share these cores)")
    print_json_line(figures)


if __name__ == "__main__":
    main()
