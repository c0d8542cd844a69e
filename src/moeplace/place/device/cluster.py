"""Cluster specs: devices (FLOP/s, memory, per-op overhead) and links (bandwidth, latency).

A cluster file is YAML or JSON:

    name: my-box
    devices:
      - {name: gpu0, kind: gpu, flops: 2.8e12, memory: 12e9, op_overhead: 5.7e-6}
      - {name: gpu1, kind: gpu, flops: 2.8e12, memory: 12e9}
    links:                      # later entries override earlier ones
      - {between: all, bandwidth: 7.6e9, latency: 25e-6}
      - {between: [gpu0, gpu1], bandwidth: 50e9, latency: 5e-6}

Units: FLOP/s, bytes, bytes/s, seconds. Every pair of devices needs a link.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from moeplace.errors import InputError


@dataclass(frozen=True)
class Device:
    """One device: name, kind ("gpu"/"cpu"), FLOP/s, memory bytes, fixed time per op (s)."""

    name: str
    kind: str
    flops: float
    memory: float
    op_overhead: float = 0.0


@dataclass
class Cluster:
    """Devices and the [D, D] bandwidth (bytes/s) and latency (s) of the link between each pair."""

    name: str
    devices: list[Device]
    bandwidth: np.ndarray
    latency: np.ndarray

    @property
    def num_devices(self) -> int:
        """Number of devices."""
        return len(self.devices)

    @property
    def names(self) -> list[str]:
        """Device names in order."""
        return [d.name for d in self.devices]

    def index(self, name: str) -> int:
        """Index of the device called `name`; InputError if there is none."""
        try:
            return self.names.index(name)
        except ValueError:
            raise InputError(
                f"unknown device '{name}' (cluster '{self.name}' has {', '.join(self.names)})"
            ) from None

    def array(self, field: str) -> np.ndarray:
        """A per-device field as a float64 array."""
        return np.array([getattr(d, field) for d in self.devices], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """A dict in the cluster-file format (one link entry per pair)."""
        links = [
            {
                "between": [a.name, b.name],
                "bandwidth": float(self.bandwidth[i, j]),
                "latency": float(self.latency[i, j]),
            }
            for i, a in enumerate(self.devices)
            for j, b in enumerate(self.devices)
            if i < j
        ]
        return {"name": self.name, "devices": [vars(d) for d in self.devices], "links": links}


def _field(entry: dict[str, Any], key: str, where: str, kind: type = float, default: Any = None) -> Any:
    """A field of a device or link entry, of `kind`: numbers must be finite and positive, or >= 0 for
    optional fields (those with a `default`: overheads, latencies). InputError naming it otherwise."""
    if not isinstance(entry, dict) or (key not in entry and default is None):
        raise InputError(f"{where}: missing field '{key}'")
    raw = entry.get(key, default)
    if kind is float and (isinstance(raw, bool) or not isinstance(raw, (int, float, str))):
        raise InputError(f"{where}: field '{key}' must be a number, got {raw!r}")
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise InputError(f"{where}: field '{key}' must be a {kind.__name__}, got {raw!r}") from None
    if kind is float:
        ok = math.isfinite(value) and (value >= 0 if default is not None else value > 0)
        if not ok:
            need = "a finite number >= 0" if default is not None else "a positive finite number"
            raise InputError(f"{where}: field '{key}' must be {need}, got {raw!r}")
    return value


def cluster_from_dict(spec: dict[str, Any], source: str = "cluster") -> Cluster:
    """Validate a cluster spec dict; InputError naming the missing or bad field."""
    if not isinstance(spec, dict):
        raise InputError(f"{source}: expected a mapping with 'devices' and 'links'")
    devs = spec.get("devices")
    if not isinstance(devs, list) or not devs:
        raise InputError(f"{source}: missing field 'devices' (a non-empty list)")
    devices = []
    for k, e in enumerate(devs):
        where = f"{source}: devices[{k}]"
        name = _field(e, "name", where, str)
        overhead = _field(e, "op_overhead", where, default=0.0)
        devices.append(
            Device(
                name=name,
                kind=str(e.get("kind", "gpu")),
                flops=_field(e, "flops", where),
                memory=_field(e, "memory", where),
                op_overhead=overhead,
            )
        )
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise InputError(f"{source}: device names must be unique")
    n = len(devices)
    bw = np.full((n, n), np.nan)
    lat = np.full((n, n), np.nan)
    links = spec.get("links")
    if not isinstance(links, list) or (not links and n > 1):
        raise InputError(f"{source}: missing field 'links' (a list)")
    for k, e in enumerate(links):
        where = f"{source}: links[{k}]"
        between = e.get("between") if isinstance(e, dict) else None
        if between is None:
            raise InputError(f"{where}: missing field 'between' (a pair of device names, or 'all')")
        if "latency" not in e:
            raise InputError(f"{where}: missing field 'latency' (seconds, >= 0)")
        b, l_ = _field(e, "bandwidth", where), _field(e, "latency", where, default=0.0)
        if between == "all":
            bw[:], lat[:] = b, l_
        else:
            if not isinstance(between, list) or len(between) != 2 or not all(
                    isinstance(x, str) for x in between):
                raise InputError(f"{where}: 'between' must be two device names or 'all'")
            i, j = (names.index(x) if x in names else -1 for x in between)
            if i < 0 or j < 0:
                raise InputError(f"{where}: unknown device in 'between': {between}")
            bw[i, j] = bw[j, i] = b
            lat[i, j] = lat[j, i] = l_
    np.fill_diagonal(bw, np.inf)
    np.fill_diagonal(lat, 0.0)
    if np.isnan(bw).any():
        i, j = np.argwhere(np.isnan(bw))[0]
        raise InputError(f"{source}: no link between '{names[i]}' and '{names[j]}'")
    return Cluster(name=str(spec.get("name", Path(source).stem)), devices=devices, bandwidth=bw, latency=lat)


def _k80x4() -> dict[str, Any]:
    """The 2017 paper's machine: Haswell CPU host + 4 K80-class GPUs on PCIe (Placeto's fitted constants)."""
    gpus = [
        {"name": f"gpu{i}", "kind": "gpu", "flops": 2.8e12, "memory": 12e9, "op_overhead": 5.7e-6}
        for i in range(4)
    ]
    cpu = {"name": "cpu", "kind": "cpu", "flops": 0.5e12, "memory": 64e9, "op_overhead": 5.7e-6}
    return {
        "name": "k80x4",
        "devices": [cpu, *gpus],
        "links": [{"between": "all", "bandwidth": 7.6e9, "latency": 25e-6}],
    }


def _a100x8() -> dict[str, Any]:
    """8 A100 (fp32 19.5 TFLOP/s, 40 GB) fully connected by NVLink (300 GB/s per direction)."""
    gpus = [
        {"name": f"gpu{i}", "kind": "gpu", "flops": 19.5e12, "memory": 40e9, "op_overhead": 5e-6}
        for i in range(8)
    ]
    return {
        "name": "a100x8",
        "devices": gpus,
        "links": [{"between": "all", "bandwidth": 300e9, "latency": 5e-6}],
    }


def _hetero() -> dict[str, Any]:
    """Two fast GPUs (NVLink between them), two slow GPUs and a CPU, all on PCIe 4 (16 GB/s)."""
    devices = [
        {"name": "fast0", "kind": "gpu", "flops": 19.5e12, "memory": 40e9, "op_overhead": 5e-6},
        {"name": "fast1", "kind": "gpu", "flops": 19.5e12, "memory": 40e9, "op_overhead": 5e-6},
        {"name": "slow0", "kind": "gpu", "flops": 2.8e12, "memory": 12e9, "op_overhead": 5.7e-6},
        {"name": "slow1", "kind": "gpu", "flops": 2.8e12, "memory": 12e9, "op_overhead": 5.7e-6},
        {"name": "cpu", "kind": "cpu", "flops": 0.5e12, "memory": 64e9, "op_overhead": 5.7e-6},
    ]
    links = [
        {"between": "all", "bandwidth": 16e9, "latency": 10e-6},
        {"between": ["fast0", "fast1"], "bandwidth": 300e9, "latency": 5e-6},
    ]
    return {"name": "hetero", "devices": devices, "links": links}


PRESETS = {"k80x4": _k80x4, "a100x8": _a100x8, "hetero": _hetero}


def load_cluster(spec: str | os.PathLike[str] | dict[str, Any]) -> Cluster:
    """A preset name, a YAML/JSON cluster file, or a spec dict -> Cluster (InputError on bad input)."""
    if isinstance(spec, dict):
        return cluster_from_dict(spec)
    key = str(spec)
    if key in PRESETS:
        return cluster_from_dict(PRESETS[key](), source=key)
    path = Path(key)
    if not path.exists():
        raise InputError(f"--cluster {key}: neither a preset ({', '.join(PRESETS)}) nor an existing file")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise InputError(f"{path}: cannot parse cluster file ({str(e).splitlines()[0]})") from e
    return cluster_from_dict(data, source=str(path))
