"""Chip policy files: a ChipPolicy's weights and architecture as safetensors + JSON, and their checks.

A policy file (`policy.safetensors` with its `policy.json` sidecar) holds the format name and
version, the architecture (hidden width, rounds, channels) and the input feature widths it was
trained on, the weights, and a note of how it was trained. Loading refuses, with one CheckpointError
naming the file, anything corrupt, of another format or version, or made for other features.
The package ships one pre-trained policy (`DEFAULT_POLICY`), the default start of `--method rl`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from moeplace.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from moeplace.data import CHIP_DIR
from moeplace.errors import CheckpointError

FORMAT, VERSION = "moeplace-chip-policy", 2  # 2: wire-mask inputs
POLICY_FILE = "policy.safetensors"
DEFAULT_POLICY = CHIP_DIR / "policy" / POLICY_FILE


def policy_path(path: str | os.PathLike[str]) -> Path:
    """The policy file of `path`: the file itself, or `policy.safetensors` inside a folder."""
    p = Path(path)
    return p / POLICY_FILE if p.is_dir() else p


def arch_of(policy: Any) -> dict[str, int]:
    """The architecture and feature widths of a ChipPolicy (what a file must match to load)."""
    from moeplace.place.chip.policy import CELL_DIM, NODE_DIM

    return {"hidden": policy.hidden, "rounds": policy.rounds, "channels": policy.channels,
            "node_dim": NODE_DIM, "cell_dim": CELL_DIM}


def save_policy(path: str | os.PathLike[str], policy: Any, trained: dict[str, Any] | None = None) -> Path:
    """Write a ChipPolicy's weights and architecture (atomically) to `path` (a file or a folder)."""
    state = {"format": FORMAT, "version": VERSION, "arch": arch_of(policy),
             "policy": dict(policy.state_dict()), "trained": trained or {}}
    return save_checkpoint(policy_path(path), state)


def load_policy(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """(ChipPolicy with the file's weights, the file's `trained` note); CheckpointError naming the file
    if it is missing, corrupt, of another format or version, or for other features."""
    from moeplace.place.chip.policy import CELL_DIM, NODE_DIM, ChipPolicy

    file = policy_path(path)
    if not file.is_file():
        raise CheckpointError(f"{file}: policy file not found")
    state = load_checkpoint(file)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a chip policy (format {state.get('format')!r}, want {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{file}: chip policy version {state.get('version')!r}; this moeplace reads "
                              f"version {VERSION} (re-train it with `moeplace place chip pretrain`)")
    arch = state.get("arch")
    if not isinstance(arch, dict):
        raise CheckpointError(f"{file}: chip policy without its architecture")
    want = {"node_dim": NODE_DIM, "cell_dim": CELL_DIM}
    for key, value in want.items():
        if arch.get(key) != value:
            raise CheckpointError(f"{file}: policy made for {key} {arch.get(key)!r}; this moeplace's "
                                  f"features have {key} {value} (incompatible features)")
    try:
        policy = ChipPolicy(hidden=int(arch["hidden"]), rounds=int(arch["rounds"]),
                            channels=int(arch["channels"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: bad policy architecture {arch} ({type(e).__name__})") from None
    load_model_state(policy, state.get("policy"), source=str(file))
    trained = state.get("trained")
    return policy, trained if isinstance(trained, dict) else {}
