"""The 2017 device-placement policy (Mirhoseini et al., "Device Placement Optimization with
Reinforcement Learning"): a sequence-to-sequence network reads the op groups in topological order
with an LSTM encoder and an attentional LSTM decoder picks a device for each group; trained with
REINFORCE, reward -sqrt(step time), a moving-average baseline; invalid (out-of-memory) placements
get the problem's penalty as their step time. The best placement sampled is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.utils import progress


class Seq2SeqPlacer(nn.Module):
    """LSTM encoder over group embeddings; attentional LSTM decoder emitting one device per group.

    The decoder's input at step t is the previous group's device and group t's encoding; its output
    attends over all encodings. Sampling runs step by step without gradients; `score` re-runs the
    decoder teacher-forced over the whole sampled sequence at once (same maths, one fused LSTM call).
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
    def sample(self, feats: Tensor, batch: int, greedy: bool = False) -> Tensor:
        """Placements [B, G], decoded one group at a time."""
        enc = self.encode(feats)
        G, H = enc.shape
        prev = torch.full((batch,), self.num_devices, dtype=torch.long)
        state = None
        out = []
        for t in range(G):
            x = torch.cat([self.device_embed(prev), enc[t].expand(batch, H)], dim=1)[:, None]
            h, state = self.decoder(x, state)
            logits = self._logits(h[:, 0], enc)
            prev = logits.argmax(dim=1) if greedy else torch.distributions.Categorical(logits=logits).sample()
            out.append(prev)
        return torch.stack(out, dim=1)

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


def train_colocrl(
    problem: DevicePlacementProblem,
    budget_s: float,
    seed: int = 0,
    batch: int = 32,
    lr: float = 3e-3,
    entropy_coef: float = 1e-3,
    baseline_decay: float = 0.9,
    init: np.ndarray | None = None,
    imitation_steps: int = 0,
    max_iters: int | None = None,
    show_progress: bool = True,
    callback: Callable[[int, float], bool | None] | None = None,
) -> dict:
    """REINFORCE on the seq2seq placer within `budget_s` seconds; returns the best placement found.

    With `init` and `imitation_steps` > 0 the policy is first fitted (cross-entropy, at most that
    many steps, until it gives `init` probability >= 1/2) to `init`, a
    heuristic's placement, so the search starts near it (reported as such; off by default).
    """
    torch.manual_seed(seed)
    feats = torch.as_tensor(problem.node_features())
    policy = Seq2SeqPlacer(feats.shape[1], problem.num_slots)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    start = time.perf_counter()
    if init is not None and imitation_steps > 0:
        target = torch.as_tensor(np.asarray(init, dtype=np.int64))[None]
        for _ in range(imitation_steps):  # until the whole placement has probability >= 1/2
            logp, _ = policy.score(feats, target)
            if float(logp.detach()) >= math.log(0.5):
                break
            opt.zero_grad()
            (-logp.mean() / problem.num_nodes).backward()
            opt.step()
    best, best_cost, baseline, evals, it = None, math.inf, None, 0, 0
    history: list[tuple[int, float, float]] = []
    bar = progress(total=None, desc="rl (seq2seq REINFORCE)", unit="it")
    interrupted = False
    try:
        while time.perf_counter() - start < budget_s and (max_iters is None or it < max_iters):
            actions = policy.sample(feats, batch)
            placements = actions.numpy()
            costs = np.array([problem.cost(p) for p in placements])
            evals += batch
            k = int(np.argmin(costs))
            if costs[k] < best_cost:
                best, best_cost = placements[k].copy(), float(costs[k])
                history.append((evals, time.perf_counter() - start, best_cost))
            reward = -np.sqrt(costs)
            baseline = (
                reward.mean()
                if baseline is None
                else baseline_decay * baseline + (1 - baseline_decay) * reward.mean()
            )
            adv = torch.as_tensor(reward - baseline, dtype=torch.float32)
            adv = adv / (adv.std() + 1e-8) if batch > 1 else adv
            logp, ent = policy.score(feats, actions)
            loss = -(adv * logp).mean() - entropy_coef * ent.mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            it += 1
            bar.update(1)
            bar.set_postfix(best_ms=f"{best_cost * 1e3:.2f}", mean_ms=f"{costs.mean() * 1e3:.2f}")
            if callback is not None and callback(it, best_cost):
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return {
        "placement": best,
        "cost": best_cost,
        "evaluations": evals,
        "iterations": it,
        "wall_s": time.perf_counter() - start,
        "history": history,
        "interrupted": interrupted,
    }
