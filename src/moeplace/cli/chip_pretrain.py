"""`moeplace place chip pretrain`: pre-train one chip placement policy with PPO over a corpus of designs.

    moeplace place chip pretrain --corpus corpus/ --budget 2h --out runs/pretrain --seed 0

The corpus folders (`place chip generate` output or single design folders) join the shipped Circuit
Training samples and ibm01 (never Ariane133, the held-out design). Writes into --out: policy.safetensors
(+ .json: what `place chip --method rl --policy DIR` loads), checkpoint.safetensors (the full state,
for --resume), metrics.jsonl (one line per update), learning_curve.png and, when TensorBoard is
installed, TensorBoard scalars in tb/. Ctrl-C stops after the last finished update; --resume continues.
--collector process|ray --workers W rolls out each update's design in W worker processes or Ray actors.
"""

from __future__ import annotations

import argparse
import functools
import os
from typing import TYPE_CHECKING

from moeplace.cli.args import duration, nonneg_float, nonneg_int, positive_int, share

if TYPE_CHECKING:
    from moeplace.place.chip.pretrain import Pretrainer


def register(actions: argparse._SubParsersAction) -> None:
    """Register `place chip pretrain`."""
    p = actions.add_parser("pretrain", help="pre-train a placement policy over a corpus of designs",
                           description=__doc__.splitlines()[0])
    p.add_argument("--corpus", action="append", default=[], metavar="DIR",
                   help="corpus or design folder (repeatable); the shipped samples and ibm01 always join")
    p.add_argument("--no-builtin", action="store_true", help="leave out the shipped samples and ibm01")
    p.add_argument("--budget", type=duration, default=7200.0,
                   help="total training time, e.g. 90s, 30m, 2h (default 2h)")
    p.add_argument("--updates", type=positive_int, default=None,
                   help="stop after this many PPO updates in total (default: only the budget)")
    p.add_argument("--out", required=True, help="run folder (policy, checkpoint, metrics, curve)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--envs", type=positive_int, default=16,
                   help="episodes per rollout per collector worker (default 16)")
    p.add_argument("--collector", choices=["local", "process", "ray"], default="local",
                   help="where rollouts run: this process (default), worker processes, or Ray actors "
                        "(needs moeplace[ray]); each worker rolls out --envs episodes of the update's design")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="with --collector process|ray: workers per update (default 2; an update then "
                        "sees workers x envs episodes)")
    p.add_argument("--hidden", type=positive_int, default=64, help="policy width (default 64)")
    p.add_argument("--channels", type=positive_int, default=8, help="policy conv channels (default 8)")
    p.add_argument("--fd-iterations", type=nonneg_int, default=50,
                   help="force-directed iterations for the soft macros after each episode (default 50)")
    p.add_argument("--soft-start", choices=["center", "input"], default="center",
                   help="where force-directed placement starts the soft macros: the canvas centre (default: "
                        "nothing taken from an input placement) or their input positions")
    p.add_argument("--validation", action="append", default=[], metavar="DIR",
                   help="held-out validation corpus (repeatable; e.g. `place chip generate --seed 2000`): "
                        "policy.safetensors keeps the weights with the best greedy cost on it")
    p.add_argument("--val-every", type=positive_int, default=40,
                   help="with --validation: score the policy every this many updates (default 40)")
    p.add_argument("--edge-prior", type=float, default=0.0,
                   help="the untrained policy's pull towards the canvas edge, logits per cell (default 0)")
    p.add_argument("--lr", type=float, default=None, help="PPO learning rate (default 1e-3)")
    p.add_argument("--risk-quantile", type=share, default=None,
                   help="share of each rollout's episodes risk-seeking PPO trains on (default 0.25)")
    p.add_argument("--ent-coef", type=nonneg_float, default=None,
                   help="PPO's entropy-bonus weight (default 0.01; see docs/chip.md on entropy collapse)")
    p.add_argument("--prior-kl", type=nonneg_float, default=None,
                   help="weight of KL(policy || the untrained prior) in PPO's loss (default 0: none)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.set_defaults(func=run)


def _tensorboard(out) -> object | None:
    """A SummaryWriter into out/tb, or None (with a note) when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("note: TensorBoard scalars skipped (pip install tensorboard to get them)", flush=True)
        return None
    return SummaryWriter(str(out / "tb"))


def run(args: argparse.Namespace) -> int:
    """Load the corpus, train until the budget or --updates, write the run folder, print a summary."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch

    from moeplace.errors import InputError
    from moeplace.place.chip.pretrain import RUN_FILES, STATE_FILE, PretrainConfig, Pretrainer, corpus_named
    from moeplace.runs import claim_run_dir

    budget_s = args.budget
    workers = args.workers if args.workers is not None else (1 if args.collector == "local" else 2)
    out = claim_run_dir(args.out, RUN_FILES, resume=args.resume, overwrite=args.overwrite)
    if args.resume and not (out / STATE_FILE).is_file():
        raise InputError(f"--resume: {out / STATE_FILE} not found (nothing to continue)")
    named = corpus_named(args.corpus, not args.no_builtin, args.fd_iterations, args.soft_start)
    # what each collector worker loads the corpus from: paths (absolute: a Ray worker's folder may
    # differ) and settings, never the problems themselves
    problems_fn = functools.partial(corpus_named, [os.path.abspath(d) for d in args.corpus],
                                    not args.no_builtin, args.fd_iterations, args.soft_start)
    validation = None
    if args.validation:
        validation = corpus_named(args.validation, False, args.fd_iterations, args.soft_start)
    config = PretrainConfig(seed=args.seed, n_envs=args.envs, hidden=args.hidden, channels=args.channels,
                            fd_iterations=args.fd_iterations, soft_start=args.soft_start,
                            edge_prior=args.edge_prior, val_every=args.val_every if validation else 0,
                            workers=workers, ppo=_ppo_overrides(args))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors on a busy machine: extra threads only spin
    trainer = Pretrainer(named, out, config, validation, collector=args.collector, problems_fn=problems_fn)
    try:
        return _train(args, trainer, named, budget_s)
    finally:
        trainer.close()
        torch.set_num_threads(threads)


def _ppo_overrides(args: argparse.Namespace) -> dict:
    """The PPO settings given on the command line (the rest are `PPO_DEFAULTS`)."""
    given = {"learning_rate": args.lr, "risk_quantile": args.risk_quantile, "ent_coef": args.ent_coef,
             "ref_kl_coef": args.prior_kl}
    return {k: v for k, v in given.items() if v is not None}


def _train(args: argparse.Namespace, trainer: Pretrainer, named: list, budget_s: float) -> int:
    """Resume if asked, train until the budget or --updates (Ctrl-C: stop after the last update), then
    write the curve and print the time split and summary."""
    from moeplace.place.chip.policy_io import POLICY_FILE
    from moeplace.place.chip.pretrain import CURVE, METRICS, VALIDATION, plot_curve
    from moeplace.runs import append_jsonl, read_jsonl, truncate_jsonl
    from moeplace.utils import markdown_table, print_json_line, progress

    out = trainer.out
    out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        trainer.restore()
        truncate_jsonl(out / METRICS, trainer.updates)
        if trainer.validator is not None:
            truncate_jsonl(out / VALIDATION, trainer.updates)
    print(f"corpus: {len(named)} designs, {min(p.num_nodes for _, p in named)} to "
          f"{max(p.num_nodes for _, p in named)} hard macros; budget {budget_s:g} s"
          + (f", from update {trainer.updates} ({trainer.elapsed_s:.0f} s done)" if args.resume else ""),
          flush=True)
    writer = _tensorboard(out)
    interrupted = False

    def done() -> bool:
        return trainer.elapsed_s >= budget_s or (args.updates is not None and trainer.updates >= args.updates)

    def validate() -> None:
        record = trainer.validate()
        if record is not None:
            append_jsonl(out / VALIDATION, record)
            trainer.save()
            if writer is not None:
                writer.add_scalar("pretrain/validation", record["validation"], record["step"])

    if not args.resume:
        validate()  # the untrained prior: the score a trained policy must beat to replace it
    bar = progress(total=round(budget_s), desc="pretrain", unit="s", initial=min(round(trainer.elapsed_s),
                                                                                round(budget_s)))
    try:
        while not done():
            before = trainer.elapsed_s
            record = trainer.step()
            append_jsonl(out / METRICS, record)  # first: a resume truncates lines past its checkpoint
            trainer.save()
            validate()
            if writer is not None:
                for key in ("mean_cost", "normalised_cost", "policy_loss", "value_loss", "entropy"):
                    if record[key] is not None:
                        writer.add_scalar(f"pretrain/{key}", record[key], record["step"])
                writer.add_scalar(f"design/{record['design']}", record["mean_cost"], record["step"])
            bar.update(min(round(trainer.elapsed_s), round(budget_s)) - min(round(before), round(budget_s)))
            bar.set_postfix(update=trainer.updates, design=record["design"][-12:],
                            norm=f"{record['normalised_cost']:.3f}", refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    records = read_jsonl(out / METRICS)
    plot_curve(records, out / CURVE)
    t = trainer.time
    total = max(sum(t.values()), 1e-9)
    rows = [{"part": k.removesuffix("_s"), "seconds": round(v, 1), "share": round(v / total, 3)}
            for k, v in t.items()]
    print(markdown_table(rows))
    first = [r["normalised_cost"] for r in records[:len(named)]]
    last = [r["normalised_cost"] for r in records[-len(named):]]
    print(f"{trainer.updates} updates, {trainer.episodes} episodes, {trainer.elapsed_s:.0f} s; "
          f"normalised cost first pass {_mean(first):.4f}, last {len(last)} updates {_mean(last):.4f} "
          f"-> {out}"
          + (" (interrupted: continue with --resume)" if interrupted else ""))
    if trainer.validator is not None:
        print(f"validation ({len(trainer.validator.names)} designs, greedy cost / the untrained prior's): "
              f"best {trainer.val_best:.4f} at update {trainer.val_best_update} -> {out / POLICY_FILE}")
    if args.json:
        print_json_line({"updates": trainer.updates, "episodes": trainer.episodes,
                         "train_s": trainer.elapsed_s, "designs": len(named), "time": t,
                         "first_pass_normalised": _mean(first),
                         "last_normalised": _mean(last), "best": trainer.best, "out": str(out),
                         "validation_best": trainer.val_best,
                         "validation_best_update": trainer.val_best_update,
                         "interrupted": interrupted})
    return 130 if interrupted else 0


def _mean(values: list) -> float:
    """Mean of the non-null values (nan if none)."""
    v = [float(x) for x in values if x is not None]
    return sum(v) / len(v) if v else float("nan")
