"""Settings of the device RL methods (`rl`, `rl+ls`, `ppo`): named presets or a JSON file.

A config file is a JSON object: run-level keys (`iterations`, `imitation`, `restarts`, ...), a
`reinforce` object (`moeplace.rl.SequenceREINFORCEConfig` fields: `batch`, `learning_rate`,
`ent_coef`, ...) and a `local_search` object (`moeplace.place.local_search.LocalSearchConfig`
fields, used by `rl+ls` only); `preset` names the preset the file's keys override (default:
"default"). Unknown keys and out-of-range values are InputErrors naming the source.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moeplace.errors import InputError
from moeplace.place.local_search import LocalSearchConfig
from moeplace.rl.reinforce import SequenceREINFORCEConfig


@dataclass
class RLConfig:
    """How the seq2seq RL methods run: budget in iterations, restarts, imitation, and the trainer's
    and local search's settings."""

    iterations: int | None = None
    """REINFORCE iterations in all (same seed, same result); None: the wall-time budget decides."""
    imitation: bool = False
    """Start from the best heuristic: rl/rl+ls fit the policy to it first, ppo keeps it as a candidate."""
    imitation_steps: int = 500
    """At most this many cross-entropy steps of that fit (until the placement has probability 1/2)."""
    restarts: int = 1
    """Independent runs (seeds seed, seed+1, ...) sharing the iterations (and the time); best kept."""
    imitate_runs: int | None = None
    """With imitation, only the first this many runs imitate (None: all)."""
    hidden: int = 64
    """Width of the seq2seq policy's embeddings and LSTMs."""
    reinforce: SequenceREINFORCEConfig = field(default_factory=SequenceREINFORCEConfig)
    local_search: LocalSearchConfig = field(default_factory=LocalSearchConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the `reinforce` seed is set per run, so it is left out)."""
        d = dataclasses.asdict(self)
        d["reinforce"].pop("seed")
        d["local_search"]["anneal_scales"] = list(d["local_search"]["anneal_scales"])
        return d


PRESETS: dict[str, dict[str, Any]] = {
    # the CLI's defaults: one run from scratch; rl+ls adds the in-loop descent and the final stage
    "default": {},
    # the 2017 paper's REINFORCE: no self-imitation (and no in-loop descent under rl+ls)
    "paper": {"reinforce": {"sil_coef": 0.0}, "local_search": {"in_loop_calls": 0}},
    # benchmarks/device_placement.py: 1,000 iterations over two runs, the first imitating the best heuristic
    "benchmark": {"iterations": 1000, "restarts": 2, "imitation": True, "imitate_runs": 1},
}


def _section(cls: type, data: Any, source: str, where: str, skip: tuple[str, ...] = ()) -> Any:
    """A dataclass `cls` from a JSON object, naming `source` and the section in every error."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: {where or 'config'} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{source}: unknown key {where + '.' if where else ''}{unknown[0]} "
                         f"(known: {', '.join(sorted(names))})")
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise InputError(f"{source}: {where or 'config'}: {e}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over`'s keys, one level of nested objects merged."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_dict(data: dict[str, Any], source: str = "config") -> RLConfig:
    """An RLConfig from a dict in the config-file format (keys override the named `preset`)."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: must be a JSON object")
    data = dict(data)
    preset = data.pop("preset", "default")
    if preset not in PRESETS:
        raise InputError(f"{source}: unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    data = _merge(PRESETS[preset], data)
    reinforce = _section(SequenceREINFORCEConfig, data.pop("reinforce", {}), source, "reinforce", ("seed",))
    local = _section(LocalSearchConfig, data.pop("local_search", {}), source, "local_search")
    cfg = _section(RLConfig, {**data, "reinforce": reinforce, "local_search": local}, source, "")
    validate(cfg, source)
    return cfg


def load_rl_config(spec: str | None, source: str = "--rl-config") -> RLConfig:
    """A preset name, or a JSON config file; None gives the default preset."""
    if spec is None or spec in PRESETS:
        return config_from_dict({"preset": spec or "default"}, f"{source} {spec or 'default'}")
    try:
        data = json.loads(Path(spec).read_text())
    except OSError as e:
        raise InputError(f"{source} {spec}: cannot read ({e.strerror or e}); give a file or a preset "
                         f"({', '.join(PRESETS)})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{source} {spec}: not JSON ({e})") from None
    return config_from_dict(data, f"{source} {spec}")


def _check(ok: bool, source: str, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise InputError(f"{source}: {name} must be {rule}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(cfg: RLConfig, source: str = "config") -> None:
    """InputError naming the first setting out of range."""
    r, ls = cfg.reinforce, cfg.local_search
    _check(cfg.iterations is None or (_is_int(cfg.iterations) and cfg.iterations >= 1), source,
           "iterations", "an integer >= 1 or null", cfg.iterations)
    _check(isinstance(cfg.imitation, bool), source, "imitation", "true or false", cfg.imitation)
    for name, low in (("imitation_steps", 0), ("restarts", 1), ("hidden", 1)):
        v = getattr(cfg, name)
        _check(_is_int(v) and v >= low, source, name, f"an integer >= {low}", v)
    _check(cfg.imitate_runs is None or (_is_int(cfg.imitate_runs) and cfg.imitate_runs >= 0), source,
           "imitate_runs", "an integer >= 0 or null", cfg.imitate_runs)
    for name, low in (("batch", 1), ("epochs", 1), ("sil_size", 0)):
        v = getattr(r, name)
        _check(_is_int(v) and v >= low, source, f"reinforce.{name}", f"an integer >= {low}", v)
    for name in ("learning_rate", "adam_eps", "clip_coef", "ent_coef"):
        v = getattr(r, name)
        _check(_is_num(v) and (v > 0 or (name == "ent_coef" and v == 0)), source, f"reinforce.{name}",
               "a positive number" + (" or 0" if name == "ent_coef" else ""), v)
    _check(_is_num(r.sil_coef) and r.sil_coef >= 0, source, "reinforce.sil_coef", "a number >= 0", r.sil_coef)
    _check(r.ent_coef_end is None or (_is_num(r.ent_coef_end) and r.ent_coef_end > 0 and r.ent_coef > 0),
           source, "reinforce.ent_coef_end", "null or a positive number (with ent_coef > 0)", r.ent_coef_end)
    _check(r.max_grad_norm is None or (_is_num(r.max_grad_norm) and r.max_grad_norm > 0), source,
           "reinforce.max_grad_norm", "null or a positive number", r.max_grad_norm)
    _check(r.reward in ("neg_sqrt", "neg"), source, "reinforce.reward", "'neg_sqrt' or 'neg'", r.reward)
    for name in ("calls", "starts", "anneal", "kick_size", "in_loop_calls"):
        v = getattr(ls, name)
        _check(_is_int(v) and v >= 0, source, f"local_search.{name}", "an integer >= 0", v)
    _check(all(s > 0 for s in ls.anneal_scales), source, "local_search.anneal_scales",
           "positive numbers", list(ls.anneal_scales))
    _check(_is_num(ls.share) and 0 <= ls.share < 1, source, "local_search.share", "in [0, 1)", ls.share)
