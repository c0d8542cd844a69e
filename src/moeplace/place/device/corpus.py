"""A corpus of op graphs to pre-train a device-placement policy on: the built-in model families
swept over sizes, depths and widths (configs drawn by a seeded generator, traced on the meta
device, so nothing is allocated), plus any `module:attr` model the user names. Every graph is
tagged with its family, so a family can be held out (leave-one-family-out).

A corpus spec is a comma list of `builtin` (every family), `builtin:N` (N configs per family,
default 4), a family name (`rnnlm`, `nmt`, `inception`, `transformer`, `moe_lstm`, optionally
`:N`), or `module:attr` (a callable returning (nn.Module, example inputs); family "user").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from moeplace.errors import InputError
from moeplace.place.device.graph import OpGraph


def _rnnlm(rng: np.random.Generator) -> dict[str, Any]:
    return {"hidden": int(rng.choice([256, 512, 1024, 2048])), "layers": int(rng.integers(1, 5)),
            "steps": int(rng.choice([4, 6, 8, 10])), "vocab": int(rng.choice([4000, 16000, 32000]))}


def _nmt(rng: np.random.Generator) -> dict[str, Any]:
    return {"hidden": int(rng.choice([256, 512, 1024])), "layers": int(rng.choice([2, 3, 4, 6])),
            "steps": int(rng.choice([4, 6, 8])), "vocab": int(rng.choice([4000, 16000, 32000]))}


def _inception(rng: np.random.Generator) -> dict[str, Any]:
    return {"width": int(rng.choice([16, 32, 64])), "blocks": int(rng.integers(3, 10)),
            "classes": int(rng.choice([100, 1000])), "resolution": int(rng.choice([96, 149, 224]))}


def _transformer(rng: np.random.Generator) -> dict[str, Any]:
    d = int(rng.choice([256, 512, 1024, 2048]))
    return {"d": d, "heads": max(1, d // 64), "layers": int(rng.integers(2, 9)),
            "seq": int(rng.choice([64, 128, 256])), "vocab": int(rng.choice([8000, 32000]))}


def _moe_lstm(rng: np.random.Generator) -> dict[str, Any]:
    return {"hidden": int(rng.choice([256, 512, 1024])), "experts": int(rng.choice([4, 8, 16, 32])),
            "expert_hidden": int(rng.choice([512, 1024, 4096])), "k": int(rng.choice([1, 2, 4])),
            "lstm_layers": int(rng.integers(2, 4)), "steps": int(rng.choice([4, 6, 8])),
            "vocab": int(rng.choice([4000, 16000]))}


# family -> (config sampler, batch choices)
FAMILIES: dict[str, tuple[Callable[[np.random.Generator], dict[str, Any]], tuple[int, ...]]] = {
    "rnnlm": (_rnnlm, (16, 32, 64)),
    "nmt": (_nmt, (16, 32, 64)),
    "inception": (_inception, (8, 16, 32)),
    "transformer": (_transformer, (4, 8, 16)),
    "moe_lstm": (_moe_lstm, (16, 32, 64)),
}


def build_family(family: str, config: dict[str, Any], batch: int) -> tuple[torch.nn.Module, tuple]:
    """(module on the meta device, meta example inputs) of one family member."""
    from moeplace.place.device import models

    cfg = dict(config)
    g = torch.Generator().manual_seed(0)

    def tokens(vocab: int, steps: int, n: int) -> tuple:
        return tuple(torch.randint(0, vocab, (batch, steps), generator=g).to("meta") for _ in range(n))

    with torch.device("meta"):
        if family == "rnnlm":
            m = models.RNNLM(**cfg)
            return m, tokens(cfg["vocab"], cfg["steps"], 2)
        if family == "nmt":
            m = models.NMT(**cfg)
            return m, tokens(cfg["vocab"], cfg["steps"], 3)
        if family == "inception":
            res = cfg.pop("resolution")
            m = models.InceptionNet(**cfg)
            return m, (torch.empty(batch, 3, res, res), torch.zeros(batch, dtype=torch.long))
        if family == "transformer":
            m = models.Transformer(**cfg)
            return m, tokens(cfg["vocab"], cfg["seq"], 2)
        if family == "moe_lstm":
            m = models.MoELSTM(**cfg)
            return m, tokens(cfg["vocab"], cfg["steps"], 2)
    raise InputError(f"--corpus: unknown family {family!r} (choose from {', '.join(FAMILIES)})")


@dataclass
class CorpusGraph:
    """One op graph of the corpus, with the family it belongs to and how it was made."""

    name: str
    family: str
    graph: OpGraph
    config: dict[str, Any]


def sample_configs(family: str, n: int, seed: int) -> list[tuple[dict[str, Any], int]]:
    """`n` distinct (config, batch) pairs of a family from a seeded generator."""
    sampler, batches = FAMILIES[family]
    rng = np.random.default_rng([seed, sorted(FAMILIES).index(family)])
    out: list[tuple[dict[str, Any], int]] = []
    for _ in range(50 * n):
        cfg, batch = sampler(rng), int(rng.choice(batches))
        if (cfg, batch) not in out:
            out.append((cfg, batch))
        if len(out) == n:
            break
    return out


def _trace(module: torch.nn.Module, inputs: tuple, name: str, grouping: str | int) -> OpGraph:
    """Trace one model; a model that cannot be traced is an InputError naming it."""
    from moeplace.place.device.trace import trace_graph

    try:
        graph = trace_graph(module, inputs, name=name)
    except InputError:
        raise
    except Exception as e:  # torch.fx / meta-tensor failures: the user's model, not our bug
        raise InputError(f"--corpus {name}: cannot trace ({type(e).__name__}: {str(e).splitlines()[0]})"
                         ) from None
    graph.regroup(grouping)
    return graph


def parse_spec(spec: str) -> list[tuple[str, int | str]]:
    """Spec items as (family, count) or ("user", "module:attr"); InputError on an unknown item."""
    items: list[tuple[str, int | str]] = []
    for raw in (s.strip() for s in spec.split(",")):
        if not raw:
            continue
        head, _, tail = raw.partition(":")
        if head == "builtin" or head in FAMILIES:
            try:
                n = int(tail) if tail else 4
            except ValueError:
                raise InputError(f"--corpus {raw}: the count after ':' must be an integer") from None
            if n < 1:
                raise InputError(f"--corpus {raw}: the count must be >= 1")
            items += [(f, n) for f in FAMILIES] if head == "builtin" else [(head, n)]
        elif tail:
            items.append(("user", raw))
        else:
            raise InputError(f"--corpus {raw}: not a family ({', '.join(FAMILIES)}), builtin[:N] "
                             "or module:attr")
    if not items:
        raise InputError("--corpus: empty")
    return items


def build_corpus(spec: str, seed: int = 0, exclude: tuple[str, ...] = (), grouping: str | int = "module",
                 show_progress: bool = False) -> list[CorpusGraph]:
    """Trace every graph of `spec` (see the module docstring), leaving out the families in `exclude`."""
    from moeplace.cli.place_device import load_model
    from moeplace.utils import progress

    for f in exclude:
        if f not in FAMILIES and f != "user":
            raise InputError(f"--exclude-family {f}: unknown family (choose from {', '.join(FAMILIES)})")
    jobs: list[tuple[str, str, Any]] = []
    for family, what in parse_spec(spec):
        if family in exclude:
            continue
        if family == "user":
            jobs.append(("user", str(what), None))
        else:
            for i, (cfg, batch) in enumerate(sample_configs(family, int(what), seed)):
                jobs.append((family, f"{family}-{i}", (cfg, batch)))
    if not jobs:
        raise InputError("--corpus: nothing left once the excluded families are removed")
    out = []
    bar = progress(total=len(jobs), desc="tracing corpus", unit="graph", disable=not show_progress)
    for family, name, made in jobs:
        if family == "user":
            module, inputs = load_model(name, "full")
            cfg: dict[str, Any] = {"model": name}
        else:
            cfg, batch = made
            module, inputs = build_family(family, cfg, batch)
            cfg = {**cfg, "batch": batch}
        out.append(CorpusGraph(name, family, _trace(module, inputs, name, grouping), cfg))
        bar.update(1)
    bar.close()
    return out
