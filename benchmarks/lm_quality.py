"""Language-model quality: (1) the default `moeplace lm train`'s whole run vs nanoGPT's CPU recipe;
(2) the paper's trend: val loss falls as experts grow at fixed active compute and tokens (LSTM with the
paper's noisy top-k gating, Transformer with softmax top-k gating; FAMILY_ROUTER); (3) load balance
with those balancing losses at the end of training.

    nice -n 10 .venv/bin/python benchmarks/lm_quality.py                 # all three parts
    nice -n 10 .venv/bin/python benchmarks/lm_quality.py --part anchor   # only figure 1

Part 1 runs the baseline first in this process: our own implementation of nanoGPT's model and its
published CPU recipe (4 layers, 4 heads, 128 dims, context 64, batch 12, 2,000 iterations, lr 1e-3,
dropout 0, 90/10 character split). Then it runs the default `moeplace lm train` exactly as a user
does (the CLI in a subprocess, no model or training flags; its own 155-s training budget, ~165 s
in all) and times the whole run. Both are evaluated with the same protocol: mean cross-entropy
over the whole validation split in non-overlapping windows of each model's context.
The last line of output is one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from moeplace.lm.compare import compare_configs, run_models, table_rows, write_outputs
from moeplace.lm.data import get_batch, load_corpus
from moeplace.lm.presets import nanogpt_cpu
from moeplace.lm.train import evaluate, train
from moeplace.utils import markdown_table, print_json_line


def anchor(corpus, out: Path, seed: int, threads: int) -> dict:
    """Figure 1: nanoGPT's recipe (2,000 iterations), then the real default `moeplace lm train` run, whole."""
    base_cfg = dataclasses.replace(nanogpt_cpu(corpus.vocab_size), seed=seed)
    t0 = time.perf_counter()
    base = train(base_cfg, corpus, out / "nanogpt", write_files=True, overwrite=True)  # a rerun replaces it
    base_wall = time.perf_counter() - t0
    base_eval = evaluate(base["model"], corpus.valid, base_cfg.block_size)
    print(f"nanoGPT recipe: {base['step']} steps in {base['train_seconds']:.1f} s (wall {base_wall:.1f} s "
          f"with eval), val loss {base_eval:.4f}", flush=True)
    # The default exactly as a user runs it: the CLI with no model/training flags, in its own process.
    cmd = [sys.executable, "-m", "moeplace", "lm", "train", "--out", str(out / "default"),
           "--seed", str(seed), "--threads", str(threads), "--json", "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    ours = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"default moeplace lm train ({' '.join(['moeplace'] + cmd[3:])}): {ours['step']} steps "
          f"({ours['tokens']:,} tokens) in {ours['train_seconds']:.1f} s of training, whole run {wall:.1f} s "
          f"(start-up, periodic and final evaluation, sample), val loss {ours['val_loss']:.4f}", flush=True)
    rows = []
    for name, r, loss, w in (("nanoGPT CPU recipe (baseline)", base, base_eval, base_wall),
                             ("moeplace lm train (default)", ours, ours["val_loss"], wall)):
        rows.append({"run": name, "params": r["params"], "flops_per_token": r["flops_per_token"],
                     "steps": r["step"], "tokens": r["tokens"], "train_s": round(r["train_seconds"], 1),
                     "wall_s": round(w, 1), "val_loss": round(loss, 4)})
    print(markdown_table(rows))
    print(f"val loss: default - baseline = {ours['val_loss'] - base_eval:+.4f} nats; "
          f"tokens seen: {ours['tokens'] / base['tokens']:.2f}x the baseline's", flush=True)
    return {"baseline_val_loss": base_eval, "baseline_train_seconds": base["train_seconds"],
            "baseline_wall_seconds": base_wall, "baseline_tokens": base["tokens"],
            "default_val_loss": ours["val_loss"], "default_train_seconds": ours["train_seconds"],
            "default_wall_seconds": wall, "default_steps": ours["step"], "default_tokens": ours["tokens"],
            "default_params": ours["params"], "val_loss_gap": ours["val_loss"] - base_eval,
            "default_reaches_1_70": ours["val_loss"] <= 1.70, "load_average": os.getloadavg()}


# Trend routers: the paper's noisy top-k gating for the MoE-LSTM; for the small Transformer, whose zero-
# initialised noisy gates start as pure noise and trained worse than dense, softmax top-k with a balance
# loss weight of 0.5 (0.1 left 64 experts unbalanced; docs/benchmarks.md).
FAMILY_ROUTER = {"lstm": ("noisy_topk", None), "transformer": ("softmax_topk", {"aux_loss_weight": 0.5})}


@torch.no_grad()
def final_load(model: torch.nn.Module, corpus, batch_size: int, block_size: int, seed: int) -> dict:
    """CV(load) and max/mean load of each MoE layer on one large training-mode batch (noisy routing on)."""
    from moeplace.moe import moe_stats

    model.train()
    torch.manual_seed(seed)  # the routing noise
    x, _ = get_batch(corpus.train, batch_size, block_size, seed + 1, 10**9)
    model(x)
    stats = moe_stats(model)
    return {"cv_load": round(max(s["cv_load"] for s in stats), 4),
            "max_over_mean_load": round(max(s["max_over_mean_load"] for s in stats), 4), "tokens": x.numel()}


def balance(out: Path, corpus, families: list[str], batch_size: int, seed: int) -> dict[str, list[dict]]:
    """Figure 3 again from saved runs: load statistics of every trained MoE model on a large batch."""
    from moeplace.lm.train import load_for_inference

    result = {}
    for family in families:
        rows = []
        for ckpt in sorted((out / family).glob("*/ckpt.safetensors")):
            model, state = load_for_inference(ckpt)
            if not state["config"]["model"]["num_experts"]:
                continue
            e = state["config"]["model"]["num_experts"]
            load = final_load(model, corpus, batch_size, 64, seed)
            # a perfectly balanced router still shows multinomial noise: CV ~ sqrt(E / (k * tokens))
            rows.append({"model": ckpt.parent.name, "experts": e, **load,
                         "noise_floor_cv": round((e / (2 * load["tokens"])) ** 0.5, 4)})
        rows.sort(key=lambda r: r["experts"])
        print(f"\n{family}: load balance at the end of training ({batch_size * 64:,}-token batch, "
              "noisy routing as in training)\n" + markdown_table(rows), flush=True)
        result[family] = rows
    return result


def trend(corpus, out: Path, family: str, experts: list[int], steps: int, batch_size: int, d_model: int,
          d_expert: int, seed: int, router: str = "noisy_topk",
          router_options: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Figure 2 (and 3): one family, growing expert counts, equal active compute and equal tokens."""
    moe_kwargs = {"router": router, **(router_options or {})}
    configs = compare_configs(family, experts, corpus.vocab_size, k=2, d_model=d_model, d_expert=d_expert,
                              n_layer=2, block_size=64, moe_kwargs=moe_kwargs)
    rows = run_models(configs, corpus, out / family, batch_size, steps, lr=3e-3,
                      eval_interval=max(1, steps // 8), eval_tokens=16384, seed=seed, overwrite=True)
    balance = []
    for cfg, r in zip(configs, rows):
        if cfg.num_experts:
            # re-open the trained model to measure its routing on a large batch
            from moeplace.lm.train import load_for_inference

            model, _ = load_for_inference(out / family / r["model"])
            balance.append({"model": r["model"], **final_load(model, corpus, 256, 64, seed)})
    title = (f"{family}, k=2, d_model={d_model}, d_expert={d_expert}, {router} {router_options or ''}, "
             f"{steps} steps x {batch_size * 64} tokens")
    write_outputs(rows, out / family, title)
    trows = table_rows(rows)
    print(f"\n{title}\n" + markdown_table(trows), flush=True)
    print("load balance at the end of training (16,384-token batch, noisy routing):\n"
          + markdown_table(balance), flush=True)
    return trows, balance


ROUTER_VARIANTS = {  # the demo model's MoE with each router (docs/lm.md: why the demo keeps softmax top-k)
    "softmax top-k, balance loss 0.1 (demo)": {"router": "softmax_topk", "aux_loss_weight": 0.1},
    "noisy top-k, paper (Wg = Wnoise = 0)": {"router": "noisy_topk"},
    "noisy top-k, Wg ~ N(0, 1/d)": {"router": "noisy_topk", "gate_init_std": 1.0},
    "noisy top-k, Wg ~ N(0, 1/d), no noise": {"router": "noisy_topk", "gate_init_std": 1.0, "noisy": False},
}


def routers(corpus, out: Path, steps: int, seed: int) -> list[dict]:
    """The demo Transformer trained for `steps` steps (step schedule, same batches) with each router."""
    from moeplace.lm.presets import demo

    rows = []
    for name, kw in ROUTER_VARIANTS.items():
        cfg = demo(corpus.vocab_size)
        model = dataclasses.replace(cfg.model, moe_kwargs=dict(kw))
        cfg = dataclasses.replace(cfg, model=model, max_steps=steps, time_budget=None, eval_interval=0,
                                  seed=seed)
        res = train(cfg, corpus, out / str(len(rows)), write_files=False, show_progress=False)
        rows.append({"router": name, "val_loss": round(res["val_loss"], 4),
                     "cv_load": round(max((s["cv_load"] for s in res["moe"]), default=0.0), 3)})
        print(markdown_table(rows[-1:]), flush=True)
    print(f"\ndemo Transformer, {steps} steps x 1,024 characters, whole validation split\n"
          + markdown_table(rows))
    return rows


def main() -> None:
    """Run the chosen parts and print one JSON line with all figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["all", "anchor", "trend", "balance", "routers"], default="all")
    ap.add_argument("--router-steps", type=int, default=1000, help="steps per model of the routers part")
    ap.add_argument("--balance-batch", type=int, default=1024, help="sequences in the load-statistics batch")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every run (same for all)")
    ap.add_argument("--experts", default="0,4,16,64")
    ap.add_argument("--families", default="lstm,transformer")
    ap.add_argument("--trend-steps", type=int, default=1200)
    ap.add_argument("--trend-batch", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--d-expert", type=int, default=64)
    ap.add_argument("--router", default=None,
                    help="router of every MoE in the trend part (default: per family, FAMILY_ROUTER)")
    ap.add_argument("--router-options", type=json.loads, default=None,
                    help='JSON keyword arguments of the router, e.g. \'{"aux_loss_weight": 0.1}\'')
    ap.add_argument("--out", type=Path, default=Path("runs/bench-lm"))
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_corpus(None, "char", args.out / ".cache")
    figures: dict = {"threads": args.threads}
    if args.part in ("all", "anchor"):
        figures["anchor"] = anchor(corpus, args.out / "anchor", args.seed, args.threads)
    if args.part in ("all", "trend"):
        experts = [int(e) for e in args.experts.split(",")]
        for family in args.families.split(","):
            router, options = FAMILY_ROUTER[family]
            if args.router is not None:
                router, options = args.router, None
            if args.router_options is not None:
                options = args.router_options
            rows, bal = trend(corpus, args.out / "trend", family, experts, args.trend_steps,
                              args.trend_batch, args.d_model, args.d_expert, args.seed, router, options)
            dense = next(r for r in rows if r["experts"] == 0)
            figures[f"{family}_trend"] = rows
            figures[f"{family}_balance"] = bal
            for r in rows:
                if r["experts"]:
                    gain = dense["val_loss"] - r["val_loss"]
                    figures[f"{family}_gain_{r['experts']}_experts"] = round(gain, 4)
    if args.part in ("all", "balance"):
        figures["balance"] = balance(args.out / "trend", corpus, args.families.split(","), args.balance_batch,
                                     args.seed)
    if args.part == "routers":
        figures["routers"] = routers(corpus, args.out / "routers", args.router_steps, args.seed)
    print_json_line(figures)


if __name__ == "__main__":
    main()
