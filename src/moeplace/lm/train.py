"""Train a language model: AdamW, warm-up + cosine decay over a step or time budget, exact resume.

One process:  moeplace lm train --out runs/lm
Many (later): torchrun --nproc_per_node N -m moeplace lm train --out runs/lm

The loop is plain on purpose: build model -> optimizer -> for each step: global batch of (seed,
step), forward, loss + MoE aux losses, backward, clip, step -> periodic eval -> checkpoint.
Batches are a pure function of (seed, step), so the data position is just the step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from moeplace.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from moeplace.errors import CheckpointError, DivergenceError, InputError
from moeplace.lm import distributed as dist_rt
from moeplace.lm.config import TrainConfig, train_config_from_dict, train_config_to_dict
from moeplace.lm.data import Corpus, check_context, eval_windows, get_batch
from moeplace.lm.models import build_model, config_to_dict, describe
from moeplace.lm.softmax import unigram_proposal
from moeplace.moe import aux_loss, moe_stats
from moeplace.numerics import check_finite, diverges_at
from moeplace.runs import append_jsonl, claim_run_dir, truncate_jsonl
from moeplace.utils import progress, seed_everything

CKPT_NAME = "ckpt.safetensors"
__all__ = ["TrainConfig", "evaluate", "load_for_inference", "lr_at", "train", "train_config_from_dict",
           "train_config_to_dict"]
RUN_FILES = (CKPT_NAME, "ckpt.json", "metrics.jsonl", dist_rt.SHARDED_DIR, "tb")  # what marks a run


def lr_at(progress_frac: float, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr over the first `warmup` of the run, then cosine decay to cfg.min_lr."""
    p = min(max(progress_frac, 0.0), 1.0)
    if cfg.warmup > 0 and p < cfg.warmup:
        return cfg.lr * (p / cfg.warmup)
    frac = (p - cfg.warmup) / max(1e-12, 1.0 - cfg.warmup)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * frac)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (2-D and stacked 3-D weights) only, as nanoGPT does."""
    params = [p for p in model.parameters() if p.requires_grad]
    seen: set[int] = set()
    decay, no_decay = [], []
    for p in params:
        if id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def moe_summary(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Per-MoE-layer load statistics of the last forward, JSON-ready (empty for a dense model)."""
    out = []
    for s in moe_stats(model):
        out.append({k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in s.items()})
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Any, block_size: int, batch_size: int = 64,
             max_tokens: int | None = None) -> float:
    """Mean next-token cross-entropy (nats) over fixed non-overlapping windows of a split."""
    was_training = model.training
    model.eval()
    x, y = eval_windows(data, block_size, max_tokens)
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    total, count = 0.0, 0
    for i in range(0, x.size(0), batch_size):
        _, loss = model(x[i: i + batch_size], y[i: i + batch_size])
        n = y[i: i + batch_size].numel()
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl (and TensorBoard scalars when installed)."""

    def __init__(self, out_dir: Path, enabled: bool = True):
        self.path = out_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        """Append a record; numbers also go to TensorBoard under their key."""
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record.get("step", 0))

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.tb is not None:
            self.tb.close()


def checkpoint_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int,
                     elapsed: float, corpus: Corpus, extra: dict | None = None) -> dict[str, Any]:
    """Everything --resume needs: weights, optimizer, RNG, step (= data position), config, vocabulary."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "step": step,
        "elapsed": elapsed,
        "data_position": {"seed": cfg.seed, "step": step},
        "config": train_config_to_dict(cfg),
        "corpus": {"source": corpus.source, "level": corpus.level, "vocab": corpus.vocab},
        **(extra or {}),
    }


def _kept_note(out: Path) -> str:
    """What a diverged run leaves behind: its last good checkpoint (and its step), or none."""
    sidecar = (out / CKPT_NAME).with_suffix(".json")
    if (out / dist_rt.SHARDED_DIR).is_dir():
        return f"last good checkpoint kept in {out / dist_rt.SHARDED_DIR}"
    if not (out / CKPT_NAME).is_file():
        return "no checkpoint was written"
    try:
        step = dict(json.loads(sidecar.read_text()).get("__dict__", [])).get("step")
    except (OSError, ValueError, TypeError, AttributeError):
        step = None
    return f"last good checkpoint kept: {out / CKPT_NAME}" + (f" (step {step})" if step is not None else "")


def load_for_inference(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Model (eval mode) and checkpoint state from a run folder or checkpoint file."""
    p = Path(path)
    if dist_rt.find_sharded(p, CKPT_NAME) is not None:  # written by a torchrun (expert-parallel) run
        return dist_rt.load_sharded_for_inference(dist_rt.find_sharded(p, CKPT_NAME))
    if p.is_dir():
        p = p / CKPT_NAME
    state = load_checkpoint(p)
    for key in ("model", "config", "corpus"):
        if key not in state:
            raise CheckpointError(f"{p}: not a language-model checkpoint (no {key!r})")
    try:
        cfg = train_config_from_dict(state["config"], str(p))
        model = build_model(cfg.model)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{p}: model config does not build a model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    load_model_state(model, state["model"], str(p))
    model.eval()
    return model, state


def train(cfg: TrainConfig, corpus: Corpus, out_dir: str | Path, resume: bool = False,
          callback: Callable[[int, dict], None] | None = None, write_files: bool = True,
          show_progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Train cfg.model on corpus; write metrics.jsonl and ckpt.safetensors in out_dir; return final figures.

    Ctrl-C (KeyboardInterrupt, also when raised by `callback`) saves a checkpoint and returns with
    `interrupted: True`; `resume=True` continues from out_dir's checkpoint exactly. A fresh run into
    a folder holding another run is refused (InputError) unless `overwrite` (which deletes that run).
    A non-finite loss or gradient stops training with a DivergenceError naming the step; the last
    good checkpoint stays as it was.
    """
    out = Path(out_dir)
    ctx = dist_rt.context()  # torchrun: expert-parallel MoE layers, data-parallel rest (lm/distributed.py)
    if write_files and ctx.is_main:
        claim_run_dir(out, RUN_FILES, resume=resume, overwrite=overwrite)
    if cfg.model.vocab_size != corpus.vocab_size:
        raise InputError(f"model vocab_size {cfg.model.vocab_size} != corpus vocabulary {corpus.vocab_size}")
    check_context(corpus, cfg.block_size)
    seed_everything(cfg.seed)
    model = build_model(cfg.model).to(ctx.device)  # built on the CPU from the seed, then moved
    if getattr(cfg.model, "softmax_samples", 0):  # sampled softmax draws words by training-split frequency
        model.proposal = unigram_proposal(corpus.train, corpus.vocab_size)
    model = dist_rt.parallelize(model, ctx)
    optimizer = make_optimizer(model, cfg)
    step, elapsed0 = 0, 0.0
    ckpt = out / CKPT_NAME
    if resume and (ctx.distributed or dist_rt.sharded_checkpoint(out, CKPT_NAME)):
        state = dist_rt.load_train_checkpoint(out, model, optimizer, ctx, config_to_dict(cfg.model),
                                              CKPT_NAME)  # any world size, sharded or single file
        torch.set_rng_state(state["rng"]["torch"])
        step, elapsed0 = int(state["step"]), float(state["elapsed"])
    elif resume:
        state = load_checkpoint(ckpt)
        saved = state.get("config", {}).get("model")
        if saved is not None and saved != config_to_dict(cfg.model):
            raise CheckpointError(f"{ckpt}: does not fit the model (checkpoint model config differs)")
        load_model_state(model, state["model"], str(ckpt))
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{ckpt}: optimizer state does not fit the model ({e})") from None
        torch.set_rng_state(state["rng"]["torch"])
        step, elapsed0 = int(state["step"]), float(state["elapsed"])
    if write_files:
        out.mkdir(parents=True, exist_ok=True)
        if ctx.is_main and resume:
            truncate_jsonl(out / "metrics.jsonl", step)
    log = MetricsLog(out, enabled=write_files and ctx.is_main)
    tokens_per_step = cfg.batch_size * cfg.block_size
    model.train()

    def progress_frac(s: int, secs: float) -> float:
        frac = s / cfg.max_steps
        if cfg.time_budget:
            frac = max(frac, secs / cfg.time_budget)
        return frac

    def validate(s: int, lr: float | None, max_tokens: int | None) -> float:
        """Validation loss after step s; DivergenceError when it is not finite."""
        with diverges_at(f"step {s}", lr, "--lr"):
            v = evaluate(model, corpus.valid, cfg.block_size, max_tokens=max_tokens)
        check_finite(f"step {s}", lr, "--lr", validation_loss=v)
        return v

    def save(s: int, secs: float) -> None:
        check_finite(f"step {s}", None, "--lr", val_loss=val_loss)  # never checkpoint a diverged model
        if write_files and ctx.distributed:
            dist_rt.save_train_checkpoint(out, checkpoint_state(model, optimizer, cfg, s, secs, corpus),
                                          model, optimizer, ctx)
        elif write_files:
            save_checkpoint(ckpt, checkpoint_state(model, optimizer, cfg, s, secs, corpus))

    bar = progress(total=100, desc=describe(model).split(":")[0], unit="%", disable=not show_progress)
    bar.bar_format = "{l_bar}{bar}| {n:.0f}/100% [{elapsed}<{remaining}{postfix}]"
    t0 = time.perf_counter()
    last_t, last_step = t0, step
    history: list[dict] = []
    val_loss: float | None = None  # the last evaluation's (checked before every checkpoint)
    interrupted = False
    loss_f = float("nan")
    train_moe: list[dict] = []
    try:
        while progress_frac(step, dist_rt.agree_time(elapsed0 + time.perf_counter() - t0, ctx)) < 1.0:
            elapsed = dist_rt.agree_time(elapsed0 + time.perf_counter() - t0, ctx)  # same on every rank
            lr = lr_at(progress_frac(step, elapsed), cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(corpus.train, cfg.batch_size, cfg.block_size, cfg.seed, step)
            x, y = dist_rt.local_batch(x, y, ctx)  # rows [rank::world] under torchrun
            at = f"step {step + 1}"
            with diverges_at(at, cfg.lr, "--lr"):  # NaN activations caught inside the model
                _, loss = model(x, y)
                aux = aux_loss(model)
            check_finite(at, cfg.lr, "--lr", loss=loss, aux_loss=aux)
            if (step + 1) % cfg.log_interval == 0:
                train_moe = moe_summary(model)  # load statistics of a training batch
            optimizer.zero_grad(set_to_none=True)
            (loss + aux).backward()
            norm = dist_rt.reduce_gradients(model, ctx, cfg.grad_clip)  # (all-reduce under torchrun) + clip
            check_finite(at, cfg.lr, "--lr", gradient_norm=norm)  # before the step: weights stay finite
            optimizer.step()
            step += 1
            loss_f = dist_rt.global_mean(loss, ctx)  # mean over ranks = the global-batch loss
            record = {"step": step, "loss": loss_f, "aux_loss": dist_rt.global_mean(aux, ctx), "lr": lr}
            if step % cfg.log_interval == 0:
                now = time.perf_counter()
                record["tok_per_s"] = tokens_per_step * (step - last_step) / max(1e-9, now - last_t)
                record["elapsed"] = elapsed0 + now - t0
                last_t, last_step = now, step
                log.write(record)
                bar.set_postfix_str(f"step {step} loss {loss_f:.3f} {record['tok_per_s']:.0f} tok/s")
                bar.n = min(100.0, 100 * progress_frac(step, record["elapsed"]))
                bar.refresh()
            history.append({"step": step, "loss": loss_f})
            if cfg.eval_interval and step % cfg.eval_interval == 0:
                val_loss = validate(step, cfg.lr, cfg.eval_tokens)
                log.write({"step": step, "val_loss": val_loss, "moe": moe_summary(model),
                           "elapsed": elapsed0 + time.perf_counter() - t0})
                save(step, elapsed0 + time.perf_counter() - t0)
            if callback is not None:
                callback(step, record)
    except KeyboardInterrupt:
        interrupted = True
    except DivergenceError as e:
        bar.close()
        log.close()
        raise DivergenceError(f"{e}; {_kept_note(out) if write_files else 'nothing written'}") from None
    elapsed = elapsed0 + time.perf_counter() - t0
    bar.n = min(100.0, 100 * progress_frac(step, elapsed))
    bar.close()
    result: dict[str, Any] = {"step": step, "tokens": step * tokens_per_step, "train_seconds": elapsed,
                              "train_loss": loss_f, "interrupted": interrupted,
                              "params": dist_rt.num_params(model, ctx),  # all ranks' experts counted
                              "flops_per_token": model.active_flops_per_token()}
    if not interrupted:
        try:  # evaluated before the checkpoint is written, so a diverged model is never saved
            val_loss = validate(step, cfg.lr, None)
        except KeyboardInterrupt:
            interrupted = result["interrupted"] = True
        except DivergenceError as e:
            log.close()
            raise DivergenceError(f"{e}; {_kept_note(out) if write_files else 'nothing written'}") from None
    save(step, elapsed)
    if not interrupted:
        result.update(val_loss=val_loss, val_ppl=math.exp(val_loss), moe=train_moe)
        log.write({"step": step, "val_loss": val_loss, "final": True, "moe": train_moe})
    log.close()
    result["model"] = model
    result["history"] = history
    return result
