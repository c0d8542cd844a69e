"""The 2017 device-placement policy (Mirhoseini et al., "Device Placement Optimization with
Reinforcement Learning"): a sequence-to-sequence network reads the op groups in topological order
with an LSTM encoder, and an attentional LSTM decoder picks a device for each group.

It is a sequence policy for `moeplace.rl.SequenceREINFORCE`: `sample_with_logp(feats, batch)` draws
whole placements, `score(feats, actions)` gives their log-probabilities and entropies.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from moeplace.errors import NonFiniteError
from moeplace.numerics import check_finite, clip_and_check


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


def imitate(policy: Seq2SeqPlacer, opt: torch.optim.Optimizer, feats: Tensor, init: np.ndarray,
            steps: int, target_prob: float = 0.5) -> int:
    """Fit the policy to placement `init` (cross-entropy) until it has probability >= target_prob."""
    target = torch.as_tensor(np.asarray(init, dtype=np.int64))[None]
    for step in range(steps):
        logp, _ = policy.score(feats, target)
        if float(logp.detach()) >= math.log(target_prob):
            return step
        loss = -logp.mean() / target.shape[1]
        lr = opt.param_groups[0]["lr"]
        check_finite(f"imitation step {step + 1}", lr, loss=loss)
        opt.zero_grad()
        loss.backward()
        clip_and_check(policy.parameters(), None, f"imitation step {step + 1}", lr)
        opt.step()
    return steps
