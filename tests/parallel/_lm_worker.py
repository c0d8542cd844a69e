"""One rank of a tiny `lm train` run (launched by test_lm_distributed.py with torchrun's environment).

    python _lm_worker.py OUT_DIR CORPUS_FILE MAX_STEPS [resume]

Calls the real training loop (moeplace.lm.train.train) after moeplace.lm.distributed.setup(), as
`moeplace lm train` does under torchrun, with a model whose routing is deterministic and whose
balancing loss is off (the aux loss is computed per rank, so only then do losses match exactly).
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


def main() -> None:
    out, corpus_file, max_steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    resume = len(sys.argv) > 4 and sys.argv[4] == "resume"
    torch.set_num_threads(1)
    train_mod = importlib.import_module(os.environ.get("MOEPLACE_TRAIN_MODULE", "moeplace.lm.train"))
    ctx = dist_rt.setup(timeout_s=60)
    corpus = load_corpus(corpus_file, "char", out.parent / "cache")
    model = TransformerConfig(vocab_size=corpus.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16,
                              d_ff=32, dropout=0.0, bias=True, activation="gelu", num_experts=4, k=2,
                              moe_every=1, moe_kwargs={"router": "softmax_topk", "aux_loss_weight": 0.0})
    cfg = train_mod.TrainConfig(model=model, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=0.25,
                                max_steps=max_steps, time_budget=None, grad_clip=0.5, eval_interval=0,
                                eval_tokens=512, log_interval=1, seed=5)
    with dist_rt.guard(ctx):
        res = train_mod.train(cfg, corpus, out, resume=resume, show_progress=False)
    if ctx.is_main:
        figures = {"losses": [h["loss"] for h in res["history"]], "val_loss": res["val_loss"],
                   "world": ctx.world_size}
        (out / f"result-{ctx.world_size}.json").write_text(json.dumps(figures))
    dist_rt.shutdown(ctx)


if __name__ == "__main__":
    main()
