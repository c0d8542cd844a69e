"""A tiny run of the real LM training loop; as a script, one rank of it under torchrun's environment.

    RANK=r WORLD_SIZE=w MASTER_ADDR=... MASTER_PORT=... \
        python _lm_worker.py CORPUS OUT:MAX_STEPS:STOP_AT[:resume] ...

Calls moeplace.lm.train.train after moeplace.lm.distributed.setup(), as `moeplace lm train` does
under torchrun, with routing that is deterministic (softmax top-k, no noise, no dropout) and the
balancing loss off: the aux loss is computed on each rank's rows, so only then do the losses of
1 and N processes agree exactly. STOP_AT > 0 interrupts the run after that step (it saves).
Each OUT:... argument is one run, done in order in the same process group.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import torch

from moeplace.lm import distributed as dist_rt
from moeplace.lm.data import load_corpus
from moeplace.lm.transformer import TransformerConfig


def run(out: Path, corpus_file: Path, max_steps: int, stop_at: int = 0, resume: bool = False) -> dict:
    """Train (or resume) the tiny model; return (rank 0: also write) losses, val_loss, world, step."""
    train_mod = importlib.import_module(os.environ.get("MOEPLACE_TRAIN_MODULE", "moeplace.lm.train"))
    ctx = dist_rt.context()
    corpus = load_corpus(corpus_file, "char", out.parent / "cache")
    model = TransformerConfig(vocab_size=corpus.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16,
                              d_ff=32, dropout=0.0, bias=True, activation="gelu", num_experts=4, k=2,
                              moe_every=1, moe_kwargs={"router": "softmax_topk", "aux_loss_weight": 0.0})
    cfg = train_mod.TrainConfig(model=model, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=0.25,
                                max_steps=max_steps, time_budget=None, grad_clip=0.5, eval_interval=0,
                                eval_tokens=512, log_interval=1, seed=5)

    def stop(step: int, record: dict) -> None:
        if step == stop_at:
            raise KeyboardInterrupt

    res = train_mod.train(cfg, corpus, out, resume=resume, callback=stop, show_progress=False)
    figures = {"losses": [h["loss"] for h in res["history"]], "val_loss": res.get("val_loss"),
               "world": ctx.world_size, "step": res["step"]}
    if ctx.is_main:
        (out / f"result-{ctx.world_size}.json").write_text(json.dumps(figures))
    return figures


def main() -> None:
    corpus_file = Path(sys.argv[1])
    torch.set_num_threads(1)
    ctx = dist_rt.setup(timeout_s=60)
    with dist_rt.guard(ctx):
        for job in sys.argv[2:]:
            out, max_steps, stop_at, *resume = job.split(":")
            run(Path(out), corpus_file, int(max_steps), int(stop_at), resume == ["resume"])
    dist_rt.shutdown(ctx)


if __name__ == "__main__":
    main()
