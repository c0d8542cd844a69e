"""Checkpoints as one safetensors file (tensors + JSON header metadata) and a readable JSON sidecar.

Nested state (model, optimizer, RNG, step, data position) is flattened: every tensor leaf goes
into the safetensors body under a dotted key, everything else into a JSON skeleton. Nothing is
ever unpickled, and both files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError as SafetensorsError
from safetensors.torch import load_file, save_file

from moeplace.errors import CheckpointError
from moeplace.numerics import nonfinite_tensor
from moeplace.utils import atomic_path, atomic_write_text, json_dumps

_META_KEY = "moeplace"


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into (tensors by dotted key, JSON skeleton with tensor references)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(o: Any, key: str) -> Any:
        if isinstance(o, torch.Tensor):
            tensors[key] = o.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(o, dict):
            return {"__dict__": [[k, walk(v, f"{key}.{k}" if key else str(k))] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return [walk(v, f"{key}.{i}" if key else str(i)) for i, v in enumerate(o)]
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot checkpoint a {type(o).__name__} at {key!r}")

    return tensors, walk(obj, prefix)


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of flatten_state."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            key = skeleton["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"checkpoint lacks tensor {key!r}")
            return tensors[key]
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any], allow_nonfinite: bool = False
                    ) -> Path:
    """Write `state` (nested dicts/lists of tensors and JSON values) to `path` (.safetensors).

    A sidecar `<path>.json` holds the same JSON skeleton for people and scripts to read (valid JSON:
    non-finite numbers as null). A state whose floating-point tensors hold NaN or infinity is refused
    (CheckpointError; the file already at `path` is left as it was) unless `allow_nonfinite`.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(path.suffix + ".safetensors") if path.suffix else path.with_suffix(
            ".safetensors")
    tensors, skeleton = flatten_state(state)
    bad = None if allow_nonfinite else nonfinite_tensor(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: not written: tensor {bad!r} holds NaN or infinity "
                              "(training diverged?); the previous checkpoint is kept")
    meta_json = json.dumps(skeleton)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: meta_json})
    atomic_write_text(path.with_suffix(".json"), json_dumps(skeleton, indent=1) + "\n")
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint; raise CheckpointError if missing or corrupt."""
    path = Path(path)
    if not path.exists() and path.with_suffix(".safetensors").exists():
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorsError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint ({str(e).splitlines()[0]})") from None
    if _META_KEY not in meta:
        raise CheckpointError(f"{path}: not a moeplace checkpoint (no '{_META_KEY}' metadata)")
    try:
        skeleton = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from None
    try:
        state = unflatten_state(skeleton, tensors)
    except (KeyError, TypeError, ValueError) as e:  # a skeleton that is JSON but not ours
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: checkpoint state is not a mapping")
    return state


def load_model_state(module: torch.nn.Module, state_dict: dict[str, torch.Tensor],
                     source: str = "checkpoint") -> None:
    """Load a state dict into a module, turning any mismatch into one clear CheckpointError."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{source}: model weights are not a mapping of tensors")
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{source}: does not fit the model ({what})")
    for k, v in own.items():
        if tuple(state_dict[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{source}: does not fit the model ({k}: shape {tuple(state_dict[k].shape)} "
                f"in checkpoint, {tuple(v.shape)} in model)")
    module.load_state_dict(state_dict)
