"""The torchrun runtime helpers in one process: error translation, row split, world-1 no-ops."""

from __future__ import annotations

import pytest
import torch

from moeplace.errors import InputError, MoeplaceError
from moeplace.lm.distributed import (
    DistContext,
    DistributedError,
    global_mean,
    init_distributed,
    local_rows,
    translate_errors,
)


def test_collective_failures_become_one_clear_line():
    """A peer's lost connection or a timeout becomes DistributedError naming the rank and the timeout."""
    gloo = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
            "[127.0.0.1]:45774: Connection reset by peer. This is typically caused by a remote worker")
    with pytest.raises(DistributedError) as info, translate_errors(1, 4, 30, "training"):
        raise RuntimeError(gloo)
    msg = str(info.value)
    assert isinstance(info.value, MoeplaceError) and "\n" not in msg
    assert msg == ("rank 1 of 4: stopped during training: another rank died, hung or failed "
                   "(process-group timeout 30 s): Read error [127.0.0.1]:45774: Connection reset by peer.")


def test_other_errors_stay_tracebacks():
    """A bug (an ordinary RuntimeError) is not disguised as a communication failure."""
    with pytest.raises(RuntimeError, match="shape mismatch"), translate_errors(0, 2, 30, "training"):
        raise RuntimeError("shape mismatch: [2, 3] vs [3, 2]")


def test_rows_of_the_global_batch():
    """Rank r takes rows r, r+W, r+2W...; the ranks together hold every row once."""
    batch = torch.arange(12).reshape(6, 2)
    parts = [local_rows(batch, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert parts[1].tolist() == [[2, 3], [8, 9]]
    assert sorted(torch.cat(parts)[:, 0].tolist()) == batch[:, 0].tolist()
    with pytest.raises(InputError, match="--batch-size 6 is not divisible by the world size 4"):
        local_rows(batch, DistContext(rank=0, world_size=4))


def test_without_torchrun_everything_is_single_process(monkeypatch):
    """No torchrun environment: world 1, no process group, plain values."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    ctx = init_distributed(timeout_s=5, device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main) == (0, 1, False, True)
    assert not torch.distributed.is_initialized()
    assert global_mean(torch.tensor(2.5, requires_grad=True), ctx) == 2.5
    with pytest.raises(InputError, match="--dist-timeout"):
        init_distributed(timeout_s=0)
