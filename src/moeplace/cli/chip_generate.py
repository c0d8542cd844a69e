"""`moeplace place chip generate`: a corpus of seeded synthetic designs in Circuit Training's format.

    moeplace place chip generate --count 100 --out corpus/ --seed 0 --min-macros 20 --max-macros 300

Writes one folder per design (netlist.pb.txt, initial.plc, with --png placement.png) and corpus.json
(names, macro counts, canvas, grid, seeds); prints a table of the designs (a summary above 20).
"""

from __future__ import annotations

import argparse


def register(actions: argparse._SubParsersAction) -> None:
    """Register `place chip generate`."""
    p = actions.add_parser("generate", help="write a corpus of synthetic designs for pre-training",
                           description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, required=True, help="number of designs")
    p.add_argument("--out", required=True, help="folder to write the corpus to (created)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--min-macros", type=int, default=20, help="fewest hard macros per design (default 20)")
    p.add_argument("--max-macros", type=int, default=300, help="most hard macros per design (default 300)")
    p.add_argument("--png", action="store_true", help="also draw each design's initial placement")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder that is not a corpus (its other files are kept)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.set_defaults(func=run)


def _summary(designs: list[dict]) -> list[dict]:
    """Min / median / max of the per-design figures (the table for large corpora)."""
    import numpy as np

    rows = []
    for key in ("hard_macros", "soft_macros", "ports", "nets", "hard_utilization", "soft_utilization"):
        v = np.array([d[key] for d in designs], dtype=float)
        rows.append({"figure": key, "min": round(float(v.min()), 4), "median": round(float(np.median(v)), 4),
                     "max": round(float(v.max()), 4)})
    return rows


def run(args: argparse.Namespace) -> int:
    """Generate the corpus and print what was written."""
    from moeplace.place.chip.corpus import INDEX, generate_corpus
    from moeplace.utils import markdown_table, print_json_line

    index = generate_corpus(args.out, args.count, seed=args.seed, min_macros=args.min_macros,
                            max_macros=args.max_macros, png=args.png, overwrite=args.overwrite)
    designs = index["designs"]
    if len(designs) <= 20:
        rows = [{"design": d["name"], "hard": d["hard_macros"], "soft": d["soft_macros"], "ports": d["ports"],
                 "nets": d["nets"], "canvas": f"{d['canvas'][0]:.0f} x {d['canvas'][1]:.0f}",
                 "grid": f"{d['grid'][0]} x {d['grid'][1]}", "hard_util": d["hard_utilization"],
                 "soft_util": d["soft_utilization"]} for d in designs]
    else:
        rows = _summary(designs)
    print(markdown_table(rows))
    n = len(designs)
    print(f"wrote {n} design{'s' if n != 1 else ''} to {args.out} (index {INDEX})")
    if args.json:
        print_json_line({"count": len(designs), "out": args.out, "seed": args.seed,
                         "hard_macros": [d["hard_macros"] for d in designs],
                         "summary": {r["figure"]: r for r in _summary(designs)}})
    return 0
