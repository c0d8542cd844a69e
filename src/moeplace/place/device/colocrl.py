"""The 2017 device-placement method (Mirhoseini et al., 2017) run on the placement core: the seq2seq
policy (`seq2seq.Seq2SeqPlacer`) trained by `moeplace.rl.SequenceREINFORCE`, reward -sqrt(step time)
(out-of-memory placements get the problem's penalty as their step time), the best placement
sampled kept. Budgets are iterations (reproducible for a seed) with wall time as a cap.

`seq2seq_search(..., with_local_search=False)` is the method `rl`: policy gradient alone (with the
self-imitation term of the trainer). `with_local_search=True` is `rl+ls`: each batch's best
sample is also improved by a short descent (expert iteration, Anthony et al. 2017: the result joins
the self-imitation buffer, so the policy learns what the search found), and at the end the
placement core's local-search stage (`moeplace.place.local_search.local_search`: multi-start
descent, annealing with window moves, iterated local search) starts from each run's best placements.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.rl_config import RLConfig
from moeplace.place.device.seq2seq import Seq2SeqPlacer, imitate
from moeplace.place.local_search import CachedCost, descend, local_search
from moeplace.place.search import SearchResult
from moeplace.rl.reinforce import EliteBuffer, SequenceREINFORCE
from moeplace.utils import progress


def topological_order(problem: DevicePlacementProblem) -> np.ndarray:
    """The groups in a topological order (by their first op), for the annealing's window moves."""
    return np.argsort(problem.graph.group_first_op(), kind="stable")


def seq2seq_search(
    problem: DevicePlacementProblem,
    config: RLConfig | None = None,
    *,
    with_local_search: bool = False,
    budget_s: float | None = None,
    seed: int = 0,
    init: np.ndarray | None = None,
    show_progress: bool = True,
    callback: Callable[[int, float], bool | None] | None = None,
) -> SearchResult:
    """REINFORCE on the seq2seq placer: `config.restarts` independent runs (seeds seed, seed+1, ...)
    of `iterations / restarts` iterations each (and at most `budget_s / restarts` seconds each; with
    `budget_s` alone and the local search on, the runs share `1 - local_search.share` of it and the
    final stage the rest). With `config.imitation` and `init`, each of the first `imitate_runs` runs
    first fits its policy to `init`. `callback(iteration, best cost)` returning True stops training.

    Returns the best placement sampled (or reached by local search) over all runs, the last run's
    policy, `evaluations` = simulator calls (distinct placements per run, plus the final stage's),
    and in `extra`: iterations, samples, curve (per iteration: batch mean cost, distinct placements),
    final_descents, final_kicks, final_anneal_evals and cost_before_final.
    """
    cfg = config if config is not None else RLConfig()
    max_iters = cfg.iterations
    if budget_s is None and max_iters is None:
        raise ValueError("give budget_s or config.iterations (or both)")
    ls = cfg.local_search if with_local_search else None
    final_on = ls is not None and ls.calls > 0
    train_s = budget_s  # the runs' time: a wall-time budget alone keeps a share for the final stage
    if budget_s is not None and max_iters is None and final_on:
        train_s = budget_s * (1.0 - ls.share)
    feats = torch.as_tensor(problem.node_features())
    start = time.perf_counter()
    best, best_cost, samples, it = None, math.inf, 0, 0
    policy: Seq2SeqPlacer | None = None
    counter = [0]  # simulator calls over all runs
    history: list[tuple[int, float, float]] = []
    buffers: list[list[tuple[float, np.ndarray]]] = []  # each run's best placements for the final stage
    curve: list[tuple[float, int]] = []
    name = "rl+ls" if with_local_search else "rl"
    bar = progress(total=max_iters, desc=f"{name} (seq2seq REINFORCE)", unit="it", disable=not show_progress)
    interrupted, stop = False, False
    final = {"final_descents": 0, "final_kicks": 0, "final_anneal_evals": 0}
    before_final: float | None = None  # set when the final stage starts (not after a Ctrl-C before it)
    keep = max(cfg.reinforce.sil_size, ls.starts if ls is not None else 0)
    try:
        for run in range(cfg.restarts):
            run_start = time.perf_counter()
            run_iters = None if max_iters is None else max_iters * (run + 1) // cfg.restarts - it
            torch.manual_seed(seed + run)
            np_rng = np.random.default_rng(seed + run)
            policy = Seq2SeqPlacer(feats.shape[1], problem.num_slots, hidden=cfg.hidden)
            if (init is not None and cfg.imitation and cfg.imitation_steps > 0
                    and (cfg.imitate_runs is None or run < cfg.imitate_runs)):
                opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
                imitate(policy, opt, feats, init, cfg.imitation_steps)
            algo = SequenceREINFORCE(policy, **{**dataclasses.asdict(cfg.reinforce), "seed": seed + run})
            cost_fn = CachedCost(problem, counter)
            elite = EliteBuffer(keep)  # the first sil_size: self-imitation; the first starts: final stage
            improve = None
            if ls is not None and ls.in_loop_calls > 0:
                def improve(p, c, cost_fn=cost_fn, rng=np_rng, calls=ls.in_loop_calls):
                    return descend(p, c, cost_fn, problem.num_slots, rng, calls)
            run_it = 0
            while (train_s is None or time.perf_counter() - run_start < train_s / cfg.restarts) and (
                run_iters is None or run_it < run_iters
            ):
                # progress through the run: by iterations when counted (so a seed repeats whatever the
                # machine's speed; the time budget is then only a cap), else by the time budget
                frac = (run_it / run_iters if run_iters
                        else (time.perf_counter() - run_start) * cfg.restarts / train_s)
                b = algo.step(feats, cost_fn, frac, elite, improve)
                samples += len(b.sequences)
                curve.append((float(b.costs.mean()), len({q.tobytes() for q in b.sequences})))
                k = int(np.argmin(b.found_costs))
                if b.found_costs[k] < best_cost:
                    best, best_cost = b.found[k].copy(), float(b.found_costs[k])
                    history.append((counter[0], time.perf_counter() - start, best_cost))
                it += 1
                run_it += 1
                bar.update(1)
                bar.set_postfix(best_ms=f"{best_cost * 1e3:.2f}", mean_ms=f"{b.costs.mean() * 1e3:.2f}")
                if callback is not None and callback(it, best_cost):
                    stop = True
                    break
            buffers.append(elite.best(ls.starts) if ls is not None else [])
            if stop:
                break
        before_final = best_cost
        if final_on and best is not None:  # the answer: the best local optimum reached
            deadline = math.inf if budget_s is None else start + budget_s
            r = local_search(problem, buffers + [[(best_cost, best)]], ls, seed, deadline,
                             topological_order(problem), bar)
            if r is not None:
                counter[0] += r.evaluations
                interrupted = r.interrupted
                final = {"final_descents": r.extra["descents"], "final_kicks": r.extra["kicks"],
                         "final_anneal_evals": r.extra["anneal_evals"]}
                if r.cost < best_cost:
                    best, best_cost = r.placement, r.cost
            history.append((counter[0], time.perf_counter() - start, best_cost))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    extra = {"iterations": it, "samples": samples, "curve": curve, **final,
             "cost_before_final": best_cost if before_final is None else before_final}
    return SearchResult(best, best_cost, counter[0], time.perf_counter() - start, history, interrupted,
                        policy=policy, extra=extra)
