"""Simulated annealing for chips: the shared annealer on hard macros, soft macros re-placed periodically.

The budget is cut into rounds. Each round runs the problem-agnostic `simulated_annealing` (moves:
swap, shift, mirror, random legal cell — the chip problem's `propose_move`) with the soft macros
held where they are, continuing one global geometric temperature schedule; between rounds the
soft macros are re-placed by a few force-directed iterations around the current hard macros and
the cost is re-evaluated. The best (hard placement, soft positions) pair seen is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from moeplace.place.chip.problem import ChipProblem
from moeplace.place.search import simulated_annealing
from moeplace.utils import progress as progress_bar


@dataclass
class ChipSearchResult:
    """Best chip placement found: hard-macro slots, soft-macro positions, cost terms, effort."""

    placement: np.ndarray
    soft_x: np.ndarray
    soft_y: np.ndarray
    terms: dict[str, float]
    evaluations: int
    wall_s: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (evals, seconds, best)
    interrupted: bool = False

    @property
    def cost(self) -> float:
        """The proxy cost."""
        return self.terms["proxy"]


def anneal_chip(problem: ChipProblem, *, budget_s: float | None = None, max_evals: int | None = None,
                seed: int = 0, init: np.ndarray | None = None, rounds: int = 20,
                fd_iterations: int = 5, t0: float | None = None, t_end: float | None = None,
                progress: bool = True) -> ChipSearchResult:
    """Anneal the hard macros of a ChipProblem (soft='fixed') with periodic force-directed refreshes."""
    if problem.soft != "fixed":
        raise ValueError("anneal_chip needs a ChipProblem with soft='fixed'")
    if budget_s is None and max_evals is None:
        raise ValueError("give budget_s or max_evals (or both)")
    start = time.perf_counter()
    if problem.num_nodes == 0:
        return soft_only(problem, fd_iterations * 4)
    rng = np.random.default_rng(seed)
    current = problem.initial_placement() if init is None else np.asarray(init, np.int64).copy()
    problem.refresh_soft(current, fd_iterations * 4)
    evals0 = problem.evaluations
    best_terms = problem.terms(current)
    best = (current.copy(), problem.soft_x.copy(), problem.soft_y.copy())
    history = [(1, time.perf_counter() - start, best_terms["proxy"])]
    if t0 is None:
        t0 = _probe_temperature(problem, current, best_terms["proxy"], rng)
    t_end = t0 / 1000.0 if t_end is None else t_end
    bar = progress_bar(total=rounds, desc="annealing", unit="round") if progress else None
    interrupted = False

    def used() -> float:
        f = 0.0
        if budget_s is not None:
            f = (time.perf_counter() - start) / budget_s
        if max_evals is not None:
            f = max(f, (problem.evaluations - evals0) / max_evals)
        return f

    try:
        for r in range(rounds):
            f0, f1 = used(), (r + 1) / rounds
            if f0 >= 1.0:
                break
            seg_s = None if budget_s is None else max((f1 - f0) * budget_s, 1e-3)
            seg_e = None if max_evals is None else max(int((f1 - f0) * max_evals), 1)
            res = simulated_annealing(problem, budget_s=seg_s, max_evals=seg_e,
                                      seed=int(rng.integers(2**31)), init=current,
                                      t0=t0 * (t_end / t0) ** min(f0, 1.0),
                                      t_end=t0 * (t_end / t0) ** min(f1, 1.0), progress=False)
            current = res.placement  # continue from the round's best
            interrupted = interrupted or res.interrupted  # Ctrl-C inside the round: finish it, stop
            before = (problem.soft_x.copy(), problem.soft_y.copy())
            terms_before = problem.terms(current)
            problem.refresh_soft(current, fd_iterations)
            terms = problem.terms(current)
            if terms["proxy"] > terms_before["proxy"]:  # the refresh did not pay: keep the old soft macros
                problem.soft_x, problem.soft_y = before
                terms = terms_before
            if terms["proxy"] < best_terms["proxy"]:
                best_terms = terms
                best = (current.copy(), problem.soft_x.copy(), problem.soft_y.copy())
                history.append((problem.evaluations - evals0, time.perf_counter() - start, terms["proxy"]))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(best=f"{best_terms['proxy']:.4f}", evals=problem.evaluations - evals0)
            if interrupted:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    placement, sx, sy = best
    problem.soft_x, problem.soft_y = sx.copy(), sy.copy()
    return ChipSearchResult(placement, sx, sy, best_terms, problem.evaluations - evals0,
                            time.perf_counter() - start, history, interrupted)


def soft_only(problem: ChipProblem, iterations: int) -> ChipSearchResult:
    """No movable hard macro: only the soft macros are placed (force-directed)."""
    start, evals0 = time.perf_counter(), problem.evaluations
    placement = np.zeros(0, dtype=np.int64)
    x, y, _ = problem.place_soft(placement, iterations)
    soft = problem.netlist.soft_macros
    problem.soft_x, problem.soft_y = x[soft].copy(), y[soft].copy()
    soft_mode, problem.soft = problem.soft, "fixed"
    try:
        terms = problem.terms(placement)
    finally:
        problem.soft = soft_mode
    return ChipSearchResult(placement, problem.soft_x.copy(), problem.soft_y.copy(), terms,
                            problem.evaluations - evals0, time.perf_counter() - start)


def _probe_temperature(problem: ChipProblem, placement: np.ndarray, cost: float,
                       rng: np.random.Generator, probes: int = 20) -> float:
    """Mean |Δcost| of a few random moves: a start temperature that accepts most uphill moves."""
    deltas = []
    for _ in range(probes * 3):
        cand = problem.propose_move(placement, rng)
        if cand is not None:
            deltas.append(abs(problem.cost(cand) - cost))
        if len(deltas) >= probes:
            break
    d = float(np.mean(deltas)) if deltas else 0.0
    return d if d > 0 and math.isfinite(d) else 1e-3
