"""Sharded checkpoints of expert-parallel models: one safetensors shard per rank (its experts; rank 0
also everything else) and index.json naming the shards and each expert parameter's cut, so any world
size (or one unparallelised process) can load them; experts are re-cut on load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from moeplace.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from moeplace.errors import CheckpointError
from moeplace.moe.parallel import ProcessGroup, expert_shards, world_and_rank
from moeplace.utils import atomic_write_text

INDEX_FILE = "index.json"
_FORMAT = "moeplace-expert-sharded"


def _shard_file(rank: int, world: int) -> str:
    return f"shard-{rank:05d}-of-{world:05d}.safetensors"


def _optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict keyed by parameter name instead of position (so it can be re-cut)."""
    names = {id(p): n for n, p in model.named_parameters()}
    sd = optimizer.state_dict()
    index_to_name = {}
    for group, saved in zip(optimizer.param_groups, sd["param_groups"]):
        for p, i in zip(group["params"], saved["params"]):
            if id(p) not in names:
                raise ValueError("optimizer holds a parameter that is not in the model")
            index_to_name[i] = names[id(p)]
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [index_to_name[i] for i in g["params"]]} for g in sd["param_groups"]]
    state = {index_to_name[i]: s for i, s in sd["state"].items()}
    return {"param_groups": groups, "state": state}


def save_sharded(path: str | os.PathLike[str], model: nn.Module,
                 optimizer: torch.optim.Optimizer | None = None, extra: Any = None,
                 rank_extra: Any = None, group: ProcessGroup = None) -> Path:
    """Every rank writes its shard into directory `path`; rank 0 then writes index.json.

    A shard holds this rank's expert slices (and their optimizer state); shard 0 also holds
    every data-parallel parameter, its optimizer state, the param groups and `extra` (any
    JSON/tensor state such as the step). `rank_extra` is this rank's own state (e.g. its RNG),
    read back with `read_rank_extra`. The index is written last, so it marks a complete save.
    """
    world, rank = world_and_rank(group)
    path = Path(path)
    shards = expert_shards(model)
    keep = (lambda name: True) if rank == 0 else (lambda name: name in shards)
    state: dict[str, Any] = {"model": {k: v for k, v in model.state_dict().items() if keep(k)}}
    if optimizer is not None:
        opt = _optimizer_state_by_name(model, optimizer)
        state["optimizer"] = {"state": {k: v for k, v in opt["state"].items() if keep(k)},
                              "param_groups": opt["param_groups"] if rank == 0 else None}
    state["extra"] = extra if rank == 0 else None
    state["rank_extra"] = rank_extra
    save_checkpoint(path / _shard_file(rank, world), state)
    if world > 1:
        dist.barrier(group=group)
    if rank == 0:
        experts = {name: {"num_experts": e, "ranges": [[r * (e // world), (r + 1) * (e // world)]
                                                       for r in range(world)]}
                   for name, (e, _, _) in shards.items()}
        index = {"format": _FORMAT, "version": 1, "world_size": world,
                 "shards": [_shard_file(r, world) for r in range(world)], "experts": experts}
        atomic_write_text(path / INDEX_FILE, json.dumps(index, indent=1) + "\n")
        current = {Path(f).stem for f in index["shards"]}
        for stale in path.glob("shard-*-of-*.*"):  # shards of an earlier save at another world size
            if stale.stem not in current:
                stale.unlink(missing_ok=True)
    if world > 1:
        dist.barrier(group=group)
    return path


def read_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The index of a sharded checkpoint directory; CheckpointError if missing or malformed."""
    file = Path(path) / INDEX_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: not a sharded checkpoint (no {INDEX_FILE})")
    try:
        index = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: corrupt index ({e})") from None
    if not isinstance(index, dict) or index.get("format") != _FORMAT:
        raise CheckpointError(f"{file}: not a {_FORMAT} index")
    return index


def read_rank_extra(path: str | os.PathLike[str], group: ProcessGroup = None) -> Any:
    """This rank's `rank_extra` if the checkpoint was saved at the current world size, else None."""
    index = read_index(path)
    world, rank = world_and_rank(group)
    if index["world_size"] != world:
        return None
    return load_checkpoint(Path(path) / index["shards"][rank]).get("rank_extra")


def _assemble(name: str, a: int, b: int, ranges: list[list[int]], part: Any) -> torch.Tensor:
    """Rows [a, b) of an expert-stacked tensor cut at `ranges`; part(src_rank) gives that shard's piece."""
    pieces = []
    for src, (sa, sb) in enumerate(ranges):
        lo, hi = max(a, sa), min(b, sb)
        if lo < hi:
            pieces.append(part(src)[lo - sa:hi - sa])
    if sum(p.shape[0] for p in pieces) != b - a:
        raise CheckpointError(f"sharded checkpoint does not cover experts {a}..{b - 1} of {name!r}")
    return torch.cat(pieces)


def load_sharded(path: str | os.PathLike[str], model: nn.Module,
                 optimizer: torch.optim.Optimizer | None = None, group: ProcessGroup = None) -> Any:
    """Load a sharded checkpoint into `model` (parallelised at any world size, or not) and return `extra`.

    Each rank reads shard 0 and only the shards that hold its experts, and cuts them anew.
    """
    path = Path(path)
    index = read_index(path)
    shards = expert_shards(model)
    saved = index["experts"]
    if set(saved) != set(shards):
        diff = sorted(set(saved) ^ set(shards))[:3]
        raise CheckpointError(f"{path}: expert parameters do not fit the model (differ: {diff})")
    for name, (e, _, _) in shards.items():
        if saved[name]["num_experts"] != e:
            raise CheckpointError(f"{path}: {name} has {saved[name]['num_experts']} experts, the model {e}")
    loaded: dict[int, dict[str, Any]] = {}

    def shard(src: int) -> dict[str, Any]:
        if src not in loaded:
            loaded[src] = load_checkpoint(path / index["shards"][src])
        return loaded[src]

    state = {}
    for name in model.state_dict():
        if name in shards:
            _, a, b = shards[name]
            state[name] = _assemble(name, a, b, saved[name]["ranges"], lambda s, n=name: shard(s)["model"][n])
        elif name in shard(0)["model"]:
            state[name] = shard(0)["model"][name]
    load_model_state(model, state, source=str(path))
    if optimizer is not None:
        if shard(0).get("optimizer") is None:
            raise CheckpointError(f"{path}: checkpoint holds no optimizer state")
        _load_optimizer(path, model, optimizer, shards, saved, shard)
    return shard(0).get("extra")


def _load_optimizer(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    shards: dict[str, tuple[int, int, int]], saved: dict[str, Any], shard: Any) -> None:
    """Rebuild the optimizer's positional state dict from the name-keyed, sharded one."""
    groups = shard(0)["optimizer"]["param_groups"]
    names = {id(p): n for n, p in model.named_parameters()}
    current = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    if [g["params"] for g in groups] != current:
        raise CheckpointError(f"{path}: optimizer parameter groups do not fit the model")
    position = {n: i for i, n in enumerate(n for g in current for n in g)}
    state: dict[int, dict[str, Any]] = {}
    for name in position:
        if name in shards:
            _, a, b = shards[name]
            ranges = saved[name]["ranges"]
            first = next(s for s, (sa, sb) in enumerate(ranges) if max(a, sa) < min(b, sb))
            entry = shard(first)["optimizer"]["state"].get(name)
            if entry is None:
                continue
            cut, local = {}, shard(first)["model"][name]
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.shape == local.shape:
                    value = _assemble(name, a, b, ranges, lambda s, n=name, k=key: shard(s)["optimizer"][
                        "state"][n][k])
                cut[key] = value
            state[position[name]] = cut
        elif name in shard(0)["optimizer"]["state"]:
            state[position[name]] = shard(0)["optimizer"]["state"][name]
    param_groups = [{**{k: v for k, v in g.items() if k != "params"},
                     "params": [position[n] for n in g["params"]]} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
