"""Place with a pre-trained transfer policy: zero-shot (no weight change: the greedy placement and
batches of samples, the later ones given the best so far, within a budget of at most 2 s), then
optionally fine-tune the policy on this problem with RL alone (SequenceREINFORCE with
self-imitation, no local search) and keep the best placement seen."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.transfer import DeviceContext, TransferPlacer, context_of
from moeplace.place.search import SearchResult
from moeplace.rl.reinforce import EliteBuffer, SequenceREINFORCE
from moeplace.utils import progress

# Chosen on new configs of RNN-LM and Transformer graphs (training families of every held-out run;
# docs/benchmarks.md): a batch of 64 costs little more than 16 (the sampler's per-step work is
# batched); with the few updates a 20-s budget allows, a learning rate of 2e-3 and a strong
# self-imitation weight moved the policy furthest; an entropy bonus of 1.0 falling to 0.1 keeps it
# sampling new placements (at 0.01 it collapsed onto a few within seconds); the incumbent's devices
# get +1.5 logits (improvement mode), so samples are variations of the best placement so far.
FINETUNE_RL = {"learning_rate": 2e-3, "batch": 64, "reward": "neg_sqrt", "ent_coef": 1.0,
               "ent_coef_end": 0.1, "epochs": 1, "sil_coef": 1.0, "sil_size": 8}
INCUMBENT_LOGIT = 1.5
# Those values hold for graphs of GROUPS_REF groups (the RNN-LM graphs they were chosen on); on a
# graph of G groups the entropy weights are scaled by GROUPS_REF / G and the incumbent logit raised
# by log(G / GROUPS_REF), so a sample moves about as many groups off the incumbent at any size (with
# the values unscaled, 154-group graphs moved about half their groups per sample and never improved).
GROUPS_REF = 24
# At placement time (zero-shot and fine-tuning, not pre-training) each step's logits are capped to this
# standard deviation over the devices (`TransferPlacer._logits`). Measured on held-out Inception graphs
# (docs/benchmarks.md): uncapped, the policy pre-trained on the other families gave logit gaps of ~370
# there, every sample was the same one-device placement and 18.5 s of fine-tuning changed nothing; with
# the cap at 1.5 fine-tuning reached SA on 2 of 4 pairs in the benchmark run (1.5 was chosen there).
LOGIT_STD_CAP = 1.5
# Zero-shot sampling time by default, and the most it may take (the bound for a placement made
# without training); batches after the first one are drawn given the best so far (improvement mode).
ZERO_SHOT_S, ZERO_SHOT_MAX_S = 1.5, 2.0


def scaled_settings(groups: int, incumbent_logit: float, rl: dict | None = None) -> tuple[dict, float]:
    """The fine-tuning settings (FINETUNE_RL with `rl` on top) and incumbent logit for `groups` groups."""
    settings = {**FINETUNE_RL, **(rl or {})}
    scale = GROUPS_REF / max(groups, 1)
    for key in ("ent_coef", "ent_coef_end"):
        if settings.get(key) is not None:
            settings[key] = settings[key] * scale
    logit = max(incumbent_logit - np.log(scale), 0.0) if incumbent_logit > 0 else 0.0
    return settings, float(logit)


def incumbent_prior(ctx: DeviceContext, placement: np.ndarray, logit: float) -> Tensor | None:
    """`[G, D]` logits (topological order) adding `logit` to each group's device in `placement`."""
    if logit <= 0:
        return None
    prior = torch.zeros(len(placement), ctx.num_devices)
    prior[torch.arange(len(placement)), torch.as_tensor(placement)[ctx.order]] = logit
    return prior


def zero_shot(problem: DevicePlacementProblem, policy: TransferPlacer, ctx: DeviceContext,
              cost: Callable[[np.ndarray], float], *, budget_s: float = 0.0, samples: int = 127,
              gen: torch.Generator, incumbent_logit: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """The policy's placements without any weight change: the greedy one and a batch of `samples`,
    then, while `budget_s` (capped at ZERO_SHOT_MAX_S) leaves time for another batch, more batches;
    with `incumbent_logit` > 0 those are drawn in improvement mode (the best so far is an input).
    The first batch is the same draw at any budget, so more time is never worse. Returns the
    placements, their costs and the number of batches after the greedy one."""
    t0 = time.perf_counter()
    greedy, _ = policy.sample_with_logp(ctx, 1, greedy=True)
    drawn, _ = policy.sample_with_logp(ctx, samples, generator=gen)
    cands = [greedy.numpy(), drawn.numpy()]
    costs = [np.array([cost(p) for p in c]) for c in cands]
    budget_s, batches = min(budget_s, ZERO_SHOT_MAX_S), 1
    logit = scaled_settings(problem.num_nodes, incumbent_logit)[1]
    first = np.concatenate(costs)  # greedy + first batch; the cheapest so far is kept as batches come in
    j = int(np.argmin(first))
    best, best_cost = np.concatenate(cands)[j], float(first[j])
    while (time.perf_counter() - t0) * (batches + 1) / batches <= budget_s:  # the next batch ends in time
        ctx.prior = incumbent_prior(ctx, best, logit)
        drawn, _ = policy.sample_with_logp(ctx, samples, generator=gen)
        cands.append(drawn.numpy())
        costs.append(np.array([cost(p) for p in cands[-1]]))
        j = int(np.argmin(costs[-1]))
        if costs[-1][j] < best_cost:
            best, best_cost = cands[-1][j], float(costs[-1][j])
        batches += 1
    ctx.prior = None
    return np.concatenate(cands), np.concatenate(costs), batches


def transfer_search(problem: DevicePlacementProblem, policy: TransferPlacer, *, finetune_s: float = 0.0,
                    zero_shot_s: float = ZERO_SHOT_S, samples: int = 127, seed: int = 0,
                    show_progress: bool = True,
                    incumbent_logit: float = INCUMBENT_LOGIT, zero_shot_incumbent: bool = True,
                    rl: dict | None = None, logit_std_cap: float | None = LOGIT_STD_CAP) -> SearchResult:
    """Zero-shot placement (`zero_shot`, `zero_shot_s` seconds; 0 = greedy + one batch of `samples`),
    then `finetune_s` seconds of RL on a copy of the policy, improving the incumbent
    (`incumbent_logit` > 0) or from scratch (0); `rl` overrides FINETUNE_RL; the policy's per-step
    logits are capped to `logit_std_cap` (None: off) throughout. `extra`:
    zero_shot_cost, zero_shot_s, zero_shot_batches, updates."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    policy = copy.deepcopy(policy)  # the caller's (e.g. the packaged) policy is left untouched
    ctx = context_of(problem)
    ctx.cache = {}  # scoring what was just sampled reuses the sampler's step features
    ctx.logit_std_cap = logit_std_cap
    seen: dict[bytes, float] = {}

    def cost(p: np.ndarray) -> float:
        """Step time, simulated once per distinct placement (the simulator is deterministic)."""
        key = p.tobytes()
        if key not in seen:
            seen[key] = problem.cost(p)
        return seen[key]

    zs_logit = incumbent_logit if zero_shot_incumbent else 0.0
    cands, costs, batches = zero_shot(problem, policy, ctx, cost, budget_s=zero_shot_s, samples=samples,
                                      gen=gen, incumbent_logit=zs_logit)
    k = int(np.argmin(costs))
    best, best_cost = cands[k].copy(), float(costs[k])
    evaluations = len(seen)
    zero_s = time.perf_counter() - start
    history = [(evaluations, zero_s, best_cost)]
    updates, interrupted = 0, False
    if finetune_s > 0:
        settings, incumbent_logit = scaled_settings(problem.num_nodes, incumbent_logit, rl)
        algo = SequenceREINFORCE(policy, **{**settings, "seed": seed})
        elite = EliteBuffer(settings["sil_size"])
        ctx.prior = incumbent_prior(ctx, best, incumbent_logit)
        elite.add(cands, costs)
        bar = progress(total=None, desc="transfer fine-tune (RL)", unit="it", disable=not show_progress)
        t0 = time.perf_counter()
        try:
            while (elapsed := time.perf_counter() - t0) < finetune_s:
                b = algo.step(ctx, cost, elapsed / finetune_s, elite)
                updates += 1
                j = int(np.argmin(b.costs))
                if b.costs[j] < best_cost:
                    best, best_cost = b.sequences[j].copy(), float(b.costs[j])
                    ctx.prior = incumbent_prior(ctx, best, incumbent_logit)  # the new state to improve
                    history.append((len(seen), time.perf_counter() - start, best_cost))
                bar.update(1)
                bar.set_postfix(best_ms=f"{best_cost * 1e3:.2f}")
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
    evaluations = len(seen)
    extra = {"zero_shot_cost": float(costs[k]), "zero_shot_s": zero_s, "zero_shot_batches": batches,
             "updates": updates, "finetune_s": finetune_s}
    return SearchResult(best, best_cost, evaluations, time.perf_counter() - start, history, interrupted,
                        policy=policy, extra=extra)
