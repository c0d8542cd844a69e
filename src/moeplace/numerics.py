"""Divergence detection shared by every trainer (LM, PPO, REINFORCE, device-placement policies).

A trainer calls `check_finite` on its loss before backward and on the gradient norm before the
optimizer step, and runs each step inside `diverges_at`, which turns a NonFiniteError raised by a
layer or a distribution (NaN activations, NaN action probabilities) into the same one-line
DivergenceError. The error names the step and the likely cause, so the weights are never updated
with a non-finite gradient and the caller never writes a checkpoint after it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from moeplace.errors import DivergenceError, NonFiniteError


def _lr_hint(lr: float | None, flag: str) -> str:
    """The likely cause and what to do about it, for the error message."""
    if lr is None:
        return f"the learning rate is likely too high (lower {flag})"
    return f"the learning rate ({lr:g}) is likely too high (lower {flag})"


def diverged(at: str, what: str, lr: float | None = None, flag: str = "the learning rate",
             note: str = "") -> DivergenceError:
    """The DivergenceError of a training run: `at` names the step, `what` the bad value."""
    tail = f"; {note}" if note else ""
    return DivergenceError(f"{at}: {what} - training diverged; {_lr_hint(lr, flag)}{tail}")


def check_finite(at: str, lr: float | None = None, flag: str = "the learning rate", note: str = "",
                 **values: float | torch.Tensor | None) -> None:
    """Raise DivergenceError if a named value (a loss, a gradient norm; scalars) is NaN or infinite."""
    for name, v in values.items():
        if v is None:
            continue
        f = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
        if not math.isfinite(f):
            raise diverged(at, f"{name.replace('_', ' ')} is {f}", lr, flag, note)


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Total 2-norm of the gradients (no clipping); 0 when no parameter has a gradient."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def clip_and_check(parameters: Iterable[torch.nn.Parameter], max_norm: float | None, at: str,
                   lr: float | None = None, flag: str = "the learning rate", note: str = "") -> float:
    """Clip gradients to `max_norm` (None or <= 0: no clipping) and raise DivergenceError if their
    norm before clipping is not finite; returns that norm."""
    params = [p for p in parameters if p.grad is not None]
    if max_norm is not None and max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        norm = grad_norm(params)
    check_finite(at, lr, flag, note, gradient_norm=norm)
    return float(norm)


@contextlib.contextmanager
def diverges_at(at: str, lr: float | None = None, flag: str = "the learning rate",
                note: str = "") -> Iterator[None]:
    """Run a training step; a NonFiniteError inside becomes a DivergenceError naming `at`."""
    try:
        yield
    except NonFiniteError as e:
        raise diverged(at, str(e), lr, flag, note) from None


def nonfinite_tensor(tensors: dict[str, Any]) -> str | None:
    """The key of the first floating-point tensor holding NaN or infinity (None when all are finite)."""
    for key, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return key
    return None
