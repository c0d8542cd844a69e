"""Synthetic chip corpus benchmark: how generated designs compare with a real one (Ariane133) side by side.

Generates `--count` designs (`place chip generate`'s generator, `--seed`) and measures on each, and on
Ariane133 with its reference placement (legalized.plc), the same figures: node and net counts, the
share of 2-pin and of 10+-pin nets, mean pins per net, the Rent exponent of the placement
(quad-tree regions at levels 1-8 holding 2+ blocks on average: cut nets T against blocks G,
least-squares slope of log T on log G over the per-level means; ports count as outside every
region) and the proxy cost of the initial placement. Also the time to generate and write a design.

    OPENBLAS_NUM_THREADS=1 python benchmarks/chip_corpus.py --count 20 --seed 0

The last line is one JSON line with every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from moeplace.data import CHIP_DIR  # noqa: E402
from moeplace.place.chip.corpus import write_design  # noqa: E402
from moeplace.place.chip.cost import ProxyCost  # noqa: E402
from moeplace.place.chip.generate import design_seed, generate_design  # noqa: E402
from moeplace.place.chip.netlist import Netlist, NodeKind, load_netlist  # noqa: E402
from moeplace.place.chip.plc import PlcHeader, load_placement  # noqa: E402
from moeplace.utils import markdown_table, print_json_line  # noqa: E402


def rent_exponent(netlist: Netlist, header: PlcHeader) -> float:
    """Rent exponent of the netlist's placement: slope of log(mean cut nets) on log(mean blocks)
    over quad-tree levels 1-8 whose regions hold 2+ blocks on average (the whole canvas left out)."""
    nl = netlist
    owner = np.where(nl.parent >= 0, nl.parent, np.arange(nl.num_nodes))
    blocks = nl.macros
    sizes = nl.net_sizes()
    net_of_pin = np.repeat(np.arange(nl.num_nets), sizes)
    pin_owner = owner[nl.net_pins]
    is_port = nl.kind[pin_owner] == NodeKind.PORT
    g_mean, t_mean = [], []
    for level in range(1, 9):
        k = 2 ** level
        col = np.minimum((nl.x / header.width * k).astype(int), k - 1)
        row = np.minimum((nl.y / header.height * k).astype(int), k - 1)
        region = np.where(is_port, -1, (row * k + col)[pin_owner])
        g = np.bincount((row * k + col)[blocks], minlength=k * k)
        if g[g > 0].mean() < 2:
            break
        pairs = np.unique(np.stack([net_of_pin, region]), axis=1)
        distinct = np.bincount(pairs[0], minlength=nl.num_nets)
        cut = pairs[:, (pairs[1] >= 0) & (distinct[pairs[0]] > 1)]
        t = np.bincount(cut[1], minlength=k * k)
        occupied = g > 0
        g_mean.append(g[occupied].mean())
        t_mean.append(t[occupied].mean())
    if len(g_mean) < 2:
        return float("nan")
    slope, _ = np.polyfit(np.log(g_mean), np.log(np.maximum(t_mean, 1e-9)), 1)
    return float(slope)


def figures(name: str, netlist: Netlist, header: PlcHeader, gen_s: float | None = None) -> dict:
    """One table row of a design."""
    sizes = netlist.net_sizes()
    terms = ProxyCost(netlist, header).evaluate()
    return {"design": name, "hard": len(netlist.hard_macros), "soft": len(netlist.soft_macros),
            "ports": len(netlist.ports), "nets": netlist.num_nets,
            "pins_per_net": round(float(sizes.mean()), 2), "two_pin": round(float(np.mean(sizes == 2)), 3),
            "ten_plus": round(float(np.mean(sizes >= 10)), 3),
            "rent_p": round(rent_exponent(netlist, header), 3),
            "proxy": round(terms.proxy, 4), "gen_s": None if gen_s is None else round(gen_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    nl = load_netlist(CHIP_DIR / "ariane133" / "netlist.pb.txt.gz")
    header = load_placement(nl, CHIP_DIR / "ariane133" / "legalized.plc")
    ariane = figures("ariane133 (reference)", nl, header)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.count):
            t = time.perf_counter()
            d = generate_design(design_seed(args.seed, i), f"design_{i:04d}")
            write_design(d, Path(tmp) / d.name)
            gen_s = time.perf_counter() - t
            rows.append(figures(d.name, d.netlist, d.header, gen_s))
    keys = ["pins_per_net", "two_pin", "ten_plus", "rent_p", "proxy"]
    median = {k: float(np.median([r[k] for r in rows])) for k in keys + ["gen_s", "hard", "nets"]}
    print(markdown_table([ariane, *rows]))
    print()
    print(markdown_table([{"figure": k, "generated (median)": round(median[k], 3), "ariane133": ariane[k],
                           "ratio": round(median[k] / ariane[k], 2)} for k in keys]))
    print(f"\ngenerate + write: median {median['gen_s']:.2f} s per design ({args.count} designs, "
          f"median {median['hard']:.0f} hard macros, {median['nets']:.0f} nets)")
    print_json_line({"count": args.count, "seed": args.seed, "ariane133": ariane, "designs": rows,
                     "median": median, "ratio": {k: median[k] / ariane[k] for k in keys}})


if __name__ == "__main__":
    main()
