"""Dense vs MoE language models with growing expert counts at equal active compute and equal tokens.

The paper's central experiment at small scale: every model sees the same batches for the same
number of steps; the MoE models' experts are sized so that k experts cost what the dense FFN
costs, so only the total parameter count (the number of experts) changes.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

from moeplace.lm.data import Corpus
from moeplace.lm.lstm import LSTMConfig
from moeplace.lm.train import TrainConfig, train
from moeplace.lm.transformer import TransformerConfig
from moeplace.runs import read_jsonl


def compare_configs(family: str, experts: list[int], vocab_size: int, k: int = 2, d_model: int = 64,
                    d_expert: int = 128, n_layer: int = 2, block_size: int = 64,
                    moe_kwargs: dict | None = None) -> list[Any]:
    """Model configs of equal active compute: dense d_ff = k * d_expert; MoE k experts of d_expert units."""
    out = []
    for e in experts:
        common: dict[str, Any] = dict(vocab_size=vocab_size, block_size=block_size, d_ff=k * d_expert,
                                      num_experts=e, k=k, d_expert=d_expert if e else None,
                                      moe_kwargs=dict(moe_kwargs or {}) if e else {})
        if e == 1:
            common["k"] = 1
            common["d_expert"] = k * d_expert  # one expert carrying the whole active width
        if family == "lstm":
            out.append(LSTMConfig(d_model=d_model, **common))
        else:
            out.append(TransformerConfig(n_layer=n_layer, n_head=max(1, d_model // 32), n_embd=d_model,
                                         bias=False, activation="relu", **common))
    return out


def run_models(configs: list[Any], corpus: Corpus, out_dir: Path, batch_size: int, steps: int, lr: float,
               eval_interval: int, eval_tokens: int | None, seed: int, overwrite: bool = False
               ) -> list[dict[str, Any]]:
    """Train each config on identical batches; return one row of figures per model plus its val curve."""
    rows = []
    for mcfg in configs:
        name = f"{mcfg.family}-{'dense' if mcfg.num_experts == 0 else f'moe{mcfg.num_experts}'}"
        cfg = TrainConfig(model=mcfg, batch_size=batch_size, lr=lr, min_lr=lr / 10, warmup=0.05,
                          max_steps=steps, eval_interval=eval_interval, eval_tokens=eval_tokens, seed=seed)
        res = train(cfg, corpus, out_dir / name, overwrite=overwrite)
        res.pop("model")
        curve = [(r["step"], r["val_loss"]) for r in read_jsonl(out_dir / name / "metrics.jsonl")
                 if "val_loss" in r and not r.get("final")]
        moe = res.get("moe") or []
        rows.append({
            "model": name, "experts": mcfg.num_experts, "params": res["params"],
            "flops_per_token": res["flops_per_token"], "val_loss": res["val_loss"],
            "tokens": res["tokens"], "tokens_per_s": res["tokens"] / res["train_seconds"],
            "cv_load": max((float(s.get("cv_load", 0.0)) for s in moe), default=0.0),
            "max_over_mean_load": max((float(s.get("max_over_mean_load", 1.0)) for s in moe), default=1.0),
            "curve": curve,
        })
    return rows


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the Markdown/CSV table (no curves)."""
    return [{"model": r["model"], "experts": r["experts"], "params": r["params"],
             "flops_per_token": r["flops_per_token"], "val_loss": round(r["val_loss"], 4),
             "tokens": r["tokens"], "tokens_per_s": round(r["tokens_per_s"]),
             "cv_load": round(r["cv_load"], 3), "max_over_mean_load": round(r["max_over_mean_load"], 3)}
            for r in rows]


def write_outputs(rows: list[dict[str, Any]], out_dir: Path, title: str) -> dict[str, Path]:
    """compare.md, compare.csv, val_loss_vs_step.png, loss_vs_experts.png in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moeplace.utils import atomic_write_text, markdown_table, save_figure

    trows = table_rows(rows)
    paths = {"markdown": out_dir / "compare.md", "csv": out_dir / "compare.csv",
             "curves": out_dir / "val_loss_vs_step.png", "experts": out_dir / "loss_vs_experts.png"}
    atomic_write_text(paths["markdown"], f"# {title}\n\n{markdown_table(trows)}\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(trows[0]))
    writer.writeheader()
    writer.writerows(trows)
    atomic_write_text(paths["csv"], buf.getvalue())

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["curve"]:
            s, v = zip(*r["curve"])
            ax.plot(s, v, label=f"{r['model']} ({r['params'] / 1e6:.2f}M params)")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, paths["curves"])

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [max(r["experts"], 1) for r in rows]
    ax.plot(xs, [r["val_loss"] for r in rows], "o-")
    for x, r in zip(xs, rows):
        ax.annotate(f"{r['params'] / 1e6:.2f}M", (x, r["val_loss"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("experts per MoE layer (1 = dense)")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, paths["experts"])
    return paths


def run_compare(args: argparse.Namespace) -> int:
    """The `moeplace lm compare` command."""
    from moeplace.errors import InputError
    from moeplace.lm.data import load_corpus
    from moeplace.utils import markdown_table, print_json_line

    try:
        experts = [int(e) for e in str(args.experts).split(",") if e.strip()]
    except ValueError:
        raise InputError(f"--experts must be comma-separated integers, not {args.experts!r}") from None
    if not experts or min(experts) < 0:
        raise InputError(f"--experts must list expert counts >= 0, not {args.experts!r}")
    if any(0 < e < args.k for e in experts):
        raise InputError(f"--experts {args.experts}: every MoE needs at least --k {args.k} experts")
    out = Path(args.out)
    corpus = load_corpus(args.corpus, args.level, args.cache_dir or out.parent / ".cache" / "lm-data",
                         args.max_vocab)
    configs = compare_configs(args.family, experts, corpus.vocab_size, args.k, args.d_model, args.d_expert,
                              args.n_layer, args.block_size, {"router": args.router})
    rows = run_models(configs, corpus, out, args.batch_size, args.steps, args.lr, args.eval_interval,
                      args.eval_tokens, args.seed, overwrite=getattr(args, "overwrite", False))
    title = (f"{args.family}, k={args.k}, d_model={args.d_model}, d_expert={args.d_expert}, "
             f"{args.steps} steps x {args.batch_size * args.block_size} tokens")
    paths = write_outputs(rows, out, title)
    print(markdown_table(table_rows(rows)))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if args.json:
        print_json_line({"family": args.family, "rows": table_rows(rows)})
    return 0
