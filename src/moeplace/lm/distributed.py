"""Runtime helpers for running the LM loop under torchrun: process group, row split, failures.

    torchrun --nproc_per_node 2 -m moeplace lm train --experts 8 ...     # gloo on CPU, NCCL on CUDA

`init_distributed` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
and gives a `DistContext`; without that environment it gives world size 1 and touches nothing.
Every rank builds the same global batch and takes rows [rank::world] (`local_rows`). A rank
that dies or hangs makes the others raise `DistributedError` (one clear line) within the
process-group timeout instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from moeplace.errors import InputError, MoeplaceError

DEFAULT_TIMEOUT_S = 300.0


class DistributedError(MoeplaceError):
    """Another rank died, hung or failed: this rank stops instead of waiting forever."""


@dataclass
class DistContext:
    """Where this process sits in the run: rank, world size, device, backend, timeout."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs and writes the shared files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group of more than one rank is running."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when torchrun (or an equivalent launcher) set WORLD_SIZE for this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_distributed(timeout_s: float = DEFAULT_TIMEOUT_S, device: str | None = None) -> DistContext:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); world 1 otherwise.

    `timeout_s` bounds every collective: a rank waiting longer for a dead or hung peer raises.
    All ranks then meet at a barrier (gloo: monitored_barrier, which names missing ranks).
    """
    if timeout_s <= 0:
        raise InputError(f"--dist-timeout must be > 0 seconds, got {timeout_s}")
    want_cuda = device is None and torch.cuda.is_available() or (device or "").startswith("cuda")
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        dev = torch.device(device or ("cuda" if want_cuda else "cpu"))
        return DistContext(device=dev, timeout_s=timeout_s)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        backend, dev = "nccl", torch.device("cuda", local_rank)
    else:
        backend, dev = "gloo", torch.device("cpu")
    if not dist.is_initialized():
        with translate_errors(rank, world, timeout_s, "start-up"):
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    ctx = DistContext(rank, world, local_rank, dev, backend, timeout_s)
    barrier(ctx, "start-up")
    return ctx


def barrier(ctx: DistContext, what: str) -> None:
    """Wait for every rank, at most the timeout; on gloo the error names the ranks that did not come."""
    if not ctx.distributed:
        return
    with translate_errors(ctx.rank, ctx.world_size, ctx.timeout_s, what):
        if ctx.backend == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=ctx.timeout_s), wait_all_ranks=True)
        else:
            dist.barrier()


@contextlib.contextmanager
def translate_errors(rank: int, world: int, timeout_s: float, what: str) -> Iterator[None]:
    """Turn a collective's failure (peer gone, timeout) into a one-line DistributedError."""
    try:
        yield
    except DistributedError:
        raise
    except (dist.DistError, RuntimeError) as e:
        if not _is_collective_failure(e):
            raise
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise DistributedError(
            f"rank {rank} of {world}: stopped during {what}: another rank died, hung or failed "
            f"(process-group timeout {timeout_s:g} s): {first[:300]}") from None


def _is_collective_failure(e: BaseException) -> bool:
    """True for errors torch.distributed raises when a peer is gone or a collective times out."""
    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return any(s in text for s in ("gloo", "nccl", "connection", "timed out", "timeout", "peer",
                                   "socket", "broken pipe"))


def guard(ctx: DistContext, what: str = "training") -> contextlib.AbstractContextManager[None]:
    """Context manager for a training loop: collective failures become DistributedError."""
    if not ctx.distributed:
        return contextlib.nullcontext()
    return translate_errors(ctx.rank, ctx.world_size, ctx.timeout_s, what)


def local_rows(batch: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's rows [rank::world] of a global batch (all of it at world size 1)."""
    if not ctx.distributed:
        return batch
    if batch.shape[0] % ctx.world_size:
        raise InputError(f"--batch-size {batch.shape[0]} is not divisible by the world size {ctx.world_size}")
    return batch[ctx.rank::ctx.world_size]


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after a clean run)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
