"""Problem-agnostic placement search: random legal rollouts and simulated annealing.

Both work through the PlacementProblem protocol only, count cost evaluations, stop at a wall-time
or evaluation budget, show a progress bar with the best cost so far, keep the best placement when
interrupted with Ctrl-C, and repeat exactly for a fixed seed and evaluation budget. A problem with
smarter moves than "relocate one node / swap two nodes" supplies `propose_move(placement, rng)`.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moeplace.errors import InputError
from moeplace.place.core import UNPLACED, PlacementProblem, empty_placement
from moeplace.utils import progress as progress_bar

_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)


def parse_budget(text: str | float, name: str = "--budget", allow_off: bool = False) -> float:
    """Seconds in a budget such as '90s', '30m', '1h', '1.5h' or '120' (plain number = seconds): the one
    duration parser of the CLI. With `allow_off`, '0', 'none' and 'off' mean no time budget (0.0)."""
    if allow_off and str(text).strip().lower() in ("0", "0s", "none", "off"):
        return 0.0
    m = _BUDGET_RE.match(str(text))
    if m is None:
        raise InputError(f"{name}: cannot read {text!r}; use e.g. 90s, 30m or 1h")
    unit = (m.group(2) or "s").lower()
    seconds = float(m.group(1)) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[unit]
    if seconds <= 0:
        raise InputError(f"{name}: must be positive, got {text!r}")
    return seconds


@dataclass
class SearchResult:
    """The best placement a search found, its cost, and what it took to find it."""

    placement: np.ndarray
    cost: float
    evaluations: int
    wall_s: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (evals, seconds, best)
    interrupted: bool = False
    accepted: int = 0
    policy: Any = None  # the trained policy (RL searches only)
    extra: dict[str, Any] = field(default_factory=dict)  # the method's own counts (iterations, kicks, ...)


class _Budget:
    """Tracks evaluations and wall time against the budget, the best result, and the progress bar."""

    def __init__(self, budget_s: float | None, max_evals: int | None, desc: str, show: bool) -> None:
        if budget_s is None and max_evals is None:
            raise ValueError("give budget_s or max_evals (or both)")
        if budget_s is not None and budget_s <= 0:
            raise ValueError(f"budget_s must be positive, got {budget_s}")
        if max_evals is not None and max_evals < 1:
            raise ValueError(f"max_evals must be >= 1, got {max_evals}")
        self.budget_s, self.max_evals = budget_s, max_evals
        self.start = time.perf_counter()
        self.evaluations = 0
        self.best_cost = math.inf
        self.best: np.ndarray | None = None
        self.history: list[tuple[int, float, float]] = []
        self.bar = progress_bar(total=max_evals, desc=desc, unit="eval") if show else None
        self._last_post = 0.0
        self.interrupted = False

    def elapsed(self) -> float:
        """Seconds since the search started."""
        return time.perf_counter() - self.start

    def fraction(self) -> float:
        """How much of the budget is used (time or evaluations, whichever is further), in [0, 1+]."""
        f = 0.0
        if self.max_evals is not None:
            f = self.evaluations / self.max_evals
        if self.budget_s is not None:
            f = max(f, self.elapsed() / self.budget_s)
        return f

    def record(self, placement: np.ndarray, cost: float) -> bool:
        """Count one evaluation; keep it if best. Returns True when it is a new best."""
        self.evaluations += 1
        improved = cost < self.best_cost
        if improved:
            self.best_cost, self.best = float(cost), placement.copy()
            self.history.append((self.evaluations, self.elapsed(), self.best_cost))
        if self.bar is not None:
            self.bar.update(1)
            now = time.perf_counter()
            if improved or now - self._last_post > 0.5:
                self.bar.set_postfix(best=f"{self.best_cost:.4f}", refresh=False)
                self._last_post = now
        return improved

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Run a search: Ctrl-C keeps the best so far (re-raised if there is none); the bar closes."""
        try:
            yield
        except KeyboardInterrupt:
            self.interrupted = True
            if self.best is None:
                raise
        finally:
            if self.bar is not None:
                self.bar.close()

    def result(self, accepted: int = 0) -> SearchResult:
        """The search's result so far."""
        assert self.best is not None
        return SearchResult(self.best, self.best_cost, self.evaluations, self.elapsed(),
                            self.history, self.interrupted, accepted)


def random_rollout(problem: PlacementProblem, rng: np.random.Generator) -> np.ndarray:
    """Place nodes in order, each on a uniformly random legal slot; stops (incomplete) at a dead end."""
    placement = empty_placement(problem)
    for node in range(problem.num_nodes):
        legal = np.flatnonzero(problem.legal_mask(placement, node))
        if legal.size == 0:
            break
        placement[node] = rng.choice(legal)
    return placement


def generic_move(problem: PlacementProblem, placement: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray | None:
    """Relocate one random node to a random legal slot, or swap two nodes' slots if both stay legal."""
    n = problem.num_nodes
    new = placement.copy()
    a = int(rng.integers(n))
    if n >= 2 and rng.random() < 0.5:
        b = int(rng.integers(n - 1))
        b += b >= a
        sa, sb = new[a], new[b]
        if sa == sb:
            return None
        new[a] = new[b] = UNPLACED
        if not problem.legal_mask(new, b)[sa]:
            return None
        new[b] = sa
        if not problem.legal_mask(new, a)[sb]:
            return None
        new[a] = sb
        return new
    new[a] = UNPLACED
    mask = np.asarray(problem.legal_mask(new, a), dtype=bool).copy()
    mask[placement[a]] = False
    legal = np.flatnonzero(mask)
    if legal.size == 0:
        return None
    new[a] = rng.choice(legal)
    return new


def random_search(problem: PlacementProblem, *, budget_s: float | None = None,
                  max_evals: int | None = None, seed: int = 0, progress: bool = True) -> SearchResult:
    """Best of many uniformly random legal rollouts (the simplest baseline)."""
    rng = np.random.default_rng(seed)
    budget = _Budget(budget_s, max_evals, "random search", progress)
    with budget.running():
        while budget.evaluations == 0 or budget.fraction() < 1.0:
            placement = random_rollout(problem, rng)
            budget.record(placement, float(problem.cost(placement)))
    return budget.result()


def _propose(problem: PlacementProblem, placement: np.ndarray,
             rng: np.random.Generator) -> np.ndarray | None:
    """The problem's own move if it has one, else the generic relocate/swap move."""
    hook = getattr(problem, "propose_move", None)
    if hook is not None:
        return hook(placement, rng)
    return generic_move(problem, placement, rng)


def _initial(problem: PlacementProblem, rng: np.random.Generator) -> np.ndarray:
    """The problem's starting placement if it has one, else the first complete random rollout."""
    hook = getattr(problem, "initial_placement", None)
    if hook is not None:
        init = hook()
        if init is not None:
            return np.asarray(init, dtype=np.int64).copy()
    placement = random_rollout(problem, rng)
    for _ in range(99):
        if (placement != UNPLACED).all():
            break
        placement = random_rollout(problem, rng)
    return placement


def simulated_annealing(
    problem: PlacementProblem, *, budget_s: float | None = None, max_evals: int | None = None,
    seed: int = 0, init: np.ndarray | None = None, t0: float | None = None,
    t_end: float | None = None, t0_scale: float = 1.0, probes: int = 20, progress: bool = True,
    callback: Callable[[int, float, float], bool | None] | None = None,
) -> SearchResult:
    """Simulated annealing: Metropolis acceptance under a geometric temperature schedule.

    The temperature falls from t0 to t_end as the budget (time or evaluations, whichever runs out
    first) is used. t0 defaults to `t0_scale` times the mean |Δcost| of `probes` probe moves from
    the start, t_end to t0 / 1000.
    """
    rng = np.random.default_rng(seed)
    budget = _Budget(budget_s, max_evals, "annealing", progress)
    current = np.asarray(init, dtype=np.int64).copy() if init is not None else _initial(problem, rng)
    accepted, idle = 0, 0
    with budget.running():
        current_cost = float(problem.cost(current))
        budget.record(current, current_cost)
        if t0 is None:
            deltas = []
            for _ in range(probes):
                if budget.fraction() >= 1.0:
                    break
                cand = _propose(problem, current, rng)
                if cand is None:
                    continue
                c = float(problem.cost(cand))
                budget.record(cand, c)
                deltas.append(abs(c - current_cost))
            t0 = t0_scale * float(np.mean(deltas)) if deltas and np.mean(deltas) > 0 else 1e-3
        if t_end is None:
            t_end = t0 / 1000.0
        if not (t0 > 0 and t_end > 0):
            raise ValueError(f"temperatures must be positive, got t0={t0}, t_end={t_end}")
        while budget.fraction() < 1.0:
            temperature = t0 * (t_end / t0) ** min(budget.fraction(), 1.0)
            cand = _propose(problem, current, rng)
            if cand is None:
                idle += 1
                if idle > 10_000:
                    break  # no move possible (e.g. a single legal placement)
                continue
            idle = 0
            c = float(problem.cost(cand))
            budget.record(cand, c)
            delta = c - current_cost
            if delta <= 0 or rng.random() < math.exp(-delta / temperature):
                current, current_cost = cand, c
                accepted += 1
            if callback is not None and callback(budget.evaluations, c, budget.best_cost):
                break
    return budget.result(accepted)


class _BudgetSpent(Exception):
    """Raised at an episode end once the search budget is used up (stops PPO mid-rollout)."""


class _BestEpisode:
    """Remembers the cheapest complete placement among the episodes a PlacementEnv finishes."""

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget

    def wrap(self, env: Any) -> Any:
        """A wrapper around `env` that reports every finished episode's placement and cost."""
        import gymnasium as gym

        tracker = self

        class Recorder(gym.Wrapper):
            """Passes everything through; records (placement, cost) at episode ends."""

            def step(self, action):
                obs, reward, terminated, truncated, info = self.env.step(action)
                if (terminated or truncated) and "cost" in info:
                    tracker.budget.record(info["placement"], float(info["cost"]))
                    if tracker.budget.fraction() >= 1.0:
                        raise _BudgetSpent
                return obs, reward, terminated, truncated, info

        return Recorder(env)


def rl_search(problem: PlacementProblem, *, policy: Any = None, budget_s: float | None = None,
              max_episodes: int | None = None, seed: int = 0, progress: bool = True,
              episodes_per_update: int = 4, **ppo_hparams) -> SearchResult:
    """Train the project's PPO on a PlacementEnv over `problem` and keep the best placement seen.

    One rollout holds `episodes_per_update` whole episodes; training stops at the wall-time or
    episode budget (checked at every episode end, mid-rollout) or on Ctrl-C. Each finished
    training episode counts as one cost evaluation. `policy` defaults to PlacementPolicy(problem).
    """
    import torch

    from moeplace.place.env import PlacementEnv
    from moeplace.place.policy import PlacementPolicy
    from moeplace.rl import PPO

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small per-step tensors: extra threads only spin (10x slower here)
    budget = _Budget(budget_s, max_episodes, "ppo", progress)
    policy = PlacementPolicy(problem) if policy is None else policy
    env = _BestEpisode(budget).wrap(PlacementEnv(problem))
    hp = dict(n_steps=problem.num_nodes * episodes_per_update, n_minibatches=4, n_epochs=4,
              gamma=1.0, gae_lambda=0.95, learning_rate=3e-4, anneal_lr=False, ent_coef=0.01, seed=seed)
    hp.update(ppo_hparams)
    algo = PPO(policy, env, **hp)

    def stop(_algo, _stats) -> bool:
        return budget.evaluations == 0 or budget.fraction() < 1.0

    try:
        with budget.running(), contextlib.suppress(_BudgetSpent):
            while budget.evaluations == 0 or budget.fraction() < 1.0:  # at least one update
                algo.learn(10**12, callback=stop, progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    result = budget.result()
    result.policy = policy
    return result
