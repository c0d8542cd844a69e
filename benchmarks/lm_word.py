"""Word-level language models: (1) training speed before/after the allocator fix and the sampled softmax,
side by side in one process on the same model; (2) the paper's effect: dense vs 4/16/64/256 experts at equal
active compute and equal tokens on word-level Tiny Shakespeare (10,000-word vocabulary).

    nice -n 5 .venv/bin/python benchmarks/lm_word.py --part speed     # ~2 minutes
    nice -n 5 .venv/bin/python benchmarks/lm_word.py --part experts   # ~30 minutes on 2 shared cores

Speed: the issue's model (`lm compare --family lstm --level word`: d_model 64, 16 experts of 128 units,
k = 2, batch 32 x 64 words) trained for --speed-steps steps in each of three set-ups, interleaved twice:
glibc's default allocator thresholds with the full softmax (before), thresholds raised with the full softmax,
and thresholds raised with the sampled softmax (after). User and kernel CPU seconds come from getrusage.

Experts: MoE-LSTM (embedding -> LSTM -> MoE -> LSTM -> softmax), noisy top-k with the paper's losses, k = 4
experts of --d-expert units (dense: one FFN of 4 x d_expert units, the same active compute), sampled softmax
in training and the exact softmax for every evaluation. The last line of output is one JSON line.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch

from moeplace import allocator
from moeplace.lm.compare import compare_configs, run_compare, table_rows
from moeplace.lm.data import load_corpus
from moeplace.lm.train import TrainConfig, train
from moeplace.utils import markdown_table, print_json_line

SETUPS = {  # name -> (keep freed memory, softmax samples)
    "before: glibc defaults, full softmax": (False, 0),
    "allocator fix, full softmax": (True, 0),
    "after: allocator fix, sampled softmax 1024": (True, 1024),
}


def speed(corpus, steps: int, seed: int) -> list[dict]:
    """Tokens/s and CPU seconds per set-up, each trained twice for `steps` steps, interleaved."""
    runs: dict[str, list[dict]] = {name: [] for name in SETUPS}
    for rep in range(2):
        for name, (keep, samples) in (SETUPS.items() if rep == 0 else reversed(SETUPS.items())):
            (allocator.retain_freed_memory if keep else allocator.release_freed_memory)()
            cfg = compare_configs("lstm", [16], corpus.vocab_size, 2, 64, 128, 2, 64,
                                  {"router": "noisy_topk"}, samples)[0]
            tc = TrainConfig(model=cfg, batch_size=32, lr=3e-3, max_steps=steps, eval_interval=0, seed=seed)
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            res = train(tc, corpus, "unused", write_files=False, show_progress=False)
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            runs[name].append({"tokens_per_s": res["tokens"] / res["train_seconds"],
                               "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
                               "minor_faults": r1.ru_minflt - r0.ru_minflt, "wall_s": wall})
            print(f"{name}: {runs[name][-1]['tokens_per_s']:.0f} tokens/s", flush=True)
    base = sum(r["tokens_per_s"] for r in runs[next(iter(SETUPS))]) / 2
    rows = []
    for name, rs in runs.items():
        tps = sum(r["tokens_per_s"] for r in rs) / 2
        user, sys_ = sum(r["user_s"] for r in rs), sum(r["sys_s"] for r in rs)
        rows.append({"setup": name, "tokens_per_s": round(tps), "x_before": round(tps / base, 2),
                     "user_s": round(user, 1), "sys_s": round(sys_, 1),
                     "sys_share": round(sys_ / max(1e-9, user + sys_), 3),
                     "minor_faults_per_step": round(sum(r["minor_faults"] for r in rs) / (2 * steps))})
    allocator.retain_freed_memory()
    print(f"\nspeed, {steps} steps x 2,048 words per set-up, twice, interleaved\n" + markdown_table(rows),
          flush=True)
    return rows


def experts_part(corpus, out: Path, experts: list[int], steps: int, d_model: int, d_expert: int,
                 dropout: float, seed: int, gate_init_std: float = 0.0, softmax_samples: int = 1024,
                 ffn_norm: bool = False, router_norm: bool = False) -> dict:
    """Dense vs growing expert counts; returns the table, monotonicity and gains over dense."""
    rows, _ = run_compare(corpus, "lstm", experts, out, k=4, d_model=d_model, d_expert=d_expert,
                          batch_size=32, steps=steps, lr=3e-3, eval_interval=max(1, steps // 4),
                          eval_tokens=16384, seed=seed,
                          moe_kwargs={"router": "noisy_topk", "gate_init_std": gate_init_std,
                                      "input_norm": router_norm},
                          softmax_samples=softmax_samples, dropout=dropout, overwrite=True,
                          ffn_norm=ffn_norm)
    trows = table_rows(rows)
    norm = ("LayerNorm on the MoE/FFN input, " if ffn_norm else "")
    norm += "router input / RMS, " if router_norm else ""
    print(f"\nlstm, word level, k=4, d_model={d_model}, d_expert={d_expert}, dropout {dropout}, "
          f"noisy top-k gate_init_std {gate_init_std}, {norm}"
          f"softmax samples {softmax_samples or 'all (full)'}, "
          f"{steps} steps x 2,048 words\n" + markdown_table(trows), flush=True)
    dense = next(r["val_loss"] for r in rows if r["experts"] == 0)
    losses = [r["val_loss"] for r in sorted(rows, key=lambda r: r["experts"])]
    gains = {f"gain_{r['experts']}": round(dense - r["val_loss"], 4) for r in rows if r["experts"]}
    print("gains over dense (nats): " + ", ".join(f"{k[5:]} experts {v:+.4f}" for k, v in gains.items()))
    return {"rows": trows, "monotone": all(a > b for a, b in zip(losses, losses[1:])), **gains}


def main() -> None:
    """Run the chosen parts; print tables and one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["all", "speed", "experts"], default="all")
    ap.add_argument("--speed-steps", type=int, default=40)
    ap.add_argument("--experts", default="0,4,16,64,256")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--d-expert", type=int, default=128)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--softmax-samples", type=int, default=1024, help="training softmax samples (0 = full)")
    ap.add_argument("--gate-init-std", type=float, default=0.0,
                    help="noisy top-k gating weights N(0, std^2/d); 0 = the paper's zeros")
    ap.add_argument("--ffn-norm", action="store_true",
                    help="LayerNorm on the MoE/FFN input: router logits independent of the stream's scale")
    ap.add_argument("--router-norm", action="store_true",
                    help="the router (only) reads x / RMS(x): NoisyTopKRouter(input_norm=True)")
    ap.add_argument("--max-vocab", type=int, default=10000)
    ap.add_argument("--corpus", default="tinyshakespeare", help="tinyshakespeare, kjv or a path (word level)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-lm-word"))
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    torch.set_num_threads(1)
    corpus = load_corpus(args.corpus, "word", args.out / ".cache", args.max_vocab)
    print(f"torch {torch.__version__}, 1 thread, word-level {args.corpus}: {len(corpus.train):,} training "
          f"words, vocabulary {corpus.vocab_size:,}, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs", flush=True)
    figures: dict = {"vocab": corpus.vocab_size}
    if args.part in ("all", "speed"):
        figures["speed"] = speed(corpus, args.speed_steps, args.seed)
    if args.part in ("all", "experts"):
        allocator.retain_freed_memory()
        experts = [int(e) for e in args.experts.split(",")]
        figures["experts"] = experts_part(corpus, args.out / "experts", experts, args.steps, args.d_model,
                                          args.d_expert, args.dropout, args.seed, args.gate_init_std,
                                          args.softmax_samples, args.ffn_norm, args.router_norm)
    figures["load_average_end"] = os.getloadavg()[0]
    print_json_line(figures)


if __name__ == "__main__":
    main()
