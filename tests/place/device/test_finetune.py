"""Fine-tuning the transfer policy: the step-feature cache, the incumbent prior (against the
softmax formula by hand) and the fine-tuning loop's guarantees (never worse than zero-shot, each
distinct placement simulated once)."""

import numpy as np
import pytest
import torch

from moeplace.place.device.finetune import incumbent_prior, transfer_search
from moeplace.place.device.transfer import TransferPlacer, context_of
from moeplace.place.device.transfer_features import teacher_features

from .problems import branchy_problem, symmetric_problem


def test_cached_features_equal_recomputed_ones():
    """With the cache on, scoring reads the sampler's features: they equal a fresh list-scheduling
    pass over the same placements (the cache off), duplicates and unseen placements included."""
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    problem = branchy_problem()
    cold, warm = context_of(problem), context_of(problem)
    warm.cache = {}
    acts, logp = policy.sample_with_logp(warm, 6, generator=torch.Generator().manual_seed(3))
    assert len(warm.cache) == len({a.numpy().tobytes() for a in acts})
    unseen = torch.tensor([[2, 2, 1, 0, 1, 0, 2, 1]])
    batch = torch.cat([acts, acts[:2], unseen])
    assert torch.allclose(teacher_features(warm, batch), teacher_features(cold, batch), atol=1e-6)
    assert torch.allclose(policy.score(warm, acts)[0], logp, atol=1e-4)


def test_incumbent_prior_adds_its_logit_to_the_softmax_by_hand():
    """log p'(a) = sum_t [log p_t(a_t) + k [a_t = inc_t] - log(1 + p_t(inc_t) (e^k - 1))], where p_t is
    the policy's own per-step distribution (same features: the prior changes no feature)."""
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    problem = symmetric_problem()
    ctx = context_of(problem)
    inc = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    place = torch.tensor([[0, 1, 2, 2, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1]])
    k = 1.5
    node, dev = policy.encode(ctx), policy.device_in(ctx.devices)
    lp = policy._logits(node, dev, teacher_features(ctx, place)).detach()  # [B, G, D], topological order
    a, i = place[:, ctx.order], torch.as_tensor(inc)[ctx.order]
    p_inc = lp.exp()[:, torch.arange(len(inc)), i]
    want = (lp.gather(2, a[..., None])[..., 0] + k * (a == i) - torch.log1p(p_inc * (np.exp(k) - 1))).sum(1)
    ctx.prior = incumbent_prior(ctx, inc, k)
    got, _ = policy.score(ctx, place)
    assert torch.allclose(got.detach(), want, atol=1e-4)
    ctx.prior = incumbent_prior(ctx, inc, 60.0)  # a prior that dominates: every sample is the incumbent
    drawn, _ = policy.sample_with_logp(ctx, 5, generator=torch.Generator().manual_seed(0))
    assert (drawn.numpy() == inc).all()
    assert incumbent_prior(ctx, inc, 0.0) is None


def test_logit_std_cap_scales_saturated_steps_by_hand_and_keeps_the_greedy_placement():
    """A head whose logits differ by thousands samples few placements; with the cap c, each step's
    log-probabilities are log_softmax(l * min(1, c / std(l))) of the uncapped ones l (std over the
    devices; log_softmax is shift-invariant, so l may be the uncapped log-probabilities), the greedy
    placement is unchanged and samples differ again."""
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    with torch.no_grad():
        policy.out[-1].weight *= 3000.0
    problem = branchy_problem()  # unlike devices: no ties
    ctx = context_of(problem)
    gen = torch.Generator().manual_seed(0)
    drawn, _ = policy.sample_with_logp(ctx, 32, generator=gen)
    uncapped = len({d.numpy().tobytes() for d in drawn})
    greedy, _ = policy.sample_with_logp(ctx, 1, greedy=True)
    place = torch.cat([greedy, torch.tensor([[0, 1, 2, 2, 1, 0, 0, 1]])])
    node, dev = policy.encode(ctx), policy.device_in(ctx.devices)
    lp = policy._logits(node, dev, teacher_features(ctx, place)).detach().double()  # [B, G, D]
    std = lp.std(-1, unbiased=False, keepdim=True)
    assert std.max() > 10  # saturated: far above the cap
    want_lp = torch.log_softmax(lp * (1.5 / std).clamp(max=1.0), dim=-1)
    want = want_lp.gather(2, place[:, ctx.order][..., None])[..., 0].sum(1)
    ctx.logit_std_cap = 1.5
    got, _ = policy.score(ctx, place)
    assert torch.allclose(got.detach().double(), want, atol=1e-3)
    assert torch.equal(policy.sample_with_logp(ctx, 1, greedy=True)[0], greedy)
    drawn, _ = policy.sample_with_logp(ctx, 32, generator=gen)
    assert len({d.numpy().tobytes() for d in drawn}) > 3 * uncapped


def test_logit_std_cap_has_finite_gradients_where_the_devices_tie():
    """A head giving every device the same logit (std 0 at every step): the capped log-probabilities
    are log(1/D) and their gradients finite (a bare sqrt of 0 would make them NaN)."""
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    with torch.no_grad():
        policy.out[-1].weight.zero_()
    problem = branchy_problem()
    ctx = context_of(problem)
    ctx.logit_std_cap = 1.5
    place = torch.tensor([[0, 1, 2, 2, 1, 0, 0, 1]])
    logp, _ = policy.score(ctx, place)
    assert logp.item() == pytest.approx(8 * np.log(1 / 3), rel=1e-5)
    logp.sum().backward()
    assert all(torch.isfinite(q.grad).all() for q in policy.parameters() if q.grad is not None)


def test_finetuning_is_never_worse_than_zero_shot_and_simulates_each_placement_once():
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    problem = branchy_problem()
    calls = []
    cost = problem.cost
    problem.cost = lambda p: calls.append(np.asarray(p).tobytes()) or cost(p)
    r = transfer_search(problem, policy, finetune_s=1.0, samples=15, seed=0, show_progress=False)
    assert r.extra["updates"] > 0
    assert r.cost <= r.extra["zero_shot_cost"]
    assert len(calls) == len(set(calls)) == r.evaluations
    assert cost(r.placement) == r.cost


def test_settings_scale_with_the_group_count():
    """At 48 groups (twice GROUPS_REF = 24) the entropy weights halve and the incumbent logit gains log 2;
    at 24 they are FINETUNE_RL's; without an incumbent there is no logit at any size."""
    from moeplace.place.device.finetune import FINETUNE_RL, scaled_settings

    s, logit = scaled_settings(48, 1.5)
    assert s["ent_coef"] == FINETUNE_RL["ent_coef"] / 2
    assert s["ent_coef_end"] == FINETUNE_RL["ent_coef_end"] / 2
    assert logit == pytest.approx(1.5 + np.log(2.0))
    s, logit = scaled_settings(24, 1.5, {"sil_coef": 0.5})
    assert s["ent_coef"] == FINETUNE_RL["ent_coef"] and logit == 1.5 and s["sil_coef"] == 0.5
    assert scaled_settings(200, 0.0)[1] == 0.0


@pytest.mark.parametrize("budget, batches", [(0.0, 1), (0.46, 3), (100.0, 18)])
def test_zero_shot_draws_the_batches_that_fit_its_budget(monkeypatch, budget, batches):
    """Greedy + each batch take 0.1 s on a fake clock (each sampling pass advances it), so what fits
    is decided by hand, not by the machine's speed. A batch is drawn while elapsed x (k + 1) / k (the
    mean pass so far, one more) stays within the budget: 0.46 s -> 0.2 x 2, 0.3 x 3/2 go on, 0.4 x
    4/3 stops at 3 batches; 100 s is capped at 2 s: 1.8 x 18/17 <= 2 < 1.9 x 19/18."""
    from types import SimpleNamespace

    from moeplace.place.device import finetune

    clock = SimpleNamespace(now=0.0)
    sample = TransferPlacer.sample_with_logp

    def timed_sample(self, *args, **kwargs):
        clock.now += 0.1
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(TransferPlacer, "sample_with_logp", timed_sample)
    monkeypatch.setattr(finetune, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    r = transfer_search(branchy_problem(), policy, zero_shot_s=budget, samples=4, show_progress=False)
    assert r.extra["zero_shot_batches"] == batches
    assert r.extra["zero_shot_s"] <= max(budget, 0.2) + 1e-9  # one batch is always drawn
    assert r.extra["zero_shot_s"] <= finetune.ZERO_SHOT_MAX_S


@pytest.mark.parametrize("incumbent", [True, False])
def test_more_zero_shot_time_is_never_worse_than_one_batch(incumbent):
    """The first batch is the same draw at any budget, so the best of more batches is at most the
    best of one; the later batches add placements (improvement mode or plain), no weight changes."""
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    problem = symmetric_problem()
    one = transfer_search(problem, policy, zero_shot_s=0.0, samples=8, seed=3, show_progress=False)
    more = transfer_search(problem, policy, zero_shot_s=0.3, samples=8, seed=3, show_progress=False,
                           zero_shot_incumbent=incumbent)
    assert more.extra["zero_shot_batches"] > 1
    assert more.evaluations >= one.evaluations
    assert more.cost <= one.cost
    assert all(torch.equal(v, more.policy.state_dict()[k]) for k, v in before.items())
    assert problem.cost(more.placement) == more.cost
