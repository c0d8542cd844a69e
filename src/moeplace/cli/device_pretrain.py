"""`moeplace place device pretrain`: pre-train the transfer policy over a corpus of graphs x clusters.

    moeplace place device pretrain --corpus builtin:4 --clusters k80x4,a100x8,hetero --budget 20m \\
        --out runs/device-policy

Writes policy.safetensors (+ .json) for `place device --method rl --policy DIR`, the trainer's
state for `--resume`, metrics.jsonl, curve.png (and TensorBoard events when tensorboard is installed).
"""

from __future__ import annotations

import argparse

from moeplace.cli.args import duration, nonneg_int, positive_int


def register(actions: argparse._SubParsersAction) -> None:
    """Register `place device pretrain`."""
    p = actions.add_parser("pretrain", help="pre-train the transfer policy on many graphs and clusters",
                           description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="builtin:4",
                   help="comma list of builtin[:N] (N configs of every family), a family[:N] (rnnlm, nmt, "
                        "inception, transformer, moe_lstm) or module:attr (default builtin:4)")
    p.add_argument("--clusters", default="k80x4,a100x8,hetero",
                   help="comma list of cluster presets or YAML/JSON files (default k80x4,a100x8,hetero)")
    p.add_argument("--budget", type=duration, default=600.0,
                   help="wall time of training, e.g. 90s, 20m (default 10m)")
    p.add_argument("--updates", type=positive_int, default=None,
                   help="stop after this many updates in all (reproducible for a seed; --budget still caps)")
    p.add_argument("--exclude-family", default="", help="comma list of families to leave out of the corpus")
    p.add_argument("--grouping", default="module", help="co-location groups: module, layer, op, or a depth")
    p.add_argument("--hidden", type=positive_int, default=64, help="policy width (default 64)")
    p.add_argument("--rounds", type=positive_int, default=3, help="message-passing rounds (default 3)")
    p.add_argument("--save-every", type=positive_int, default=50, help="checkpoint every N updates")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Trace the corpus, build the pairs, train, print a summary."""
    import torch

    from moeplace.place.device.cluster import load_cluster
    from moeplace.place.device.corpus import build_corpus
    from moeplace.place.device.pretrain import RUN_FILES, PretrainSettings, make_pairs, pretrain
    from moeplace.runs import claim_run_dir
    from moeplace.utils import print_json_line, seed_everything

    seed_everything(args.seed)
    torch.set_num_threads(1)
    budget_s = args.budget
    out = claim_run_dir(args.out, RUN_FILES, resume=args.resume, overwrite=args.overwrite)
    exclude = tuple(f.strip() for f in args.exclude_family.split(",") if f.strip())
    cluster_names = [c.strip() for c in args.clusters.split(",") if c.strip()]
    clusters = {c: load_cluster(c) for c in cluster_names}
    grouping = int(args.grouping) if args.grouping.isdigit() else args.grouping
    corpus = build_corpus(args.corpus, args.seed, exclude, grouping, show_progress=True)
    pairs = make_pairs(corpus, clusters)
    settings = PretrainSettings(args.corpus, cluster_names, list(exclude), args.seed, args.hidden,
                                args.rounds)
    summary = pretrain(pairs, settings, out, budget_s=budget_s, max_updates=args.updates, resume=args.resume,
                       save_every=args.save_every)
    families = sorted({g.family for g in corpus})
    if args.json:
        print_json_line({**summary, "graphs": len(corpus), "families": families, "out": str(out)})
    else:
        print(f"{len(corpus)} graphs ({', '.join(families)}) x {len(clusters)} clusters = {len(pairs)} "
              f"pairs; {summary['updates']} updates in {summary['seconds']:.0f} s; step time / best "
              f"heuristic over the last 50 updates: {summary['last_mean_ratio']:.3f} (batch mean)")
        print(f"policy -> {out / 'policy.safetensors'}; curve -> {out / 'curve.png'}")
    return 130 if summary["interrupted"] else 0
