"""Trace any nn.Module into an OpGraph with torch.fx: shapes propagated, FLOPs and bytes per op.

Works with modules on the meta device (shapes without memory), so graphs of models far larger than
this machine's RAM can be built. An MoE layer (any module with `active_flops_per_token` and
`experts`) is kept as one leaf op, its FLOPs from the layer's own count of active FLOPs per token.
"""

from __future__ import annotations

import traceback
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from moeplace.errors import InputError
from moeplace.place.device.flops import (
    VIEW_OPS,
    first_shape,
    function_flops,
    module_flops,
    target_name,
    tensor_bytes,
)
from moeplace.place.device.graph import OpGraph


def _is_moe(m: nn.Module) -> bool:
    """An MoE layer: traced as one leaf op (its dispatch is data dependent)."""
    return hasattr(m, "active_flops_per_token") and hasattr(m, "experts")


class _ScopeTracer(fx.Tracer):
    """fx tracer that records, on every node, the module call instance it was created in."""

    def __init__(self) -> None:
        super().__init__()
        self._stack: list[str] = []
        self._calls: dict[str, int] = defaultdict(int)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        """torch.nn modules and MoE layers are leaves."""
        return _is_moe(m) or super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        """Push a scope "path#k" (k-th call of this module) around the module call."""
        path = self.path_of_module(m)
        self._calls[path] += 1
        self._stack.append(f"{path}#{self._calls[path]}")
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._stack.pop()

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        """Attach the current scope to each new node."""
        node = super().create_node(*args, **kwargs)
        node.meta["scope"] = self._stack[-1] if self._stack else ""
        return node


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph once, keeping every node's value (meta tensors need no memory)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        """Run a leaf; an MoE layer on meta tensors returns a tensor shaped like its input."""
        m = self.fetch_attr(target)
        if _is_moe(m) and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return torch.empty_like(args[0])
        return super().call_module(target, args, kwargs)

    def run_node(self, n: fx.Node) -> Any:
        """Run one node, naming it in the error if it fails."""
        try:
            value = super().run_node(n)
        except Exception as e:
            raise InputError(
                f"op '{n.name}' ({n.op} {target_name(n.target)}) failed during shape "
                f"propagation: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e
        self.values[n] = value
        return value


def _trace_error(module: nn.Module, e: Exception) -> InputError:
    """An InputError naming the user-code line where tracing failed and why."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/torch/" not in f.filename]
    where = (
        f" at {frames[-1].filename}:{frames[-1].lineno} `{(frames[-1].line or '').strip()}`" if frames else ""
    )
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return InputError(f"cannot trace {type(module).__name__}{where}: {reason}")


def layer_key(path: str) -> str:
    """Layer of a module path: up to the first numeric index ("encoder.2"), else its first part."""
    if not path:
        return ""
    parts = path.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0]


def trace_with_shapes(module: nn.Module, example_inputs: tuple) -> tuple[fx.GraphModule, _ShapeRecorder]:
    """fx-trace `module` (module scopes kept) and run it once on `example_inputs` to record shapes."""
    tracer = _ScopeTracer()
    try:
        graph = tracer.trace(module)
    except Exception as e:
        raise _trace_error(module, e) from e
    gm = fx.GraphModule(tracer.root, graph)
    rec = _ShapeRecorder(gm)
    with torch.no_grad():
        rec.run(*example_inputs)
    return gm, rec


def trace_graph(
    module: nn.Module, example_inputs: tuple, grouping: str | int = "module", name: str | None = None
) -> OpGraph:
    """Trace `module(*example_inputs)` into an OpGraph (see module docstring)."""
    gm, rec = trace_with_shapes(module, example_inputs)
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    names, kinds, scope, layer = [], [], [], []
    fwd = np.zeros(len(nodes))
    bwd = np.zeros(len(nodes))
    out_b = np.zeros(len(nodes))
    par_b = np.zeros(len(nodes))
    trivial = np.zeros(len(nodes), dtype=bool)
    anchor = np.full(len(nodes), -1, dtype=np.int64)
    edges: set[tuple[int, int]] = set()
    first_call: dict[str, int] = {}  # a module called several times keeps its parameters on one device
    for i, n in enumerate(nodes):
        value = rec.values.get(n)
        in_vals = fx.node.map_arg(n.args, lambda a: rec.values.get(a))
        in_shapes = [first_shape(v) for v in in_vals]
        out_shape = first_shape(value)
        out_b[i] = tensor_bytes(value)
        names.append(n.name)
        sc = n.meta.get("scope", "")
        scope.append(sc)
        layer.append(layer_key(sc.split("#")[0]))
        for a in n.all_input_nodes:
            edges.add((index[a], i))
        users = [index[u] for u in n.users]
        if n.op in ("placeholder", "get_attr"):
            kinds.append(n.op)
            trivial[i] = True
            if n.op == "get_attr" and isinstance(value, nn.Parameter):
                par_b[i] = out_b[i]
            anchor[i] = min(users) if users else -1
        elif n.op == "output":
            kinds.append("output")
            trivial[i] = True
            ins = [index[a] for a in n.all_input_nodes]
            anchor[i] = ins[0] if ins else -1
        elif n.op == "call_module":
            m = gm.get_submodule(n.target)
            kinds.append(type(m).__name__.lower())
            fwd[i], bwd[i] = module_flops(m, in_shapes, out_shape)
            if n.target in first_call:
                anchor[i] = first_call[n.target]
            else:
                first_call[n.target] = i
                par_b[i] = float(sum(p.numel() * p.element_size() for p in m.parameters()))
        else:
            tname = target_name(n.target)
            kinds.append(tname)
            if tname in VIEW_OPS or out_shape is None:
                trivial[i] = True
                ins = [index[a] for a in n.all_input_nodes]
                anchor[i] = ins[0] if ins else (min(users) if users else -1)
            else:
                fwd[i], bwd[i] = function_flops(tname, in_shapes, out_shape)
    # Root-level ops take the layer of the op they are anchored to, or of their first input.
    for i in range(len(nodes)):
        if not layer[i]:
            srcs = [a for (a, b) in sorted(edges) if b == i]
            ref = anchor[i] if anchor[i] >= 0 and anchor[i] < i else (srcs[0] if srcs else -1)
            layer[i] = layer[ref] if ref >= 0 and layer[ref] else "input"
    for i in range(len(nodes) - 1, -1, -1):  # anchors pointing forward (placeholders) resolve backwards
        if layer[i] == "input" and anchor[i] > i:
            layer[i] = layer[anchor[i]]
    e = np.array(sorted(edges), dtype=np.int64).T.reshape(2, -1)
    meta = {
        "model": name or type(module).__name__,
        "input_shapes": [list(first_shape(x) or ()) for x in example_inputs],
    }
    return OpGraph(
        names=names,
        kinds=kinds,
        fwd_flops=fwd,
        bwd_flops=bwd,
        out_bytes=out_b,
        param_bytes=par_b,
        trivial=trivial,
        edges=e,
        anchor=anchor,
        scope=scope,
        layer=layer,
        grouping=str(grouping) if not isinstance(grouping, int) else grouping,
        meta=meta,
    )
