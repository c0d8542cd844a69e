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
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from moeplace.checkpoint import load_checkpoint, load_model_state
from moeplace.errors import CheckpointError, InputError, MoeplaceError
from moeplace.lm.config import train_config_from_dict
from moeplace.lm.models import build_model
from moeplace.moe import parallel, sharded

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
        raise DistributedError(
            f"rank {rank} of {world}: stopped during {what}: another rank died, hung or failed "
            f"(process-group timeout {timeout_s:g} s): {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    """The backend's message without its source location and boilerplate advice, on one line."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    first = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", first)
    return first.split(" This is typically")[0][:300]


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
    """Leave the process group (after a clean run), all ranks together.

    The barrier first: a rank that tears its group down while a peer's transport threads are still
    talking to it can make that peer abort at exit (a rank exited with SIGABRT once in CI-like runs).
    """
    if ctx.distributed and dist.is_initialized():
        barrier(ctx, "shut-down")
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Seams for the training loop: each is a no-op (or the plain single-process action) at world 1.

_CONTEXT = DistContext()
SHARDED_DIR = "ckpt-sharded"


def context() -> DistContext:
    """The context `setup` made for this process (world size 1 if it was never called)."""
    return _CONTEXT


def setup(timeout_s: float = DEFAULT_TIMEOUT_S, device: str | None = "cpu") -> DistContext:
    """Join torchrun's process group, remember the context, and quiet every rank but 0.

    Ranks other than 0 print nothing on stdout and show no progress bar; errors still reach stderr.
    """
    global _CONTEXT
    _CONTEXT = init_distributed(timeout_s, device)
    if _CONTEXT.distributed and not _CONTEXT.is_main:
        os.environ["MOEPLACE_NO_PROGRESS"] = "1"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return _CONTEXT


def parallelize(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Expert-parallel MoE layers, data-parallel rest, per-rank routing noise; unchanged at world 1.

    Every rank built the same model from the same seed; rank 0's data-parallel weights are
    broadcast anyway, then ranks > 0 move to their own random stream (routing noise, dropout).
    """
    if not ctx.distributed:
        return model
    model.to(ctx.device)
    with guard(ctx, "set-up"):
        if any(True for _ in parallel._expert_banks(model)):
            parallel.apply_expert_parallel(model)
        parallel.broadcast_parameters(model)
    if ctx.rank:
        torch.manual_seed(torch.initial_seed() + 7919 * ctx.rank)
    return model


def local_batch(x: torch.Tensor, y: torch.Tensor, ctx: DistContext) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows [rank::world] of a global (inputs, targets) batch, on this rank's device."""
    return local_rows(x, ctx).to(ctx.device), local_rows(y, ctx).to(ctx.device)


def reduce_gradients(model: nn.Module, ctx: DistContext, max_norm: float) -> torch.Tensor:
    """After backward: data-parallel gradient mean (experts: / world), then global-norm clipping
    (max_norm <= 0: none); returns the global gradient norm before clipping (the same on every rank)."""
    limit = max_norm if max_norm > 0 else math.inf
    if not ctx.distributed:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
    parallel.sync_gradients(model)
    return parallel.clip_grad_norm_(model, limit)


def global_mean(value: torch.Tensor | float, ctx: DistContext) -> float:
    """The mean of a per-rank scalar over all ranks (what one process would log for the global batch)."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
    if not ctx.distributed:
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64, device=ctx.device).clone()
    dist.all_reduce(t)
    return float(t) / ctx.world_size


def num_params(model: nn.Module, ctx: DistContext) -> int:
    """Parameters of the whole model, counting every rank's experts (num_params() counts only this rank's)."""
    n = model.num_params() if hasattr(model, "num_params") else sum(p.numel() for p in model.parameters())
    if ctx.distributed:
        named = dict(model.named_parameters())
        for name, (e, a, b) in parallel.expert_shards(model).items():
            n += named[name].numel() * (e - (b - a)) // (b - a)
    return n


def agree_time(seconds: float, ctx: DistContext) -> float:
    """The largest of the ranks' clocks, so every rank takes the same learning rate and stop decision."""
    if not ctx.distributed:
        return seconds
    t = torch.tensor(seconds, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def sharded_checkpoint(out_dir: str | os.PathLike[str], single: str = "ckpt.safetensors") -> Path | None:
    """The run folder's sharded checkpoint if it is there and not older than the single-file one."""
    shard_dir = Path(out_dir) / SHARDED_DIR
    index = shard_dir / sharded.INDEX_FILE
    if not index.is_file():
        return None
    one = Path(out_dir) / single
    if one.is_file() and one.stat().st_mtime > index.stat().st_mtime:
        return None
    return shard_dir


def find_sharded(path: str | os.PathLike[str], single: str = "ckpt.safetensors") -> Path | None:
    """The sharded checkpoint `path` names (a run folder or the shard folder itself), or None."""
    p = Path(path)
    if (p / sharded.INDEX_FILE).is_file():
        return p
    return sharded_checkpoint(p, single) if p.is_dir() else None


def save_train_checkpoint(out_dir: str | os.PathLike[str], state: dict[str, Any], model: nn.Module,
                          optimizer: torch.optim.Optimizer, ctx: DistContext) -> Path:
    """Write a training checkpoint as shards (every rank calls this; rank 0 writes the index).

    `state` is what the single-process loop would save: its "model" and "optimizer" entries are
    replaced by the shards; the rest (step, config, vocabulary) goes into shard 0, and each rank's
    RNG state into its own shard.
    """
    extra = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
    with guard(ctx, "checkpointing"):
        return sharded.save_sharded(Path(out_dir) / SHARDED_DIR, model, optimizer, extra=extra,
                                    rank_extra={"rng": {"torch": torch.get_rng_state()}})


def load_train_checkpoint(out_dir: str | os.PathLike[str], model: nn.Module,
                          optimizer: torch.optim.Optimizer, ctx: DistContext,
                          model_config: dict | None = None,
                          single: str = "ckpt.safetensors") -> dict[str, Any]:
    """Resume at any world size from the run folder's sharded or single-file checkpoint.

    Returns the saved state without "model"/"optimizer" (those are loaded in place); its "rng" is
    this rank's own when the world size is unchanged, otherwise rank 0's stream re-seeded per rank.
    `model_config` (the run's config_to_dict) must equal the saved one.
    """
    shard_dir = sharded_checkpoint(out_dir, single)
    if shard_dir is not None:
        with guard(ctx, "loading the checkpoint"):
            state = sharded.load_sharded(shard_dir, model, optimizer)
            mine = sharded.read_rank_extra(shard_dir)
        _check_config(shard_dir, state, model_config)
        if mine is not None:
            state["rng"] = mine["rng"]
        elif ctx.rank:
            torch.manual_seed(int(state["step"]) * 104729 + ctx.rank)
            state["rng"] = {"torch": torch.get_rng_state()}
        return state
    path = Path(out_dir) / single
    state = load_checkpoint(path)
    _check_config(path, state, model_config)
    shards = parallel.expert_shards(model)
    cut = {k: (v[shards[k][1]:shards[k][2]] if k in shards else v) for k, v in state.pop("model").items()}
    load_model_state(model, cut, str(path))
    opt = state.pop("optimizer")
    position = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    by_position = {position[id(p)]: n for n, p in model.named_parameters() if id(p) in position}
    for i, entry in opt["state"].items():
        name = by_position.get(int(i))
        if name in shards:
            a, b = shards[name][1:]
            full = shards[name][0]
            entry.update({k: v[a:b] for k, v in entry.items()
                          if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == full})
    try:
        optimizer.load_state_dict(opt)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: optimizer state does not fit the model ({e})") from None
    return state


def _check_config(source: Path, state: dict[str, Any], model_config: dict | None) -> None:
    saved = (state.get("config") or {}).get("model")
    if model_config is not None and saved is not None and saved != model_config:
        raise CheckpointError(f"{source}: does not fit the model (checkpoint model config differs)")


def load_sharded_for_inference(shard_dir: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """A whole model (one process, eval mode) and the saved state from a sharded LM checkpoint."""
    index_extra = load_checkpoint(Path(shard_dir) / sharded.read_index(shard_dir)["shards"][0])["extra"]
    if not isinstance(index_extra, dict) or "config" not in index_extra:
        raise CheckpointError(f"{shard_dir}: not a language-model checkpoint (no 'config')")
    cfg = train_config_from_dict(index_extra["config"], str(shard_dir))
    model = build_model(cfg.model)
    state = sharded.load_sharded(shard_dir, model)
    model.eval()
    return model, state
