"""Capacity factor: exactly which assignments are dropped and how many; dropless never drops."""

import torch

from moeplace.moe import MoE, Router
from moeplace.moe.routing import from_topk

from .reference import dense_moe

D, H, E = 4, 8, 3
# Token t's first and second choice of expert.
CHOICES = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 0], [0, 2], [2, 1]])
GATES = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.55, 0.45]])


class FixedRouter(Router):
    """Returns the fixed choices above, whatever the input."""

    def __init__(self):
        super().__init__(D, E, 2)

    def forward(self, x):
        return from_topk(CHOICES, GATES.clone(), x.new_zeros(()), torch.zeros(E), E)


def test_drops_exactly_the_documented_assignments():
    torch.manual_seed(0)
    layer = MoE(D, H, E, 2, router=FixedRouter(), capacity_factor=0.5)  # ceil(0.5 * 12 / 3) = 2 slots
    x = torch.randn(6, D)
    y = layer(x)
    # Priority: all first choices in token order, then all second choices in token order.
    # expert 0 queue: t0 t1 t2 t4 (first) then t3 (second) -> keeps t0, t1
    # expert 1 queue: t3 (first) then t0 t2 t5 (second)      -> keeps t3, t0
    # expert 2 queue: t5 (first) then t1 t4 (second)         -> keeps t5, t1
    kept = {(0, 0), (1, 0), (3, 1), (0, 1), (5, 2), (1, 2)}
    gates = torch.zeros(6, E)
    for t in range(6):
        for r in range(2):
            if (t, int(CHOICES[t, r])) in kept:
                gates[t, CHOICES[t, r]] = GATES[t, r]
    torch.testing.assert_close(y, dense_moe(layer, x, gates), atol=1e-6, rtol=1e-6)
    d = layer.last_dispatch
    mask = d.kept.view(2, 6).t()  # [token, rank]
    assert {(t, int(CHOICES[t, r])) for t in range(6) for r in range(2) if mask[t, r]} == kept
    assert int(d.num_dropped) == 6
    assert layer.stats["dropped_fraction"] == 0.5
    assert layer.stats["tokens_per_expert"] == [2, 2, 2]
    assert y[2].abs().sum() == 0 and y[4].abs().sum() == 0  # both of their assignments dropped


def test_dropless_never_drops_even_when_all_tokens_pick_one_expert():
    torch.manual_seed(0)
    layer = MoE(D, H, E, 1, router="softmax_topk").eval()
    x = torch.randn(50, D).abs()
    with torch.no_grad():
        layer.router.w_gate.zero_()
        layer.router.w_gate[:, 1] = 10.0  # every token prefers expert 1
    y = layer(x)
    assert layer.stats["dropped_fraction"] == 0.0
    assert layer.stats["tokens_per_expert"] == [0, 50, 0]
    gates = torch.zeros(50, E)
    gates[:, 1] = 1.0  # top-1 renormalised over the one kept expert
    torch.testing.assert_close(y, dense_moe(layer, x, gates), atol=1e-5, rtol=1e-5)


def test_capacity_factor_large_enough_drops_nothing():
    torch.manual_seed(0)
    layer = MoE(D, H, E, 2, router=FixedRouter(), capacity_factor=2.0)  # 8 slots > any queue
    layer(torch.randn(6, D))
    assert layer.stats["dropped_fraction"] == 0.0 and int(layer.last_dispatch.num_dropped) == 0
