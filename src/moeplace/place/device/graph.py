"""The op graph of a model: per-op FLOPs and bytes, data edges, co-location groups; JSON save/load.

Ops are stored in topological order (every edge goes from a lower to a higher index), as torch.fx
lists them. Placement works on *groups* of ops that must share a device: an op and the ops anchored
to it (its inputs' placeholders, the parameters it reads, views of its output), and, depending on
the grouping, every op of one module call ("module") or of one layer ("layer").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moeplace.errors import InputError
from moeplace.utils import atomic_write_text

GROUPINGS = ("op", "module", "layer")


@dataclass
class OpGraph:
    """Ops (topologically ordered) with costs, edges producer -> consumer, and co-location groups."""

    names: list[str]
    kinds: list[str]
    fwd_flops: np.ndarray  # float64 [N] forward FLOPs
    bwd_flops: np.ndarray  # float64 [N] backward FLOPs (input and weight gradients)
    out_bytes: np.ndarray  # float64 [N] bytes of the op's output (what a transfer moves)
    param_bytes: np.ndarray  # float64 [N] bytes of the parameters the op owns
    trivial: np.ndarray  # bool [N] no compute and no new memory (inputs, parameters, views, output)
    edges: np.ndarray  # int64 [2, E] producer -> consumer, producer < consumer
    anchor: np.ndarray  # int64 [N] op that this op must share a device with (-1: none)
    scope: list[str]  # module call instance the op belongs to ("encoder.layers.0#3"; "" = root)
    layer: list[str]  # layer key per op, for layer grouping and the expert split
    group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 [N]
    group_names: list[str] = field(default_factory=list)
    grouping: str = "module"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Validate topological order and compute groups if none were given."""
        n = len(self.names)
        for name in ("fwd_flops", "bwd_flops", "out_bytes", "param_bytes"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(n))
        self.trivial = np.asarray(self.trivial, dtype=bool).reshape(n)
        self.edges = np.asarray(self.edges, dtype=np.int64).reshape(2, -1)
        self.anchor = np.asarray(self.anchor, dtype=np.int64).reshape(n)
        if self.edges.size and np.any(self.edges[0] >= self.edges[1]):
            raise InputError("op graph: edges must go from a lower to a higher op index (topological)")
        if len(self.group) != n:
            self.regroup(self.grouping)

    @property
    def num_ops(self) -> int:
        """Number of ops."""
        return len(self.names)

    @property
    def num_groups(self) -> int:
        """Number of co-location groups (the nodes a placer places)."""
        return len(self.group_names)

    def anchor_root(self) -> np.ndarray:
        """For each op, the op at the end of its anchor chain (itself when unanchored)."""
        root = np.arange(self.num_ops)
        for i in range(self.num_ops):
            j, seen = i, 0
            while self.anchor[j] >= 0 and seen <= self.num_ops:
                j, seen = int(self.anchor[j]), seen + 1
            root[i] = j
        return root

    def regroup(self, grouping: str | int) -> OpGraph:
        """Recompute groups in place: "op", "module", "layer", or an int module-path depth; returns self."""
        root = self.anchor_root()
        keys: list[str] = []
        for i in range(self.num_ops):
            r = int(root[i])
            if grouping == "op":
                keys.append(self.names[r])
            elif grouping == "module":
                keys.append(self.scope[r] or self.names[r])
            elif grouping == "layer":
                keys.append(self.layer[r])
            elif isinstance(grouping, int) and grouping > 0:
                path = self.scope[r].split("#")[0]
                keys.append(".".join(path.split(".")[:grouping]) if path else self.layer[r])
            else:
                raise InputError(f"grouping must be one of {GROUPINGS} or a positive depth, got {grouping!r}")
        ids: dict[str, int] = {}
        self.group = np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
        self.group_names = list(ids)
        self.grouping = str(grouping)
        return self

    def group_first_op(self) -> np.ndarray:
        """For each group, the index of its first op (ops are in topological order, so sorting groups
        by it gives a topological order of the groups)."""
        first = np.full(self.num_groups, self.num_ops, dtype=np.int64)
        np.minimum.at(first, self.group, np.arange(self.num_ops))
        return first

    def group_edges(self) -> np.ndarray:
        """Edges between different groups `[2, E']` (each directed pair once)."""
        g = self.group[self.edges]
        g = g[:, g[0] != g[1]]
        return np.unique(g, axis=1) if g.size else np.zeros((2, 0), np.int64)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "format": "moeplace.opgraph/1",
            "names": self.names,
            "kinds": self.kinds,
            "scope": self.scope,
            "layer": self.layer,
            "fwd_flops": self.fwd_flops.tolist(),
            "bwd_flops": self.bwd_flops.tolist(),
            "out_bytes": self.out_bytes.tolist(),
            "param_bytes": self.param_bytes.tolist(),
            "trivial": self.trivial.astype(int).tolist(),
            "edges": self.edges.tolist(),
            "anchor": self.anchor.tolist(),
            "grouping": self.grouping,
            "group": self.group.tolist(),
            "group_names": self.group_names,
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the graph as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "op graph") -> OpGraph:
        """Build from a dict as written by `to_dict`; InputError naming a missing field."""
        required = ("names", "kinds", "fwd_flops", "bwd_flops", "out_bytes", "param_bytes", "edges")
        for key in required:
            if key not in d:
                raise InputError(f"{source}: missing field '{key}'")
        n = len(d["names"])
        return cls(
            names=list(d["names"]),
            kinds=list(d["kinds"]),
            fwd_flops=d["fwd_flops"],
            bwd_flops=d["bwd_flops"],
            out_bytes=d["out_bytes"],
            param_bytes=d["param_bytes"],
            trivial=d.get("trivial", [0] * n),
            edges=np.asarray(d["edges"], dtype=np.int64).reshape(2, -1),
            anchor=d.get("anchor", [-1] * n),
            scope=list(d.get("scope", [""] * n)),
            layer=list(d.get("layer", [""] * n)),
            group=np.asarray(d.get("group", []), dtype=np.int64),
            group_names=list(d.get("group_names", [])),
            grouping=d.get("grouping", "module"),
            meta=dict(d.get("meta", {})),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OpGraph:
        """Read a graph written by `save`; InputError on a missing or malformed file."""
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError as e:
            raise InputError(f"{path}: no such op-graph file") from e
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
        return cls.from_dict(d, source=str(path))

    def summary(self) -> dict[str, float]:
        """Totals: ops, groups, forward/backward GFLOPs, parameter MB."""
        return {
            "ops": self.num_ops,
            "groups": self.num_groups,
            "fwd_gflops": float(self.fwd_flops.sum() / 1e9),
            "bwd_gflops": float(self.bwd_flops.sum() / 1e9),
            "param_mb": float(self.param_bytes.sum() / 1e6),
        }


def coarsen(graph: OpGraph, grouping: str | int) -> OpGraph:
    """A copy of `graph` whose ops are grouped by `grouping` ("op", "module", "layer" or a depth)."""
    g = OpGraph.from_dict(graph.to_dict())
    return g.regroup(grouping)
