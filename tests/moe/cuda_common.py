"""What the CUDA-only MoE tests share: their marks, exact float32 matmuls, the Hopper check."""

from __future__ import annotations

import pytest
import torch

CUDA_MARKS = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(autouse=True)
def _no_tf32():
    """Exact float32 matmuls, so CUDA and CPU agree to 1e-5."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def hopper() -> bool:
    """Hopper or Blackwell (where torch._grouped_mm runs fused)."""
    return torch.cuda.get_device_capability()[0] in (9, 10)
