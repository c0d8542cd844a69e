"""Apply a placement: a runnable fx GraphModule whose ops run on their assigned devices.

Each parameter moves to the device of the op that owns it; wherever an op reads a tensor produced
on another device, a `.to(device)` node is inserted (once per tensor and destination), so autograd
sends the gradients back the same way. Inputs are moved to the device of the op they are placed with.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from moeplace.errors import InputError
from moeplace.place.device.trace import trace_with_shapes


def default_device_map(names: list[str]) -> dict[str, str]:
    """Cluster device name -> torch device: "cpu*" -> cpu, the k-th other device -> cuda:k."""
    out, k = {}, 0
    for n in names:
        if n.startswith("cpu"):
            out[n] = "cpu"
        else:
            out[n], k = f"cuda:{k}", k + 1
    return out


def device_available(device: str | torch.device) -> bool:
    """Whether this machine has `device` (cpu always; cuda:k when CUDA is built and has k+1 GPUs; meta)."""
    d = torch.device(device)
    if d.type in ("cpu", "meta"):
        return True
    if d.type == "cuda":
        return torch.cuda.is_available() and (d.index or 0) < torch.cuda.device_count()
    backend = getattr(torch.backends, d.type, None)
    return bool(backend is not None and getattr(backend, "is_available", lambda: False)())


def apply_placement(
    module: nn.Module,
    example_inputs: tuple,
    op_device: dict[str, str],
    device_map: dict[str, str] | None = None,
    fallback: str | None = None,
) -> fx.GraphModule:
    """A copy of `module` as a GraphModule placed per `op_device` (op name -> cluster device name).

    `device_map` turns cluster device names into torch devices (default: `default_device_map`).
    A device this machine lacks is an InputError naming it, unless `fallback` (e.g. "cpu") is given:
    then every unavailable device maps to `fallback`. Ops missing from `op_device` stay with their
    first input (or the first device).
    """
    module = copy.deepcopy(module)
    gm, rec = trace_with_shapes(module, example_inputs)
    nodes = list(gm.graph.nodes)
    unknown = sorted(set(op_device) - {n.name for n in nodes})
    if unknown:
        raise InputError(f"placement names unknown op '{unknown[0]}' ({len(unknown)} unknown)")
    dmap = dict(device_map or default_device_map(sorted(set(op_device.values()))))
    missing = sorted(set(op_device.values()) - set(dmap))
    if missing:
        raise InputError(f"placement names device '{missing[0]}' that the device map lacks")
    if fallback is not None and not device_available(fallback):
        raise InputError(f"fallback device {fallback!r}: not available on this machine")
    for name, target in sorted(dmap.items()):
        try:
            ok = device_available(target)
        except RuntimeError as e:  # not a device string torch knows
            raise InputError(f"device map: {name} -> {target!r}: {str(e).splitlines()[0]}") from None
        if not ok:
            if fallback is None:
                raise InputError(
                    f"placement device '{name}' maps to {target}, which this machine lacks "
                    f"({_why_missing(target)}); pass device_map (e.g. {{'{name}': 'cpu'}}) or fallback='cpu'")
            dmap[name] = fallback
    first = next(iter(op_device.values()), "cpu")
    dmap.setdefault(first, "cpu")
    place: dict[fx.Node, str] = {}  # cluster device name per node (transfers cross these boundaries)
    for n in nodes:
        if n.name in op_device:
            place[n] = op_device[n.name]
        else:
            ins = n.all_input_nodes
            place[n] = place[ins[0]] if ins else first
    dev = {n: torch.device(dmap[d]) for n, d in place.items()}
    is_tensor = {n: isinstance(rec.values.get(n), torch.Tensor) for n in nodes}
    # parameters and buffers go to the device of the op that owns them
    for n in nodes:
        if n.op == "call_module":
            sub = gm.get_submodule(n.target)
            for p in sub.parameters():
                p.data = p.data.to(dev[n])
            for name, b in list(sub.named_buffers(recurse=True)):
                owner, _, leaf = name.rpartition(".")
                (sub.get_submodule(owner) if owner else sub)._buffers[leaf] = b.to(dev[n])
        elif n.op == "get_attr":
            *path, leaf = n.target.split(".")
            owner = gm.get_submodule(".".join(path)) if path else gm
            t = getattr(owner, leaf)
            if isinstance(t, nn.Parameter):
                t.data = t.data.to(dev[n])
            elif isinstance(t, torch.Tensor):
                owner._buffers[leaf] = t.to(dev[n]) if leaf in owner._buffers else t
    g = gm.graph
    moved: dict[tuple[fx.Node, str], fx.Node] = {}
    for n in nodes:  # inputs: moved to their placeholder's device first
        if n.op == "placeholder" and is_tensor[n]:
            users = list(n.users)
            with g.inserting_after(n):
                m = g.call_method("to", (n, str(dev[n])))
            for u in users:
                u.replace_input_with(n, m)
            dev[m], place[m], is_tensor[m] = dev[n], place[n], True
            moved[(n, place[n])] = m
    for n in nodes:
        if n.op in ("output", "placeholder"):
            continue
        for src in list(n.all_input_nodes):
            if is_tensor.get(src) and place[src] != place[n]:
                key = (src, place[n])
                if key not in moved:
                    with g.inserting_after(src):
                        moved[key] = g.call_method("to", (src, str(dev[n])))
                n.replace_input_with(src, moved[key])
    g.lint()
    gm.recompile()
    gm.transfers = sum(1 for k, v in moved.items() if k[0].op != "placeholder")  # type: ignore[attr-defined]
    return gm


def _why_missing(device: str) -> str:
    """A short reason why a device is not available here."""
    d = torch.device(device)
    if d.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        return f"it has {torch.cuda.device_count()} GPU(s)"
    return f"no {d.type} backend"
