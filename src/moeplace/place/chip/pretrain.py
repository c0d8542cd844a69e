"""Pre-training one ChipPolicy over a corpus of designs with moeplace.rl's PPO (one trainer for all).

Each update picks one design (a seeded shuffle of the corpus per pass, so every design is visited
once per pass), rolls out `n_envs` whole episodes of it per collector worker (a `CorpusWorker`'s
BatchedChipEnv: in this process, or `workers` of them in worker processes or Ray actors through
moeplace.rl.collectors) and runs one `PPO.update` on them all: a minibatch always holds one design.
Rewards are −proxy divided by the design's scale (the mean cost of its first rollout, all workers
together), so designs of different sizes weigh alike; the logged "normalised cost" is the same
ratio. After every update the run folder gets the full training state (checkpoint.safetensors:
weights, optimizer, generator, counters, scales) and the policy alone (policy.safetensors), both
atomically, and one metrics.jsonl line; a run stopped by Ctrl-C resumes from its last update and
repeats the uninterrupted run exactly (each rollout starts fresh episodes with a sampling generator
seeded from the seed, the update number and the worker).

With validation designs (held out from the corpus: `moeplace.place.chip.validation`), the policy is
scored before training and every `val_every` updates by its greedy cost on them, and
policy.safetensors holds the best-scoring weights so far (the untrained prior included), so a run
that drifts never hands out a worse policy than the one it kept; the checkpoint holds the latest.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moeplace.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from moeplace.errors import CheckpointError, InputError
from moeplace.place.chip.policy_io import POLICY_FILE, arch_of, save_policy
from moeplace.place.chip.problem import ChipProblem
from moeplace.rl.rollout import Rollout, RolloutWorker

STATE_FILE, METRICS, CURVE, TB_DIR = "checkpoint.safetensors", "metrics.jsonl", "learning_curve.png", "tb"
VALIDATION = "validation.jsonl"
RUN_FILES = (STATE_FILE, "checkpoint.json", POLICY_FILE, "policy.json", METRICS, VALIDATION, CURVE, TB_DIR)
STATE_FORMAT = "moeplace-chip-pretrain"


@dataclass
class PretrainConfig:
    """What a pre-training run is (saved in its checkpoint; a resumed run keeps it)."""

    seed: int = 0
    n_envs: int = 16
    hidden: int = 64
    rounds: int = 3
    channels: int = 8
    fd_iterations: int = 50
    soft_start: str = "center"  # FD starts the soft macros at the centre: nothing from an input placement
    edge_prior: float = 0.0  # the untrained policy's edge weight (logit per cell to the canvas edge)
    val_every: int = 0  # score on the validation designs every this many updates (0: never)
    workers: int = 1  # collector workers, each rolling out n_envs episodes per update
    ppo: dict[str, Any] = field(default_factory=dict)


def design_order(seed: int, update: int, count: int) -> int:
    """The design of update `update`: pass `update // count` visits the designs in a seeded shuffle."""
    perm = np.random.default_rng([seed, update // count]).permutation(count)
    return int(perm[update % count])


class CorpusWorker:
    """Rollouts of one corpus design at a time (a collector worker: in this process, a worker process
    or a Ray actor).

    One policy copy has every design registered (design id = corpus index); each design's
    BatchedChipEnv is built on first use. `select(design, update)` picks what the next `collect`
    rolls out; its episodes start fresh and sample from a generator seeded by (seed, update), where
    worker k of a ProcessCollector/RayCollector has seed + k. Rewards come back unscaled.
    """

    def __init__(self, problems: list[ChipProblem], policy: torch.nn.Module, n_envs: int, seed: int) -> None:
        self.problems, self.policy, self._n_envs, self.seed = problems, policy, n_envs, seed
        for p in problems:
            policy.add_design(p)
        self.envs: dict[int, Any] = {}
        self.design, self.update = 0, 0

    @property
    def n_envs(self) -> int:
        """Episodes per rollout."""
        return self._n_envs

    def select(self, design: int, update: int) -> None:
        """Roll out `design` next, for update number `update`."""
        self.design, self.update = design, update

    def call(self, name: str, *args: Any) -> list[Any]:
        """Run method `name` (the rl.collectors call, for the in-process worker)."""
        return [getattr(self, name)(*args)]

    def collect(self, weights: dict[str, torch.Tensor], n_steps: int) -> Rollout:
        """`n_steps` steps of fresh episodes of the selected design."""
        from moeplace.place.chip.batched import BatchedChipEnv

        self.policy.load_state_dict(weights)
        d = self.design
        if d not in self.envs:
            self.envs[d] = BatchedChipEnv(self.problems[d], self._n_envs, design=d)
        seed = int(np.random.SeedSequence([self.seed, self.update]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(seed)
        return RolloutWorker(self.envs[d], self.policy, generator=gen).collect(n_steps)

    def close(self) -> None:
        """Nothing to stop."""


def remote_worker(problems_fn: Callable[[], list[tuple[str, ChipProblem]]], sizes: list[int],
                  arch: tuple[int, int, int], n_envs: int, seed: int) -> CorpusWorker:
    """A CorpusWorker that loads the corpus itself (`problems_fn`, picklable: paths and settings) and
    checks it holds the learner's designs (their hard macros `sizes`), with a ChipPolicy of `arch`
    (hidden, rounds, channels)."""
    from moeplace.place.chip.policy import ChipPolicy

    problems = [p for _, p in problems_fn()]
    if [p.num_nodes for p in problems] != sizes:
        raise RuntimeError("collector worker: its corpus differs from the learner's")
    return CorpusWorker(problems, ChipPolicy(*arch), n_envs, seed)


class CorpusCollector:
    """The learner's side: the selected design's rollout from `source` (a CorpusWorker here, or a
    ProcessCollector/RayCollector of them, side by side), rewards divided by the design's scale (the
    mean cost of its first rollout, all workers together), and the time spent in rollouts."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.scale: dict[int, float] = {}
        self.design, self.update = 0, 0
        self.rollout_s = 0.0

    @property
    def n_envs(self) -> int:
        """Episodes per rollout (all workers)."""
        return int(self.source.n_envs)

    def select(self, design: int, update: int) -> None:
        """Roll out `design` next, for update number `update` (told to every worker)."""
        self.design, self.update = design, update
        self.source.call("select", design, update)

    def collect(self, weights: dict[str, torch.Tensor], n_steps: int) -> Rollout:
        """`n_steps` steps of fresh episodes of the selected design; rewards divided by its scale."""
        start = time.perf_counter()
        rollout = self.source.collect(weights, n_steps)
        d = self.design
        if d not in self.scale:
            costs = [e["cost"] for e in rollout.ends]
            self.scale[d] = float(np.mean(costs)) if costs else 1.0
        rollout.rewards /= self.scale[d]
        self.rollout_s += time.perf_counter() - start
        return rollout

    def close(self) -> None:
        """Stop the workers."""
        self.source.close()


def corpus_problems(designs: list[Any], fd_iterations: int, soft_start: str = "center"
                    ) -> list[tuple[str, ChipProblem]]:
    """(name, ChipProblem for RL) of every corpus design with at least one movable hard macro."""
    out = []
    for d in designs:
        p = ChipProblem(d.netlist, d.header, soft="fd", fd_iterations=fd_iterations, soft_start=soft_start)
        if p.num_nodes > 0:
            out.append((d.name, p))
    return out


def corpus_named(dirs: list[str], builtin: bool, fd_iterations: int, soft_start: str = "center"
                 ) -> list[tuple[str, ChipProblem]]:
    """Load the corpus folders (+ the shipped designs with `builtin`) as `corpus_problems`: what the
    command trains on and what a collector worker rebuilds from these picklable arguments."""
    from moeplace.place.chip.corpus import load_corpus

    return corpus_problems(load_corpus(dirs, builtin=builtin), fd_iterations, soft_start)


class Pretrainer:
    """A pre-training run in `out`: policy, PPO, collector and counters, saved and resumed whole."""

    def __init__(self, named: list[tuple[str, ChipProblem]], out: str | Path, config: PretrainConfig,
                 validation: list[tuple[str, ChipProblem]] | None = None, collector: str = "local",
                 problems_fn: Callable[[], list[tuple[str, ChipProblem]]] | None = None) -> None:
        """`collector`: where rollouts run (rl.collectors kinds: local, process, ray); process and ray
        start `config.workers` workers that rebuild the corpus with `problems_fn()` (picklable)."""
        from moeplace.place.chip.agent import PPO_DEFAULTS
        from moeplace.place.chip.policy import ChipPolicy, set_priors
        from moeplace.place.chip.validation import Validator
        from moeplace.rl import PPO

        if not named:
            raise InputError("--corpus: no design with a movable hard macro to train on")
        if config.val_every and not validation:
            raise InputError("--validation: no design with a movable hard macro to validate on")
        if config.workers < 1:
            raise InputError(f"--workers: must be >= 1, got {config.workers}")
        if collector == "local" and config.workers != 1:
            raise InputError("--workers: more than one worker needs --collector process or ray")
        if collector != "local" and problems_fn is None:
            raise ValueError("Pretrainer: a process or ray collector needs problems_fn")
        self.names = [n for n, _ in named]
        self.problems = [p for _, p in named]
        self.out, self.config = Path(out), config
        torch.manual_seed(config.seed)
        self.policy = ChipPolicy(config.hidden, config.rounds, config.channels)
        set_priors(self.policy, edge=config.edge_prior)
        # the in-process worker's copy, built for every collector so the torch RNG runs alike
        roll_policy = ChipPolicy(config.hidden, config.rounds, config.channels)
        for p in self.problems:
            self.policy.add_design(p)
        hp = dict(PPO_DEFAULTS, seed=config.seed)
        hp.update(config.ppo)
        self.algo = PPO(self.policy, None, **hp)
        if self.algo.config.ref_kl_coef > 0:  # the reference: the untrained prior, frozen
            self.algo.reference = copy.deepcopy(self.policy).requires_grad_(False)
        self.updates, self.episodes, self.elapsed_s = 0, 0, 0.0
        self.time = {"rollout_s": 0.0, "update_s": 0.0, "checkpoint_s": 0.0}
        self.best: dict[str, float] = {}
        val_policy = ChipPolicy(config.hidden, config.rounds, config.channels)  # what validation scores
        self.validator = Validator(validation, val_policy) if config.val_every and validation else None
        self.val_best: float | None = None  # best validation score so far, and its update
        self.val_best_update = -1
        # last: nothing below can fail and leave worker processes or Ray actors behind
        if collector == "local":
            source: Any = CorpusWorker(self.problems, roll_policy, config.n_envs, config.seed)
        else:
            from moeplace.rl.collectors import make_collector

            arch = (config.hidden, config.rounds, config.channels)
            sizes = [p.num_nodes for p in self.problems]
            local_fn = functools.partial(remote_worker, problems_fn, sizes, arch, config.n_envs)
            source = make_collector(collector, local_fn, config.workers, config.seed)
        self.collector = CorpusCollector(source)

    # --- state ----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs, as checkpoint state."""
        return {"format": STATE_FORMAT, "version": 1, "config": asdict(self.config), "designs": self.names,
                "arch": arch_of(self.policy), "policy": dict(self.policy.state_dict()),
                "optimizer": self.algo.optimizer.state_dict(), "generator": self.algo.generator.get_state(),
                "num_timesteps": self.algo.num_timesteps, "updates": self.updates, "episodes": self.episodes,
                "elapsed_s": self.elapsed_s, "time": dict(self.time),
                "scale": [self.collector.scale.get(i) for i in range(len(self.names))],
                "best": dict(self.best), "recent": [list(e) for e in self.algo.episodes[-20:]],
                "validation": {"reference": self.validator.reference if self.validator else None,
                               "best": self.val_best, "best_update": self.val_best_update}}

    def save(self) -> None:
        """Write checkpoint.safetensors and, without validation, policy.safetensors (atomically); with
        validation, policy.safetensors is the best-scoring weights, written by `validate`."""
        start = time.perf_counter()
        save_checkpoint(self.out / STATE_FILE, self.state())
        if self.validator is None:
            self.save_policy()
        self.time["checkpoint_s"] += time.perf_counter() - start

    def save_policy(self) -> None:
        """The current weights as the run's policy.safetensors (what `--policy DIR` loads)."""
        val = {} if self.validator is None else {"validation_score": self.val_best,
                                                 "validation_designs": len(self.validator.names)}
        save_policy(self.out, self.policy, {"by": "moeplace place chip pretrain", "updates": self.updates,
                                            "episodes": self.episodes, "train_s": round(self.elapsed_s, 1),
                                            "designs": len(self.names), "seed": self.config.seed,
                                            "fd_iterations": self.config.fd_iterations,
                                            "soft_start": self.config.soft_start,
                                            "edge_prior": self.config.edge_prior, **val,
                                            **{k: round(v, 1) for k, v in self.time.items()}})

    def validate(self) -> dict[str, Any] | None:
        """Score the current weights on the validation designs when due (update 0, then every
        `val_every`); a new best is written as policy.safetensors. Returns the record, or None."""
        if self.validator is None or self.updates % self.config.val_every:
            return None
        start = time.perf_counter()
        self.validator.policy.load_state_dict(self.policy.state_dict())
        score, costs = self.validator.score()
        improved = self.val_best is None or score < self.val_best
        if improved:
            self.val_best, self.val_best_update = score, self.updates
            self.save_policy()
        spent = time.perf_counter() - start
        self.time["validation_s"] = self.time.get("validation_s", 0.0) + spent
        self.elapsed_s += spent  # validation is part of the run's wall time (and its budget)
        return {"step": self.updates, "validation": score, "validation_costs": costs, "best": improved}

    def restore(self) -> None:
        """Load the run folder's checkpoint (the same corpus and settings, or CheckpointError/InputError)."""
        file = self.out / STATE_FILE
        state = load_checkpoint(file)
        if state.get("format") != STATE_FORMAT or state.get("version") != 1:
            raise CheckpointError(f"{file}: not a chip pre-training checkpoint of this version")
        if state.get("designs") != self.names:
            raise InputError(f"--corpus: the designs differ from those of the run in {self.out} "
                             f"({len(state.get('designs') or [])} there, {len(self.names)} given)")
        saved = state.get("config")
        if isinstance(saved, dict):
            saved = {"workers": 1, **saved}  # runs from before `workers` had one
        if saved != asdict(self.config):
            raise InputError(f"--resume: the run in {self.out} was started with other settings "
                             f"({state.get('config')}); resume it with the same ones")
        try:
            load_model_state(self.policy, state["policy"], source=str(file))
            self.algo.optimizer.load_state_dict(state["optimizer"])
            self.algo.generator.set_state(state["generator"])
            self.algo.num_timesteps = int(state["num_timesteps"])
            self.updates, self.episodes = int(state["updates"]), int(state["episodes"])
            self.elapsed_s = float(state["elapsed_s"])
            self.time = {k: float(v) for k, v in state["time"].items()}
            self.collector.scale = {i: float(s) for i, s in enumerate(state["scale"]) if s is not None}
            self.best = {str(k): float(v) for k, v in state["best"].items()}
            self.algo.episodes = [(int(a), float(b), int(c)) for a, b, c in state["recent"]]
            val = state["validation"]
            if self.validator is not None and val["reference"] is not None:
                self.validator.reference = [float(r) for r in val["reference"]]
            self.val_best = None if val["best"] is None else float(val["best"])
            self.val_best_update = int(val["best_update"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{file}: checkpoint does not fit this run ({type(e).__name__}: {e})") \
                from None

    def close(self) -> None:
        """Stop the collector's workers (worker processes or Ray actors)."""
        self.collector.close()

    # --- training -------------------------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        """One update on the next design of the order; returns its metrics record."""
        start = time.perf_counter()
        d = design_order(self.config.seed, self.updates, len(self.problems))
        problem = self.problems[d]
        self.collector.select(d, self.updates)
        before = self.collector.rollout_s
        self.algo.config.n_steps = problem.num_nodes  # one rollout = one episode per env
        self.algo.learn(self.collector.n_envs * problem.num_nodes, progress_bar=False,
                        collector=self.collector)
        rollout_s = self.collector.rollout_s - before
        wall = time.perf_counter() - start
        self.time["rollout_s"] += rollout_s
        self.time["update_s"] += wall - rollout_s
        costs = [e["cost"] for e in self.algo.last_rollout.ends]
        name = self.names[d]
        if costs:
            self.best[name] = min(self.best.get(name, float("inf")), min(costs))
        self.updates += 1
        self.episodes += len(costs)
        self.elapsed_s += wall
        stats = self.algo.history[-1]
        mean = float(np.mean(costs)) if costs else float("nan")
        return {"step": self.updates, "design": name, "hard_macros": problem.num_nodes,
                "episodes": self.episodes, "elapsed_s": round(self.elapsed_s, 3),
                "mean_cost": mean, "min_cost": min(costs) if costs else None,
                "normalised_cost": mean / self.collector.scale[d], "rollout_s": round(rollout_s, 3),
                "update_s": round(wall - rollout_s, 3),
                **{k: stats[k] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
                                        "ref_kl")}}


def plot_curve(records: list[dict[str, Any]], path: str | Path, window: int = 20) -> None:
    """Normalised cost (mean episode cost / the design's first-rollout mean) against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moeplace.utils import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    t = np.array([r["elapsed_s"] for r in records], dtype=float) / 60
    y = np.array([r["normalised_cost"] if r["normalised_cost"] is not None else np.nan for r in records])
    if len(y):
        ax.plot(t, y, ".", ms=3, alpha=0.4, color="tab:blue", label="one update (one design)")
        w = max(1, min(window, len(y)))
        ax.plot(t[w - 1:], np.convolve(np.nan_to_num(y, nan=1.0), np.ones(w) / w, mode="valid"),
                color="tab:blue", lw=2, label=f"mean of last {w}")
    ax.axhline(1.0, color="gray", ls="--", lw=1, label="first visit of each design")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("normalised proxy cost (lower is better)")
    ax.set_title("chip policy pre-training")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, path)
