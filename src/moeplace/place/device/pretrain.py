"""Pre-train the transfer policy over a corpus of op graphs x clusters with SequenceREINFORCE.

Each update draws one (graph, cluster) pair (from a generator seeded by the run's seed and the
update's index, so a resumed run draws the same pairs), samples a batch of placements, and takes
the trainer's step (reward -sqrt(step time), advantages normalised within the batch, so graphs
of very different step times weigh the same). The run folder holds `policy.safetensors/.json`
(the policy alone, what `--policy` reads), `state.safetensors/.json` (trainer, optimizer, RNG:
what `--resume` continues from), `run.json` (the settings), `metrics.jsonl` (one line per update)
and `curve.png`; TensorBoard event files too when `tensorboard` is installed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moeplace.errors import InputError
from moeplace.place.device.corpus import CorpusGraph
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.transfer import DeviceContext, TransferPlacer, context_of, save_policy
from moeplace.rl.reinforce import SequenceREINFORCE

RUN_FILES = ("policy.safetensors", "policy.json", "state.safetensors", "state.json", "run.json",
             "metrics.jsonl", "curve.png", "events.out.tfevents.*")
# the trainer's settings for pre-training: a small entropy bonus, no self-imitation (its buffer is
# per problem and would not survive a resume)
PRETRAIN_RL = {"learning_rate": 3e-4, "batch": 32, "reward": "neg_sqrt", "ent_coef": 0.03,
               "ent_coef_end": 1e-2, "epochs": 1, "sil_coef": 0.0}


@dataclass
class Pair:
    """One training problem: a corpus graph on a cluster, with its cheapest heuristic as reference."""

    name: str
    family: str
    cluster: str
    problem: DevicePlacementProblem
    ctx: DeviceContext
    reference: float  # step time of the best of the single-device and expert placements


@dataclass
class PretrainSettings:
    """What a run was started with (kept in run.json; a resume must match)."""

    corpus: str
    clusters: list[str]
    exclude: list[str] = field(default_factory=list)
    seed: int = 0
    hidden: int = 64
    rounds: int = 3


def make_pairs(corpus: list[CorpusGraph], clusters: dict[str, Any]) -> list[Pair]:
    """Every graph x cluster pair, with its context and reference step time."""
    from moeplace.place.device.baselines import HEURISTICS

    pairs = []
    for g in corpus:
        for cname, cluster in clusters.items():
            problem = DevicePlacementProblem(g.graph, cluster)
            ref = min(problem.cost(HEURISTICS[h](problem)) for h in ("single", "expert"))
            pairs.append(Pair(f"{g.name}@{cname}", g.family, cname, problem, context_of(problem), ref))
    return pairs


def draw(seed: int, update: int, n: int) -> int:
    """The pair trained at `update` (a pure function of seed and update: resumes draw the same)."""
    return int(np.random.default_rng([seed, update]).integers(n))


def _tensorboard(out: Path) -> Any:
    """A SummaryWriter when tensorboard is installed, else None (no new dependency)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out))


def plot_curve(records: list[dict[str, Any]], path: Path) -> None:
    """PNG of batch-mean and best step time / reference per update (running mean over 20 updates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moeplace.utils import save_figure

    steps = np.array([r["step"] for r in records])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("mean_ratio", "batch mean"), ("best_ratio", "batch best")):
        y = np.array([r[key] for r in records], dtype=float)
        k = min(20, len(y))
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="best heuristic")
    ax.set_xlabel("update")
    ax.set_ylabel("step time / best heuristic")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("device policy pre-training")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def pretrain(pairs: list[Pair], settings: PretrainSettings, out: Path, *, budget_s: float | None,
             max_updates: int | None, resume: bool = False, save_every: int = 50,
             show_progress: bool = True) -> dict[str, Any]:
    """Train until the time budget or the update count runs out (Ctrl-C saves and stops). Both count
    the whole run: a resumed run continues the update count, the clock and the entropy schedule."""
    from moeplace.runs import append_jsonl, read_jsonl, truncate_jsonl
    from moeplace.utils import atomic_write_text, json_dumps, progress

    if budget_s is None and max_updates is None:
        raise ValueError("give budget_s or max_updates")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    policy = TransferPlacer(settings.hidden, settings.rounds)
    run_json = out / "run.json"
    if resume:
        if not (out / "state.safetensors").exists():
            raise InputError(f"--resume: {out} holds no run to continue (no state.safetensors)")
        saved = json.loads(run_json.read_text()) if run_json.exists() else {}
        mine = json.loads(json_dumps(settings.__dict__))
        if {k: saved.get(k) for k in mine} != mine:
            raise InputError(f"--resume: {out} was started with other settings ({saved}); "
                             "give the same --corpus, --clusters, --exclude-family and --seed")
        algo = SequenceREINFORCE.load(out / "state.safetensors", policy)
    else:
        algo = SequenceREINFORCE(policy, **{**PRETRAIN_RL, "seed": settings.seed})
        atomic_write_text(run_json, json_dumps(settings.__dict__, indent=1) + "\n")
    batch = algo.config.batch
    update = algo.num_timesteps // batch
    metrics = out / "metrics.jsonl"
    truncate_jsonl(metrics, update)
    writer = _tensorboard(out)
    bar = progress(total=max_updates, desc="device pretrain", unit="upd", disable=not show_progress)
    bar.update(update)
    done = read_jsonl(metrics)  # a resumed run's budget counts the time its earlier part trained
    start = time.perf_counter() - (float(done[-1].get("seconds", 0.0)) if done else 0.0)
    end_update = max_updates if max_updates is not None else None

    def checkpoint() -> None:
        algo.save(out / "state.safetensors")
        save_policy(out / "policy.safetensors", policy,
                    {"updates": update, "corpus": settings.corpus, "clusters": settings.clusters,
                     "exclude": settings.exclude, "seed": settings.seed})
        recs = read_jsonl(metrics)
        if recs:
            plot_curve(recs, out / "curve.png")

    interrupted = False
    try:
        while end_update is None or update < end_update:
            elapsed = time.perf_counter() - start
            if budget_s is not None and elapsed >= budget_s:
                break
            frac = update / end_update if end_update else elapsed / budget_s
            pair = pairs[draw(settings.seed, update, len(pairs))]
            pair.ctx.cache = {}  # scoring reuses the sampler's step features; kept for this update only
            b = algo.step(pair.ctx, pair.problem.cost, frac)
            pair.ctx.cache = None
            update += 1
            rec = {"step": update, "pair": pair.name, "family": pair.family, "cluster": pair.cluster,
                   "mean_ratio": float(b.costs.mean() / pair.reference),
                   "best_ratio": float(b.costs.min() / pair.reference),
                   "entropy_coef": algo.history[-1]["entropy_coef"], "loss": algo.history[-1]["loss"],
                   "seconds": round(time.perf_counter() - start, 3)}
            append_jsonl(metrics, rec)
            if writer is not None:
                for k in ("mean_ratio", "best_ratio", "loss"):
                    writer.add_scalar(f"pretrain/{k}", rec[k], update)
            bar.update(1)
            bar.set_postfix(ratio=f"{rec['mean_ratio']:.3f}")
            if update % save_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    checkpoint()
    recs = read_jsonl(metrics)
    tail = recs[-min(len(recs), 50):]
    return {"updates": update, "interrupted": interrupted, "pairs": len(pairs),
            "last_mean_ratio": float(np.mean([r["mean_ratio"] for r in tail])) if tail else None,
            "seconds": time.perf_counter() - start}
