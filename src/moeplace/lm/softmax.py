"""Sampled softmax for training with large vocabularies (Jean et al. 2015; TensorFlow's sampled_softmax_loss).

The full softmax costs 2·d·V FLOPs per token; at word level (V = 10,000) it dwarfs a small model's LSTM and
MoE layers. In training, each token's loss is instead a softmax over its true word and S words shared by
the batch, drawn with replacement from a proposal q (the training split's unigram frequencies); every
logit is corrected by -log(S·q_w), the expected number of times w was drawn, and a sample equal to a
token's true word is masked out for that token. Evaluation always uses the exact full softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def unigram_proposal(train_ids, vocab_size: int) -> Tensor:
    """q_w proportional to count_w + 1 over the training ids (add-one smoothing: every word can be drawn)."""
    import numpy as np

    counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    q = torch.from_numpy(counts.astype(np.float64) + 1.0)
    return (q / q.sum()).float()


def sampled_softmax_loss(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                         proposal: Tensor, num_samples: int, samples: Tensor | None = None) -> Tensor:
    """Mean sampled-softmax loss of hidden [N, d] against targets [N] for the output layer weight [V, d].

    The S = num_samples negatives come from torch's global generator (seeded runs repeat exactly), or are
    the given `samples` [S] (for tests).
    """
    if samples is None:
        samples = torch.multinomial(proposal, num_samples, replacement=True)  # [S]
    log_expected = math.log(num_samples) + proposal.clamp_min(1e-30).log()  # log(S · q_w), [V]
    w_true = weight.index_select(0, targets)  # [N, d]
    true_logit = (hidden * w_true).sum(-1) - log_expected.index_select(0, targets)
    sampled_logit = hidden @ weight.index_select(0, samples).t() - log_expected.index_select(0, samples)
    if bias is not None:
        true_logit = true_logit + bias.index_select(0, targets)
        sampled_logit = sampled_logit + bias.index_select(0, samples)
    sampled_logit = sampled_logit.masked_fill(samples[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([true_logit[:, None], sampled_logit], dim=1)  # the true word is class 0
    return F.cross_entropy(logits, targets.new_zeros(targets.shape[0]))
