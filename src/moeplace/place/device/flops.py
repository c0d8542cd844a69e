"""FLOP formulas per op, forward and backward (a multiply-add counts 2 FLOPs).

Matmul-like ops (linear, conv, matmul, LSTM cell, attention) are counted by formula; their backward
computes the input and the weight gradients, twice the forward. Elementwise ops cost one FLOP per
output element forward and backward; normalisations and softmax a few per element.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
from torch import nn

Shape = tuple[int, ...]

# Functions / methods whose output aliases or repackages their input: no compute, no new memory.
VIEW_OPS = {
    "getitem",
    "view",
    "reshape",
    "permute",
    "transpose",
    "t",
    "contiguous",
    "flatten",
    "squeeze",
    "unsqueeze",
    "expand",
    "expand_as",
    "chunk",
    "split",
    "narrow",
    "select",
    "size",
    "dim",
    "getattr",
    "unbind",
    "detach",
    "view_as",
    "movedim",
    "unflatten",
    "numel",
}
MATMUL_OPS = {"matmul", "bmm", "mm", "einsum_bmm"}
SOFTMAX_OPS = {"softmax", "log_softmax"}
LOSS_OPS = {"cross_entropy", "nll_loss", "mse_loss"}
REDUCE_OPS = {"sum", "mean", "amax", "max", "min", "norm", "logsumexp"}
CREATE_OPS = {
    "cat",
    "stack",
    "to",
    "clone",
    "zeros",
    "ones",
    "zeros_like",
    "ones_like",
    "full",
    "arange",
    "new_zeros",
    "new_ones",
    "new_full",
    "new_empty",
    "empty",
    "empty_like",
}
NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)


def numel(shape: Sequence[int] | None) -> int:
    """Number of elements of a shape (0 for None)."""
    return 0 if shape is None else math.prod(shape)


def target_name(target: object) -> str:
    """A short name for an fx call target: 'add', 'matmul', 'relu', ..."""
    if target is operator.getitem:
        return "getitem"
    if target is operator.matmul:
        return "matmul"
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return name.strip("_").removesuffix("_") if name.startswith("__") else name.rstrip("_")


def lstm_cell_flops(batch: int, input_size: int, hidden: int) -> tuple[float, float]:
    """LSTM cell: gate matmuls 2*B*(I+H)*4H, gate bias/nonlinearity 2*B*4H, cell update 5*B*H."""
    matmul = 2.0 * batch * (input_size + hidden) * 4 * hidden
    elementwise = 2.0 * batch * 4 * hidden + 5.0 * batch * hidden
    return matmul + elementwise, 2 * matmul + 2 * elementwise


def attention_flops(batch_heads: int, q_len: int, kv_len: int, dim: int, v_dim: int) -> tuple[float, float]:
    """Scaled dot-product attention: QK^T 2*L*S*E, softmax 5*L*S, AV 2*L*S*Ev per batch x head."""
    f = batch_heads * (2.0 * q_len * kv_len * dim + 5.0 * q_len * kv_len + 2.0 * q_len * kv_len * v_dim)
    return f, 2 * f


def module_flops(m: nn.Module, in_shapes: list[Shape | None], out_shape: Shape | None) -> tuple[float, float]:
    """(forward, backward) FLOPs of a leaf module call from its input and output shapes."""
    out = numel(out_shape)
    x = in_shapes[0] if in_shapes else None
    if isinstance(m, nn.Linear):
        rows = out // m.out_features
        f = 2.0 * rows * m.in_features * m.out_features + (rows * m.out_features if m.bias is not None else 0)
        return f, 2 * f
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_out = 2.0 * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        f = out * per_out + (out if m.bias is not None else 0)
        return f, 2 * f
    if isinstance(m, nn.LSTMCell):
        batch = numel(x) // m.input_size if x else 1
        return lstm_cell_flops(batch, m.input_size, m.hidden_size)
    if isinstance(m, nn.MultiheadAttention):
        q = in_shapes[0] or (1, 1, m.embed_dim)
        k = in_shapes[1] if len(in_shapes) > 1 and in_shapes[1] else q
        batch, q_len, kv_len = (q[0], q[1], k[1]) if m.batch_first else (q[1], q[0], k[0])
        e = m.embed_dim
        proj = 2.0 * batch * e * e * (q_len + 2 * kv_len + q_len)
        att_f, att_b = attention_flops(batch * m.num_heads, q_len, kv_len, m.head_dim, m.head_dim)
        return proj + att_f, 2 * proj + att_b
    if isinstance(m, nn.Embedding):
        return float(out), float(out)
    if isinstance(m, NORM_MODULES):
        return 5.0 * out, 10.0 * out
    if isinstance(m, POOL_MODULES):
        k = m.kernel_size if isinstance(m.kernel_size, int) else math.prod(m.kernel_size)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and isinstance(m.kernel_size, int):
            k = k * k
        return float(out * k), float(numel(x))
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return float(numel(x)), float(numel(x))
    if hasattr(m, "active_flops_per_token") and x:
        tokens = numel(x) // x[-1]
        f = float(tokens * m.active_flops_per_token())
        return f, 2 * f
    return float(out), float(out)


def function_flops(name: str, in_shapes: list[Shape | None], out_shape: Shape | None) -> tuple[float, float]:
    """(forward, backward) FLOPs of a call_function / call_method node named `name`."""
    out = numel(out_shape)
    a = in_shapes[0] if in_shapes else None
    if name in VIEW_OPS:
        return 0.0, 0.0
    if name in MATMUL_OPS and a:
        f = 2.0 * out * a[-1]
        return f, 2 * f
    if name == "linear" and a:
        f = 2.0 * out * a[-1] + out
        return f, 2 * f
    if name in ("conv1d", "conv2d") and len(in_shapes) > 1 and in_shapes[1]:
        w = in_shapes[1]
        f = 2.0 * out * math.prod(w[1:])
        return f, 2 * f
    if name == "scaled_dot_product_attention" and len(in_shapes) >= 3 and all(in_shapes[:3]):
        q, k, v = in_shapes[0], in_shapes[1], in_shapes[2]
        return attention_flops(math.prod(q[:-2]), q[-2], k[-2], q[-1], v[-1])
    if name in SOFTMAX_OPS:
        return 5.0 * out, 2.0 * out
    if name in LOSS_OPS:
        return 5.0 * numel(a), 2.0 * numel(a)
    if name in REDUCE_OPS:
        return float(numel(a)), float(numel(a))
    if name in CREATE_OPS:
        return 0.0, 0.0
    return float(out), float(out)


def tensor_bytes(value: object) -> float:
    """Bytes of every tensor in a (nested) op output."""
    if isinstance(value, torch.Tensor):
        return float(value.numel() * value.element_size())
    if isinstance(value, (tuple, list)):
        return float(sum(tensor_bytes(v) for v in value))
    return 0.0


def first_shape(value: object) -> Shape | None:
    """Shape of the first tensor in a (nested) value; None if it holds no tensor."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        for v in value:
            s = first_shape(v)
            if s is not None:
                return s
    return None
