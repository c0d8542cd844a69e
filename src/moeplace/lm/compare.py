"""Dense vs MoE language models with growing expert counts at equal active compute and equal tokens.

The paper's central experiment at small scale: every model sees the same batches for the same
number of steps; the MoE models' experts are sized so that k experts cost what the dense FFN
costs, so only the total parameter count (the number of experts) changes.
"""

from __future__ import annotations

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
                    moe_kwargs: dict | None = None, softmax_samples: int = 0, dropout: float = 0.0,
                    ffn_norm: bool = False) -> list[Any]:
    """Model configs of equal active compute: dense d_ff = k * d_expert; MoE k experts of d_expert units.

    ffn_norm (LSTM only; the Transformer is pre-norm already): LayerNorm on the FFN/MoE input."""
    out = []
    for e in experts:
        common: dict[str, Any] = dict(vocab_size=vocab_size, block_size=block_size, d_ff=k * d_expert,
                                      softmax_samples=softmax_samples, dropout=dropout,
                                      num_experts=e, k=k, d_expert=d_expert if e else None,
                                      moe_kwargs=dict(moe_kwargs or {}) if e else {})
        if e == 1:
            common["k"] = 1
            common["d_expert"] = k * d_expert  # one expert carrying the whole active width
        if family == "lstm":
            out.append(LSTMConfig(d_model=d_model, ffn_norm=ffn_norm, **common))
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


def run_compare(corpus: Corpus, family: str, experts: list[int], out_dir: Path, k: int = 2,
                d_model: int = 64, d_expert: int = 128, n_layer: int = 2, block_size: int = 64,
                batch_size: int = 32, steps: int = 1000, lr: float = 3e-3, eval_interval: int = 100,
                eval_tokens: int | None = 16384, seed: int = 1337, moe_kwargs: dict | None = None,
                softmax_samples: int = 0, dropout: float = 0.0, overwrite: bool = False,
                ffn_norm: bool = False) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Train dense and MoE models of equal active compute on corpus; write the table and plots to out_dir."""
    configs = compare_configs(family, experts, corpus.vocab_size, k, d_model, d_expert, n_layer, block_size,
                              moe_kwargs, softmax_samples, dropout, ffn_norm)
    rows = run_models(configs, corpus, out_dir, batch_size, steps, lr, eval_interval, eval_tokens, seed,
                      overwrite=overwrite)
    title = (f"{family}, k={k}, d_model={d_model}, d_expert={d_expert}, "
             f"{steps} steps x {batch_size * block_size} tokens")
    return rows, write_outputs(rows, out_dir, title)
