"""`moeplace lm train|eval|sample|compare`: MoE language models on any plain-text corpus."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from moeplace.cli.args import (
    duration_or_off,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    probability,
)

_MODEL_FLAGS = ("block_size", "n_layer", "n_head", "d_ff", "num_experts", "k", "d_expert", "moe_every",
                "dropout", "activation", "pos_emb", "softmax_samples")  # flags named as their config field
_TRAIN_FLAGS = ("batch_size", "lr", "min_lr", "warmup", "max_steps", "weight_decay", "grad_clip",
                "eval_interval", "eval_tokens", "seed")


def set_threads(n: int) -> None:
    """Use n torch CPU threads (0 = leave torch's default)."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


def _add_corpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", type=Path, default=None,
                   help="text file (90/10 split; .gz read too), folder with train/valid/test files, or a "
                        "built-in corpus: tinyshakespeare (default), kjv (King James Bible, word level)")
    p.add_argument("--level", choices=["char", "word"], default="char", help="tokenisation level")
    p.add_argument("--max-vocab", type=positive_int, default=None,
                   help="word level: keep the N most frequent words")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where token-id arrays are cached (default: <out>/../.cache/lm-data)")


def _add_model_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults come from --preset)")
    g.add_argument("--preset", choices=["demo", "nanogpt", "moe-lstm", "moe-lstm-h"], default=None,
                   help="starting configuration (default: demo, or moe-lstm with --family lstm)")
    g.add_argument("--family", choices=["transformer", "lstm"], default=None, help="model family")
    g.add_argument("--block-size", type=positive_int, help="context length")
    g.add_argument("--n-layer", type=positive_int, help="Transformer blocks")
    g.add_argument("--n-head", type=positive_int, help="attention heads")
    g.add_argument("--d-model", type=positive_int, help="model width (n_embd / LSTM units)")
    g.add_argument("--d-ff", type=positive_int,
                   help="dense FFN hidden units (MoE: k * d_expert at equal compute)")
    g.add_argument("--num-experts", type=nonneg_int, help="experts per MoE layer (0 = dense)")
    g.add_argument("--k", type=positive_int, help="experts per token")
    g.add_argument("--d-expert", type=positive_int, help="hidden units of one expert (default d_ff / k)")
    g.add_argument("--moe-every", type=positive_int,
                   help="MoE in every (1) or every other (2) Transformer block")
    g.add_argument("--router", help="MoE router (noisy_topk = the paper's; a different router than the "
                                    "preset's drops the preset's router options)")
    g.add_argument("--capacity-factor", type=positive_float, help="MoE capacity factor (default: dropless)")
    g.add_argument("--gate-init-std", type=nonneg_float,
                   help="noisy_topk: gating weights from N(0, std^2 / d) instead of the paper's zeros "
                        "(1 trained as well as softmax top-k in the small Transformer; docs/lm.md)")
    g.add_argument("--moe-groups", type=nonneg_int,
                   help="hierarchical MoE (the paper's appendix B): this many groups of num-experts / groups "
                        "experts (0 = flat MoE)")
    g.add_argument("--k-groups", type=positive_int,
                   help="hierarchical MoE: groups per token (default 2); k / k-groups experts in each")
    g.add_argument("--softmax-samples", type=nonneg_int,
                   help="train with a sampled softmax over this many words when the vocabulary is larger "
                        "(0 = full softmax); evaluation is always exact")
    g.add_argument("--dropout", type=probability, help="dropout probability")
    g.add_argument("--activation", choices=["relu", "gelu", "silu"], help="FFN / expert activation")
    g.add_argument("--pos-emb", choices=["learned", "rope"],
                   help="Transformer positions: learned table or rotary")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=positive_int, help="sequences per step (global batch)")
    t.add_argument("--lr", type=positive_float, help="peak learning rate (AdamW)")
    t.add_argument("--min-lr", type=nonneg_float, help="final learning rate of the cosine decay")
    t.add_argument("--warmup", type=probability, help="fraction of the run spent in linear warm-up")
    t.add_argument("--max-steps", type=positive_int, help="step budget")
    t.add_argument("--time-budget", type=duration_or_off, default=None,
                   help="wall-time budget, e.g. 165s or 3m (0 = none); the LR schedule spans it")
    t.add_argument("--weight-decay", type=nonneg_float, help="AdamW weight decay")
    t.add_argument("--grad-clip", type=nonneg_float, help="gradient-norm clipping (0 = off)")
    t.add_argument("--eval-interval", type=nonneg_int, help="steps between evaluations")
    t.add_argument("--eval-tokens", type=positive_int, help="validation tokens per periodic evaluation")
    t.add_argument("--seed", type=nonneg_int, help="random seed (batches, init, routing noise)")
    t.add_argument("--threads", type=nonneg_int, default=1,
                   help="torch CPU threads (default 1: fastest for these small models on a shared 2-core "
                        "machine; 0 = torch's default)")


def build_config(args: argparse.Namespace, vocab_size: int):
    """The TrainConfig the flags describe: a preset, then every flag given overrides it."""
    from moeplace.lm.presets import PRESETS

    preset = args.preset or ("moe-lstm" if args.family == "lstm" else "demo")
    cfg = PRESETS[preset](vocab_size)
    if args.family is not None and args.family != cfg.model.family:
        from moeplace.errors import InputError

        raise InputError(f"--family {args.family} does not match --preset {preset} ({cfg.model.family})")
    m = dataclasses.asdict(cfg.model)
    for fld in _MODEL_FLAGS:
        v = getattr(args, fld, None)
        if v is not None and fld in m:
            m[fld] = v
    if args.d_model is not None:
        m["n_embd" if "n_embd" in m else "d_model"] = args.d_model
    if args.router is not None and args.router != m["moe_kwargs"].get("router"):
        keep = {k: v for k, v in m["moe_kwargs"].items() if k == "capacity_factor"}
        m["moe_kwargs"] = {**keep, "router": args.router}  # the preset's router options fit its router only
    if args.capacity_factor is not None:
        m["moe_kwargs"]["capacity_factor"] = args.capacity_factor
    if args.gate_init_std is not None:
        m["moe_kwargs"]["gate_init_std"] = args.gate_init_std
    if args.moe_groups == 0:  # flat MoE
        m["moe_kwargs"] = {k: v for k, v in m["moe_kwargs"].items() if k not in ("num_groups", "k_groups")}
    elif args.moe_groups is not None:
        m["moe_kwargs"]["num_groups"] = args.moe_groups
    if args.k_groups is not None:
        m["moe_kwargs"]["k_groups"] = args.k_groups
    kw = {f: getattr(args, f) for f in _TRAIN_FLAGS if getattr(args, f, None) is not None}
    if args.time_budget is not None:
        kw["time_budget"] = args.time_budget or None
    cfg = dataclasses.replace(cfg, model=type(cfg.model)(**m), **kw)
    check_model_config(cfg.model)
    return cfg


def check_model_config(model_cfg) -> None:
    """The flags' cross-checks (k <= experts, heads dividing the width, ...), as one-line InputErrors:
    the model is built once on the meta device (no memory, no time) and its ValueError reported."""
    import torch

    from moeplace.errors import InputError
    from moeplace.lm.models import build_model

    experts, k = getattr(model_cfg, "num_experts", 0), getattr(model_cfg, "k", 1)
    if experts and k > experts:
        raise InputError(f"--k {k}: must be <= --num-experts {experts} (experts per token out of experts)")
    try:
        with torch.device("meta"):
            build_model(model_cfg)
    except (ValueError, TypeError) as e:
        raise InputError(f"model options: {str(e).splitlines()[0]}") from None


def _load_corpus(args: argparse.Namespace, out: Path | None):
    from moeplace.lm.data import load_corpus

    cache = args.cache_dir or ((out.parent if out else Path("runs")) / ".cache" / "lm-data")
    return load_corpus(args.corpus, args.level, cache, args.max_vocab)


def cmd_train(args: argparse.Namespace) -> int:
    """Train on one process, or on many under torchrun (expert-parallel MoE, data-parallel rest)."""
    import torch

    from moeplace.errors import InputError
    from moeplace.lm import distributed as dist_rt

    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise InputError(f"--device {args.device}: " + ("CUDA is not available on this machine"
                         if args.device.startswith("cuda") else "expected cpu or cuda"))
    ctx = dist_rt.setup(args.dist_timeout, args.device)  # joins torchrun's process group; else a no-op
    with dist_rt.guard(ctx):  # a dead or hung rank -> one-line DistributedError on the others
        code = _train(args)
    dist_rt.shutdown(ctx)
    return code


def _train(args: argparse.Namespace) -> int:
    """Train (or --resume) a language model, then print validation loss, perplexity and a sample."""
    import torch

    from moeplace.lm.models import describe
    from moeplace.lm.train import train
    from moeplace.utils import print_json_line

    set_threads(args.threads)
    out = Path(args.out)
    corpus = _load_corpus(args, out)
    cfg = build_config(args, corpus.vocab_size)
    res = train(cfg, corpus, out, resume=args.resume, overwrite=args.overwrite)
    model = res.pop("model")
    # under torchrun describe() sees this rank's experts only; res["params"] counts every rank's
    print(describe(model).replace(f"{model.num_params() / 1e6:.2f}M", f"{res['params'] / 1e6:.2f}M", 1))
    if res["interrupted"]:
        print(f"interrupted at step {res['step']}; checkpoint saved in {out} (continue with --resume)",
              file=sys.stderr)
        return 130
    print(f"step {res['step']} ({res['tokens']:,} tokens, {res['train_seconds']:.0f} s): "
          f"val loss {res['val_loss']:.4f}, perplexity {res['val_ppl']:.2f}")
    if args.sample_tokens > 0:
        model = model.cpu()  # sampling uses a seeded CPU generator, so text is the same whatever trained
        gen = torch.Generator().manual_seed(cfg.seed)
        start = torch.tensor([corpus.encode("\n")[:1] or [0]])
        text = corpus.decode(model.generate(start, args.sample_tokens, 0.8, 40, gen)[0, 1:].tolist())
        print("sample:\n" + text)
    if args.json:
        res.pop("history")
        print_json_line({k: v for k, v in res.items()})
    return 0


def _checkpoint_corpus(state: dict, args: argparse.Namespace):
    """A Corpus holding the checkpoint's vocabulary, with the splits of --corpus when one is given."""
    import numpy as np

    from moeplace.errors import InputError
    from moeplace.lm.data import Corpus

    info = state["corpus"]
    if args.corpus is None and getattr(args, "need_data", False):
        args.corpus = Path(info["source"]) if Path(info["source"]).exists() else None
    if getattr(args, "need_data", False):
        args.level = info["level"]
        if args.level == "word" and args.max_vocab is None:  # the vocabulary limit it was trained with
            args.max_vocab = len(info["vocab"])
        corpus = _load_corpus(args, None)
        if corpus.vocab != info["vocab"]:
            raise InputError(f"{args.corpus}: vocabulary differs from the checkpoint's (different corpus?)")
        return corpus
    empty = np.zeros(0, dtype=np.int64)
    return Corpus(vocab=info["vocab"], level=info["level"], train=empty, valid=empty, test=empty,
                  source=info["source"])


def cmd_eval(args: argparse.Namespace) -> int:
    """Loss and perplexity of a checkpoint on a split."""
    import math

    from moeplace.lm.train import evaluate, load_for_inference
    from moeplace.utils import print_json_line, seed_everything

    seed_everything(args.seed)  # evaluation is deterministic; seeded anyway like every command
    set_threads(args.threads)
    model, state = load_for_inference(args.checkpoint)
    args.need_data = True
    corpus = _checkpoint_corpus(state, args)
    loss = evaluate(model, corpus.split(args.split), model.block_size, max_tokens=args.max_tokens)
    print(f"{args.split} loss {loss:.4f}, perplexity {math.exp(loss):.2f} ({corpus.source})")
    if args.json:
        print_json_line({"split": args.split, "loss": loss, "perplexity": math.exp(loss),
                         "step": state["step"]})
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Print text sampled from a checkpoint."""
    import torch

    from moeplace.errors import InputError
    from moeplace.lm.train import load_for_inference

    set_threads(args.threads)
    model, state = load_for_inference(args.checkpoint)
    corpus = _checkpoint_corpus(state, args)
    ids = corpus.encode(args.prompt) if args.prompt else corpus.encode("\n")[:1]
    if not ids:
        raise InputError("--prompt encodes to no tokens")
    gen = torch.Generator().manual_seed(args.seed)
    for i in range(args.num_samples):
        out = model.generate(torch.tensor([ids]), args.max_new_tokens, args.temperature, args.top_k, gen)
        if i:
            print("---")
        print(corpus.decode(out[0].tolist() if args.prompt else out[0, 1:].tolist()))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Dense vs MoE with growing expert counts at equal active compute and tokens: table + plots."""
    from moeplace.errors import InputError
    from moeplace.lm.compare import compare_configs, run_compare, table_rows
    from moeplace.utils import markdown_table, print_json_line

    set_threads(args.threads)
    try:
        experts = [int(e) for e in str(args.experts).split(",") if e.strip()]
    except ValueError:
        raise InputError(f"--experts must be comma-separated integers, not {args.experts!r}") from None
    if not experts or min(experts) < 0:
        raise InputError(f"--experts must list expert counts >= 0, not {args.experts!r}")
    if any(0 < e < args.k for e in experts):
        raise InputError(f"--experts {args.experts}: every MoE needs at least --k {args.k} experts")
    out = Path(args.out)
    corpus = _load_corpus(args, out)
    moe_kwargs = {"router": args.router}
    if args.gate_init_std is not None:
        moe_kwargs["gate_init_std"] = args.gate_init_std
    for cfg in compare_configs(args.family, experts, corpus.vocab_size, args.k, args.d_model, args.d_expert,
                               args.n_layer, args.block_size, moe_kwargs, args.softmax_samples):
        check_model_config(cfg)
    rows, paths = run_compare(corpus, args.family, experts, out, args.k, args.d_model, args.d_expert,
                              args.n_layer, args.block_size, args.batch_size, args.steps, args.lr,
                              args.eval_interval, args.eval_tokens, args.seed, moe_kwargs,
                              args.softmax_samples, args.dropout, overwrite=args.overwrite)
    print(markdown_table(table_rows(rows)))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if args.json:
        print_json_line({"family": args.family, "rows": table_rows(rows)})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Register the lm subcommands."""
    p = sub.add_parser("train", help="train a language model (default: MoE Transformer, Tiny Shakespeare)")
    _add_corpus_args(p)
    _add_model_train_args(p)
    p.add_argument("--out", default="runs/lm", help="run folder (checkpoint, metrics.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue exactly from the run folder's checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (default: refuse to touch another run's files)")
    p.add_argument("--sample-tokens", type=nonneg_int, default=300,
                   help="length of the sample printed at the end")
    p.add_argument("--json", action="store_true", help="also print the final figures as one JSON line")
    p.add_argument("--dist-timeout", type=positive_float, default=300.0,
                   help="under torchrun: seconds a rank waits for a dead or hung peer before stopping")
    p.add_argument("--device", default="cpu",
                   help="cpu, or cuda / cuda:N (under torchrun: cuda gives each rank its local GPU, NCCL)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="loss and perplexity of a checkpoint")
    p.add_argument("checkpoint", help="run folder or .safetensors checkpoint")
    _add_corpus_args(p)
    p.add_argument("--split", choices=["train", "valid", "test"], default="valid")
    p.add_argument("--max-tokens", type=positive_int, default=None,
                   help="evaluate on at most this many tokens")
    p.add_argument("--seed", type=nonneg_int, default=0,
                   help="random seed (evaluation itself is deterministic)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    p.add_argument("--threads", type=nonneg_int, default=1, help="torch CPU threads (0 = torch's default)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("checkpoint", help="run folder or .safetensors checkpoint")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-new-tokens", type=positive_int, default=300)
    p.add_argument("--temperature", type=nonneg_float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=positive_int, default=None,
                   help="sample only among the k likeliest tokens")
    p.add_argument("--num-samples", type=positive_int, default=1)
    p.add_argument("--seed", type=nonneg_int, default=1337)
    p.add_argument("--threads", type=nonneg_int, default=1, help="torch CPU threads (0 = torch's default)")
    p.set_defaults(func=cmd_sample, corpus=None)

    p = sub.add_parser("compare", help="dense vs MoE with growing expert counts at equal active compute")
    _add_corpus_args(p)
    p.add_argument("--family", choices=["transformer", "lstm"], default="transformer", help="model family")
    p.add_argument("--experts", default="0,4,16,64", help="comma-separated expert counts (0 = dense)")
    p.add_argument("--k", type=positive_int, default=2, help="experts per token")
    p.add_argument("--d-model", type=positive_int, default=64, help="model width")
    p.add_argument("--d-expert", type=positive_int, default=128,
                   help="hidden units per expert; dense d_ff = k * d_expert")
    p.add_argument("--n-layer", type=positive_int, default=2, help="Transformer blocks (MoE in each)")
    p.add_argument("--block-size", type=positive_int, default=64, help="context length")
    p.add_argument("--batch-size", type=positive_int, default=32, help="sequences per step")
    p.add_argument("--steps", type=positive_int, default=1000,
                   help="training steps of every model (equal tokens)")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="peak learning rate")
    p.add_argument("--router", default="noisy_topk", help="MoE router")
    p.add_argument("--gate-init-std", type=nonneg_float, default=None,
                   help="noisy_topk: gating weights from N(0, std^2 / d) instead of zeros")
    p.add_argument("--softmax-samples", type=nonneg_int, default=1024,
                   help="train with a sampled softmax over this many words when the vocabulary is larger "
                        "(default 1024; 0 = full softmax); evaluation is always exact")
    p.add_argument("--dropout", type=probability, default=0.0, help="dropout probability")
    p.add_argument("--eval-interval", type=nonneg_int, default=100,
                   help="steps between validation evaluations")
    p.add_argument("--eval-tokens", type=positive_int, default=16384,
                   help="validation tokens per periodic evaluation")
    p.add_argument("--seed", type=nonneg_int, default=1337)
    p.add_argument("--threads", type=nonneg_int, default=1, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", default="runs/lm-compare", help="folder for the table, CSV, plots and runs")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the runs already in --out (default: refuse to touch them)")
    p.set_defaults(func=cmd_compare)
