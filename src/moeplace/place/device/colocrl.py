"""The 2017 device-placement policy (Mirhoseini et al., "Device Placement Optimization with
Reinforcement Learning"): a sequence-to-sequence network reads the op groups in topological order
with an LSTM encoder and an attentional LSTM decoder picks a device for each group; trained with
REINFORCE, reward -sqrt(step time); invalid (out-of-memory) placements get the problem's penalty as
their step time. The best placement sampled is kept.

Training loop (per iteration): sample a batch of placements in one batched decoder pass, simulate
the distinct ones (the simulator is deterministic, so repeated placements are looked up, not
re-simulated), advantage = reward - batch mean, divided by the batch's standard deviation, then a
few gradient epochs on that batch with the PPO-style clipped ratio (the first epoch is the plain
REINFORCE gradient). Budgets are iterations (reproducible for a seed) with wall time as a cap.

Two additions to the paper, on by default (`sil_coef=0, polish_calls=0` gives the paper's plain
REINFORCE): self-imitation (Oh et al., ICML 2018) adds the log-probability of the best placements
found so far that beat the batch's mean reward, weighted by how much, so good rare samples are
not forgotten; and expert iteration (Anthony et al., 2017): the batch's best sample is improved by a
short greedy descent (one group moved at a time) and the result joins the batch's placements, so the
self-imitation term teaches the policy what the search found. At the end the descent, with swaps of
two groups' devices added, starts from each run's best placements in turn (`final_descent`);
simulated annealing (`anneal`, with `WindowMoves`; a cool run and a hot run, since which one finds the
better basin differs from graph to graph) leaves that optimum's basin, and iterated local
search (`kicks`: move a few random groups, descend again, keep what is no worse) walks on from the
best local optimum for the rest of the look-up budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from moeplace.errors import NonFiniteError
from moeplace.numerics import check_finite, clip_and_check, diverged
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.search import generic_move, simulated_annealing
from moeplace.utils import progress


class Seq2SeqPlacer(nn.Module):
    """LSTM encoder over group embeddings; attentional LSTM decoder emitting one device per group.

    The decoder's input at step t is the previous group's device and group t's encoding; its output
    attends over all encodings. `sample` decodes step by step without gradients (the input-side
    products are precomputed once per batch); `score` re-runs the decoder teacher-forced over the
    whole sampled sequence at once (same maths, one fused LSTM call).
    """

    def __init__(self, feat_dim: int, num_devices: int, hidden: int = 64) -> None:
        super().__init__()
        self.hidden, self.num_devices = hidden, num_devices
        self.embed = nn.Linear(feat_dim, hidden)
        self.encoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.device_embed = nn.Embedding(num_devices + 1, hidden)  # last index = start token
        self.decoder = nn.LSTM(2 * hidden, hidden, batch_first=True)
        self.query = nn.Linear(hidden, hidden)
        self.head = nn.Linear(2 * hidden, num_devices)

    def encode(self, feats: Tensor) -> Tensor:
        """Group encodings [G, H]."""
        return self.encoder(self.embed(feats)[None])[0][0]

    def _logits(self, out: Tensor, enc: Tensor) -> Tensor:
        """Decoder outputs [..., H] -> device logits [..., D] with attention over the encodings."""
        weights = torch.softmax(self.query(out) @ enc.T / math.sqrt(enc.shape[1]), dim=-1)
        return self.head(torch.cat([out, weights @ enc], dim=-1))

    @torch.no_grad()
    def sample_with_logp(
        self, feats: Tensor, batch: int, greedy: bool = False, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Placements [B, G] decoded one group at a time, and their log-probabilities [B]."""
        enc = self.encode(feats)
        G, H = enc.shape
        d = self.decoder
        w_ih, w_hh, bias = d.weight_ih_l0, d.weight_hh_l0, d.bias_ih_l0 + d.bias_hh_l0
        dev_gates = self.device_embed.weight @ w_ih[:, :H].T  # [D+1, 4H]
        enc_gates = enc @ w_ih[:, H:].T + bias  # [G, 4H]
        w_out, w_ctx = self.head.weight[:, :H], self.head.weight[:, H:]
        ctx_logits = enc @ w_ctx.T + self.head.bias  # [G, D]: attention-weighted per group
        keys = enc.T / math.sqrt(H)
        h = torch.zeros(batch, H)
        c = torch.zeros(batch, H)
        prev = torch.full((batch,), self.num_devices, dtype=torch.long)
        out = torch.empty(batch, G, dtype=torch.long)
        logp = torch.zeros(batch)
        for t in range(G):
            gates = dev_gates[prev] + enc_gates[t] + h @ w_hh.T
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            attn = torch.softmax(self.query(h) @ keys, dim=-1)
            logits = torch.log_softmax(h @ w_out.T + attn @ ctx_logits, dim=-1)
            if not bool(torch.isfinite(logits[:, 0]).all()):  # a NaN row is NaN throughout
                raise NonFiniteError("the placer's device probabilities are NaN")
            if greedy:
                prev = logits.argmax(dim=1)
            else:
                prev = torch.multinomial(logits.exp(), 1, generator=generator)[:, 0]
            logp += logits.gather(1, prev[:, None])[:, 0]
            out[:, t] = prev
        return out, logp

    def sample(self, feats: Tensor, batch: int, greedy: bool = False) -> Tensor:
        """Placements [B, G], decoded one group at a time."""
        return self.sample_with_logp(feats, batch, greedy)[0]

    def score(self, feats: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probability [B] and entropy [B] of placements `actions` [B, G] (teacher forced)."""
        enc = self.encode(feats)
        B, G = actions.shape
        start = torch.full((B, 1), self.num_devices, dtype=torch.long)
        prev = torch.cat([start, actions[:, :-1]], dim=1)
        x = torch.cat([self.device_embed(prev), enc.expand(B, G, enc.shape[1])], dim=2)
        logp_all = torch.log_softmax(self._logits(self.decoder(x)[0], enc), dim=-1)  # [B, G, D]
        logp = logp_all.gather(2, actions[..., None])[..., 0].sum(dim=1)
        ent = -(logp_all.exp() * logp_all).sum(dim=(1, 2))
        return logp, ent


class CachedCost:
    """The problem's cost with repeated placements looked up (the simulator is deterministic).

    `counter[0]` is incremented once per simulator call (shared across several caches).
    """

    def __init__(self, problem: DevicePlacementProblem, counter: list[int] | None = None) -> None:
        self.problem, self.table, self.lookups = problem, {}, 0
        self.counter = counter if counter is not None else [0]

    def __call__(self, placement: np.ndarray) -> float:
        self.lookups += 1
        key = np.asarray(placement, dtype=np.int16).tobytes()
        c = self.table.get(key)
        if c is None:
            c = self.table[key] = float(self.problem.cost(placement))
            self.counter[0] += 1
        return c


def polish(placement: np.ndarray, cost: float, cost_fn: CachedCost, num_devices: int,
           rng: np.random.Generator, max_calls: int, swaps: bool = False) -> tuple[np.ndarray, float]:
    """Greedy first-improvement descent: move one group to another device while that lowers the
    cost, until a full pass over the groups finds nothing or `max_calls` costs were looked up.

    With `swaps`, a pass without a gain is followed by a pass over every pair of groups on different
    devices (random order) that exchanges their devices; a gain there returns to single moves. The
    result is then a local optimum for both moves (annealing's two moves), unless the calls run out.
    """
    best, best_cost, calls = placement.copy(), cost, 0
    improved = True
    while improved and calls < max_calls:
        improved = False
        for g in rng.permutation(len(best)):
            for d in rng.permutation(num_devices):
                if d == best[g] or calls >= max_calls:
                    continue
                trial = best.copy()
                trial[g] = d
                c = cost_fn(trial)
                calls += 1
                if c < best_cost:
                    best, best_cost, improved = trial, c, True
                    break
        if improved or not swaps:
            continue
        a_idx, b_idx = np.triu_indices(len(best), 1)
        differ = best[a_idx] != best[b_idx]
        a_idx, b_idx = a_idx[differ], b_idx[differ]
        for i in rng.permutation(len(a_idx)):
            if calls >= max_calls:
                break
            a, b = a_idx[i], b_idx[i]
            trial = best.copy()
            trial[a], trial[b] = best[b], best[a]
            c = cost_fn(trial)
            calls += 1
            if c < best_cost:
                best, best_cost, improved = trial, c, True
                break
    return best, best_cost


def interleave(runs: list[list[tuple[float, np.ndarray]]]) -> list[tuple[float, np.ndarray]]:
    """Each run's (cost, placement) list cheapest first, taken in turn: the best of every run, then
    every run's second best, ...; the runs ordered by their best cost; repeated placements dropped."""
    ranked = sorted((sorted(r, key=lambda cp: cp[0]) for r in runs if r), key=lambda r: r[0][0])
    out, seen = [], set()
    for i in range(max((len(r) for r in ranked), default=0)):
        for r in ranked:
            if i < len(r) and r[i][1].tobytes() not in seen:
                seen.add(r[i][1].tobytes())
                out.append(r[i])
    return out


def final_descent(starts: list[tuple[float, np.ndarray]], cost_fn: CachedCost, num_devices: int,
                  seed: int, max_calls: int, deadline: float = math.inf
                  ) -> tuple[np.ndarray | None, float, int, bool]:
    """Descend (moves and swaps) from each (cost, placement) of `starts` in order while `max_calls`
    look-ups remain and, after the first start, before `deadline` (perf_counter); the best local
    optimum reached (None, inf if none was), its cost, how many starts were descended, and whether
    Ctrl-C ended it (the optima reached until then are kept).

    One start's descent ends in the basin it began in; good placements from different runs often
    lie in different basins, so several starts find better optima than the best start alone.
    """
    rng = np.random.default_rng(seed)
    best, best_cost, left, done, interrupted = None, math.inf, max_calls, 0, False
    try:
        for cost, placement in starts:
            if left <= 0 or (done > 0 and time.perf_counter() >= deadline):
                break
            before = cost_fn.lookups
            p, c = polish(placement, cost, cost_fn, num_devices, rng, left, swaps=True)
            left -= cost_fn.lookups - before
            done += 1
            if c < best_cost:
                best, best_cost = p, c
    except KeyboardInterrupt:
        interrupted = True
    return best, best_cost, done, interrupted


def kicks(placement: np.ndarray, cost: float, cost_fn: CachedCost, num_devices: int, seed: int,
          max_calls: int, size: int = 5, deadline: float = math.inf) -> tuple[np.ndarray, float, int, bool]:
    """Iterated local search (Lourenco, Martin and Stutzle, 2003) from a local optimum: move `size`
    random groups to random devices (the kick), descend by moves and swaps, keep the new optimum
    if it is no worse; until `max_calls` look-ups are used or `deadline` (perf_counter) passes.
    Returns the best placement, its cost, the number of kicks, and whether Ctrl-C ended it.

    A descent alone stops at the first local optimum; kicks small enough to land in a nearby
    basin walk from optimum to optimum, which is what annealing's uphill moves buy, without a
    temperature to tune.
    """
    rng = np.random.default_rng(seed)
    best, best_cost, n, interrupted = placement.copy(), cost, 0, False
    start_calls = cost_fn.lookups
    size = min(size, len(best))
    longest = 0.0  # the longest kick so far; a kick starts only if one that long fits before the deadline
    try:
        while ((left := max_calls - (cost_fn.lookups - start_calls)) > 0
               and (t := time.perf_counter()) + longest < deadline):
            trial = best.copy()
            groups = rng.choice(len(trial), size, replace=False)
            trial[groups] = rng.integers(num_devices, size=size)
            p, c = polish(trial, cost_fn(trial), cost_fn, num_devices, rng, left - 1, swaps=True)
            n += 1
            longest = max(longest, time.perf_counter() - t)
            if c <= best_cost:
                best, best_cost = p, c
    except KeyboardInterrupt:
        interrupted = True
    return best, best_cost, n, interrupted


class WindowMoves:
    """The problem seen by the final annealing: its cost, plus a move that puts a run of 2 to `longest`
    groups consecutive in topological order on one random device (with probability `share`; else
    the generic relocate/swap move).

    A branch of an Inception module or a stack of layers is such a run: moving it as one keeps the
    transfers at its ends only, where moving its groups one by one first adds transfers in between,
    an uphill step annealing must be lucky to take (inception@k80x4, from RL's best, four seeds:
    145.8-147.3 ms with these moves, 144.9-150.0 without).
    """

    def __init__(self, problem: DevicePlacementProblem, share: float = 0.2, longest: int = 8) -> None:
        self.problem, self.share, self.longest = problem, share, longest
        self.order = np.argsort(problem.graph.group_first_op(), kind="stable")  # a topological order

    @property
    def num_nodes(self) -> int:
        """Number of op groups."""
        return self.problem.num_nodes

    @property
    def num_slots(self) -> int:
        """Number of devices."""
        return self.problem.num_slots

    def cost(self, placement: np.ndarray) -> float:
        """The problem's cost."""
        return self.problem.cost(placement)

    def legal_mask(self, placement: np.ndarray, node: int) -> np.ndarray:
        """The problem's legal devices."""
        return self.problem.legal_mask(placement, node)

    def propose_move(self, placement: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """A window move with probability `share`, else the generic move; None if nothing changes."""
        if rng.random() >= self.share:
            return generic_move(self.problem, placement, rng)
        start = int(rng.integers(len(self.order)))
        run = self.order[start:start + int(rng.integers(2, self.longest + 1))]
        new = placement.copy()
        new[run] = rng.integers(self.num_slots)
        return None if (new == placement).all() else new


def anneal(problem: DevicePlacementProblem, placement: np.ndarray, cost: float, cost_fn: CachedCost,
           seed: int, evals: int, scale: float, max_calls: int, deadline: float = math.inf,
           share: float = 0.5) -> tuple[np.ndarray, float, int, bool]:
    """Simulated annealing (the placement core's, with `WindowMoves`) from a local optimum for `evals`
    evaluations (and, with a deadline, `share` of the time left), starting at `scale` times the mean
    |Δcost| of 200 probe moves; its best placement is then descended (moves and swaps, at most
    `max_calls` look-ups of `cost_fn`). Returns the better of that optimum and the start, its cost,
    the annealing's evaluations (also added to `cost_fn.counter`), and whether Ctrl-C ended it.

    Kicks of a few groups fall back into a wide basin (inception on four K80s: 21 kicks, no gain);
    annealing's long uphill walks leave it, and a cool start keeps the walk near good placements.
    """
    span = None if deadline == math.inf else (deadline - time.perf_counter()) * share
    if span is not None and span <= 0:
        return placement, cost, 0, False
    r = simulated_annealing(WindowMoves(problem), budget_s=span, max_evals=evals, seed=seed, init=placement,
                            t0_scale=scale, probes=200, progress=False)
    cost_fn.counter[0] += r.evaluations
    if r.cost >= cost:
        return placement, cost, r.evaluations, r.interrupted
    if r.interrupted:
        return r.placement, r.cost, r.evaluations, True
    try:
        p, c = polish(r.placement, r.cost, cost_fn, problem.num_slots, np.random.default_rng(seed),
                      max_calls, swaps=True)
    except KeyboardInterrupt:
        return r.placement, r.cost, r.evaluations, True
    return p, c, r.evaluations, False


def sil_targets(elite: list[tuple[float, np.ndarray]], reward: np.ndarray) -> tuple[Tensor, Tensor] | None:
    """Self-imitation targets: the (cost, placement) pairs whose reward -sqrt(cost) beats the batch's
    mean reward, weighted by the margin in batch standard deviations; None when none does."""
    e_reward = -np.sqrt(np.array([c for c, _ in elite]))
    w = np.maximum(e_reward - reward.mean(), 0.0) / (reward.std() + 1e-12)
    if not (w > 0).any():
        return None
    actions = np.stack([p for _, p in elite])[w > 0]
    return torch.as_tensor(actions, dtype=torch.long), torch.as_tensor(w[w > 0], dtype=torch.float32)


def imitate(policy: Seq2SeqPlacer, opt: torch.optim.Optimizer, feats: Tensor, init: np.ndarray,
            steps: int, target_prob: float = 0.5) -> int:
    """Fit the policy to placement `init` (cross-entropy) until it has probability >= target_prob."""
    target = torch.as_tensor(np.asarray(init, dtype=np.int64))[None]
    for step in range(steps):
        logp, _ = policy.score(feats, target)
        if float(logp.detach()) >= math.log(target_prob):
            return step
        loss = -logp.mean() / target.shape[1]
        check_finite(f"imitation step {step + 1}", opt.param_groups[0]["lr"], loss=loss)
        opt.zero_grad()
        loss.backward()
        clip_and_check(policy.parameters(), None, f"imitation step {step + 1}", opt.param_groups[0]["lr"])
        opt.step()
    return steps


def train_colocrl(
    problem: DevicePlacementProblem,
    budget_s: float | None = None,
    seed: int = 0,
    batch: int = 32,
    lr: float = 3e-3,
    entropy_coef: float = 0.3,
    entropy_end: float | None = 3e-3,
    epochs: int = 1,
    clip: float = 0.2,
    init: np.ndarray | None = None,
    imitation_steps: int = 0,
    max_iters: int | None = None,
    restarts: int = 1,
    imitate_runs: int | None = None,
    hidden: int = 64,
    sil_coef: float = 0.3,
    sil_size: int = 16,
    polish_calls: int = 500,
    final_polish_calls: int = 400_000,
    final_starts: int = 1,
    final_kick_size: int = 5,
    final_anneal: int = 5000,
    final_anneal_scales: tuple[float, ...] = (1 / 3, 1.0),
    final_share: float = 0.25,
    show_progress: bool = True,
    callback: Callable[[int, float], bool | None] | None = None,
) -> dict:
    """REINFORCE on the seq2seq placer: `restarts` independent runs (seeds seed, seed+1, ...) of
    `max_iters / restarts` iterations each (and at most `budget_s / restarts` seconds each; with
    `budget_s` alone, the runs share `1 - final_share` of it and the final stage below the rest).

    With `init` and `imitation_steps` > 0 each run's policy is first fitted (cross-entropy, at most
    that many steps, until it gives `init` probability >= 1/2) to `init`, a heuristic's placement,
    so the search starts near it (reported as such; off by default); with `imitate_runs` = k only
    the first k runs do so and the others start from scratch. `sil_coef` weighs the
    self-imitation term over the `sil_size` best placements; `polish_calls` bounds the cost look-ups
    of each iteration's greedy descent (0: none). At the end, sharing `final_polish_calls` look-ups
    and stopping at `budget_s`: each run's `final_starts` best distinct placements are descended, by
    single moves and swaps of two groups' devices, to a local optimum for both (`final_descent`, the
    best of each run in turn); then one simulated annealing (`anneal`, with `WindowMoves`) per scale of
    `final_anneal_scales`, each from the best optimum, `final_anneal` evaluations per group (0: none;
    not counted in the look-ups), starting at that scale times the mean |Δcost| of 200 probe moves,
    and a descent from its best; then iterated local search from the best optimum found spends what is
    left (`kicks` of `final_kick_size` groups; 0: none). With a deadline, the annealings share three
    quarters of the time left after the descents. Returns
    the best placement sampled or polished over all runs, and the last run's policy; `evaluations` counts
    simulator calls (distinct placements per run, and every evaluation of the final annealing).
    """
    if budget_s is None and max_iters is None:
        raise ValueError("give budget_s or max_iters (or both)")
    if not 0.0 <= final_share < 1.0:
        raise ValueError(f"final_share must be in [0, 1), got {final_share}")
    train_s = budget_s  # the runs' time: a wall-time budget alone keeps final_share for the final stage
    if budget_s is not None and max_iters is None and final_polish_calls > 0:
        train_s = budget_s * (1.0 - final_share)
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    feats = torch.as_tensor(problem.node_features())
    start = time.perf_counter()
    best, best_cost, samples, it = None, math.inf, 0, 0
    policy: Seq2SeqPlacer | None = None
    counter = [0]  # simulator calls over all runs
    history: list[tuple[int, float, float]] = []
    buffers: list[list[tuple[float, np.ndarray]]] = []  # each run's final_starts best placements
    curve: list[tuple[float, int]] = []  # per iteration: mean cost of the batch, distinct placements
    bar = progress(total=max_iters, desc="rl (seq2seq REINFORCE)", unit="it", disable=not show_progress)
    interrupted, stop, descents, kicked, annealed = False, False, 0, 0, 0
    before_final: float | None = None  # set when the final stage starts (not after a Ctrl-C before it)
    try:
        for run in range(restarts):
            run_start = time.perf_counter()
            run_iters = None if max_iters is None else max_iters * (run + 1) // restarts - it
            torch.manual_seed(seed + run)
            gen = torch.Generator().manual_seed(seed + run)
            np_rng = np.random.default_rng(seed + run)
            policy = Seq2SeqPlacer(feats.shape[1], problem.num_slots, hidden=hidden)
            if init is not None and imitation_steps > 0 and (imitate_runs is None or run < imitate_runs):
                imitate(policy, torch.optim.Adam(policy.parameters(), lr=3e-3), feats, init, imitation_steps)
            opt = torch.optim.Adam(policy.parameters(), lr=lr)
            cost_fn = CachedCost(problem, counter)
            # the run's best distinct placements: the first sil_size are the self-imitation buffer, all
            # of them start the final descent
            elite: dict[bytes, tuple[float, np.ndarray]] = {}
            run_it = 0
            while (train_s is None or time.perf_counter() - run_start < train_s / restarts) and (
                run_iters is None or run_it < run_iters
            ):
                actions, old_logp = policy.sample_with_logp(feats, batch, generator=gen)
                placements = actions.numpy()
                costs = np.array([cost_fn(p) for p in placements])
                found, found_costs = placements, costs  # the samples, plus the polished one if any
                if polish_calls > 0:  # expert iteration: the batch's best sample, improved by local search
                    k = int(np.argmin(costs))
                    better, c = polish(placements[k], float(costs[k]), cost_fn, problem.num_slots,
                                       np_rng, polish_calls)
                    found, found_costs = np.concatenate([placements, better[None]]), np.append(costs, c)
                samples += batch
                curve.append((float(costs.mean()), len({q.tobytes() for q in placements})))
                k = int(np.argmin(found_costs))
                if found_costs[k] < best_cost:
                    best, best_cost = found[k].copy(), float(found_costs[k])
                    history.append((counter[0], time.perf_counter() - start, best_cost))
                reward = -np.sqrt(costs)  # the paper's reward; OOM placements carry the penalty
                adv = reward - reward.mean()
                adv = torch.as_tensor(adv / (adv.std() + 1e-12), dtype=torch.float32)
                # progress through the run: by iterations when counted (so a seed repeats whatever the
                # machine's speed; the time budget is then only a cap), else by the time budget
                frac = (run_it / run_iters if run_iters
                        else (time.perf_counter() - run_start) * restarts / train_s)
                coef = entropy_coef
                if entropy_end is not None:  # geometric annealing over the run
                    coef = entropy_coef * (entropy_end / entropy_coef) ** min(frac, 1.0)
                sil = None
                if sil_coef > 0 or final_starts > 0:
                    for p, c in zip(found, found_costs):
                        elite.setdefault(p.tobytes(), (float(c), p))
                    elite = dict(sorted(elite.items(), key=lambda kv: kv[1][0])[:max(sil_size, final_starts)])
                if sil_coef > 0:  # self-imitation: the best placements so far that beat this batch's mean
                    sil = sil_targets(list(elite.values())[:sil_size], reward)
                for _ in range(epochs):  # epoch 1 = the plain REINFORCE gradient (ratio 1)
                    logp, ent = policy.score(feats, actions)
                    ratio = torch.exp(logp - old_logp)
                    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
                    loss = -surrogate.mean() - coef * ent.mean()
                    if sil is not None:
                        loss = loss - sil_coef * (sil[1] * policy.score(feats, sil[0])[0]).sum() / batch
                    check_finite(f"rl iteration {it + 1}", lr, loss=loss)
                    opt.zero_grad()
                    loss.backward()
                    clip_and_check(policy.parameters(), 1.0, f"rl iteration {it + 1}", lr)
                    opt.step()
                it += 1
                run_it += 1
                bar.update(1)
                bar.set_postfix(best_ms=f"{best_cost * 1e3:.2f}", mean_ms=f"{costs.mean() * 1e3:.2f}")
                if callback is not None and callback(it, best_cost):
                    stop = True
                    break
            buffers.append(list(elite.values())[:final_starts])
            if stop:
                break
        before_final = best_cost
        if best is not None and final_polish_calls > 0:  # the answer: the best local optimum reached
            starts = interleave(buffers + [[(best_cost, best)]])
            deadline = math.inf if budget_s is None else start + budget_s
            bar.set_postfix_str(f"final descent from {len(starts)} placements")
            final_cost = CachedCost(problem, counter)
            p, c, descents, interrupted = final_descent(starts, final_cost, problem.num_slots, seed,
                                                        final_polish_calls, deadline)
            if p is not None and c < best_cost:
                best, best_cost = p, c
            if final_anneal > 0 and p is not None and not interrupted:
                optimum, optimum_cost = p, c  # every annealing starts here; the best result goes on
                n_anneals, evals = len(final_anneal_scales), final_anneal * len(optimum)
                for i, scale in enumerate(final_anneal_scales):
                    bar.set_postfix_str(f"annealing {i + 1}/{n_anneals} from {optimum_cost * 1e3:.3f} ms")
                    left = final_polish_calls - final_cost.lookups
                    share = 0.75 / (n_anneals - i)  # a quarter of the time stays for the kicks
                    q, qc, n, interrupted = anneal(problem, optimum, optimum_cost, final_cost, seed + i,
                                                   evals, scale, left, deadline, share)
                    annealed += n
                    if qc < c:
                        p, c = q, qc
                    if interrupted:
                        break
                if c < best_cost:
                    best, best_cost = p, c
            left = final_polish_calls - final_cost.lookups
            if final_kick_size > 0 and p is not None and left > 0 and not interrupted:
                bar.set_postfix_str(f"kicks of {final_kick_size} groups from {best_cost * 1e3:.3f} ms")
                p, c, kicked, interrupted = kicks(p, c, final_cost, problem.num_slots, seed, left,
                                                  final_kick_size, deadline)
                if c < best_cost:
                    best, best_cost = p, c
            history.append((counter[0], time.perf_counter() - start, best_cost))
    except KeyboardInterrupt:
        interrupted = True
    except NonFiniteError as e:  # NaN logits met while sampling placements
        raise diverged(f"rl iteration {it + 1}", str(e), lr) from None
    finally:
        bar.close()
    return {
        "placement": best,
        "cost": best_cost,
        "evaluations": counter[0],
        "samples": samples,
        "iterations": it,
        "wall_s": time.perf_counter() - start,
        "history": history,
        "curve": curve,
        "interrupted": interrupted,
        "policy": policy,
        "final_descents": descents,
        "final_kicks": kicked,
        "final_anneal_evals": annealed,
        "cost_before_final": best_cost if before_final is None else before_final,
    }
