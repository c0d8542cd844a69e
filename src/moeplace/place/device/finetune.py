"""Place with a pre-trained transfer policy: zero-shot (the greedy placement and the best of a batch
of samples drawn in one batched pass, well under 2 s), then optionally fine-tune the policy on this
problem with RL alone (SequenceREINFORCE with self-imitation, no local search) and keep the best
placement seen."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.transfer import TransferPlacer, context_of
from moeplace.place.search import SearchResult
from moeplace.rl.reinforce import EliteBuffer, SequenceREINFORCE
from moeplace.utils import progress

# fine-tuning starts from a trained policy: a small entropy bonus keeps it from being washed out; a
# batch of 64 costs little more than 16 (the sampler's per-step work is batched), so more placements
# are tried per second; with the few updates a 20-s budget allows, a learning rate of 2e-3 and a
# strong self-imitation weight moved the policy furthest (chosen on graphs of the training families)
FINETUNE_RL = {"learning_rate": 2e-3, "batch": 64, "reward": "neg_sqrt", "ent_coef": 0.01,
               "ent_coef_end": 1e-3, "epochs": 1, "sil_coef": 1.0, "sil_size": 8}


def transfer_search(problem: DevicePlacementProblem, policy: TransferPlacer, *, finetune_s: float = 0.0,
                    samples: int = 127, seed: int = 0, show_progress: bool = True) -> SearchResult:
    """Zero-shot placement (greedy + best of `samples`), then `finetune_s` seconds of RL on a copy of
    the policy. `extra`: zero_shot_cost, zero_shot_s, updates."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    policy = copy.deepcopy(policy)  # the caller's (e.g. the packaged) policy is left untouched
    ctx = context_of(problem)
    greedy, _ = policy.sample_with_logp(ctx, 1, greedy=True)
    drawn, _ = policy.sample_with_logp(ctx, samples, generator=gen)
    cands = np.concatenate([greedy.numpy(), drawn.numpy()])
    costs = np.array([problem.cost(p) for p in cands])
    k = int(np.argmin(costs))
    best, best_cost = cands[k].copy(), float(costs[k])
    evaluations = len(cands)
    zero_s = time.perf_counter() - start
    history = [(evaluations, zero_s, best_cost)]
    updates, interrupted = 0, False
    if finetune_s > 0:
        algo = SequenceREINFORCE(policy, **{**FINETUNE_RL, "seed": seed})
        elite = EliteBuffer(FINETUNE_RL["sil_size"])
        elite.add(cands, costs)
        bar = progress(total=None, desc="transfer fine-tune (RL)", unit="it", disable=not show_progress)
        t0 = time.perf_counter()
        try:
            while (elapsed := time.perf_counter() - t0) < finetune_s:
                b = algo.step(ctx, problem.cost, elapsed / finetune_s, elite)
                updates += 1
                evaluations += len(b.costs)
                j = int(np.argmin(b.costs))
                if b.costs[j] < best_cost:
                    best, best_cost = b.sequences[j].copy(), float(b.costs[j])
                    history.append((evaluations, time.perf_counter() - start, best_cost))
                bar.update(1)
                bar.set_postfix(best_ms=f"{best_cost * 1e3:.2f}")
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
    extra = {"zero_shot_cost": float(costs[k]), "zero_shot_s": zero_s, "updates": updates,
             "finetune_s": finetune_s}
    return SearchResult(best, best_cost, evaluations, time.perf_counter() - start, history, interrupted,
                        policy=policy, extra=extra)
