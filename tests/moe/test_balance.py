"""Balance: with w_imp = w_load = 0.1 the experts end evenly used; with the losses off the gate collapses."""

import torch

from moeplace.moe import MoE

D, E, K, STEPS = 16, 8, 2, 400


def train(w: float, seed: int = 1) -> dict:
    """Fit a linear teacher on inputs with a shared offset (which invites collapse) and return eval stats."""
    torch.manual_seed(seed)
    teacher = torch.randn(D, D) / D**0.5
    offset = 2.0 * torch.randn(D) / D**0.5
    layer = MoE(D, 8, E, K, router="noisy_topk", w_importance=w, w_load=w)
    opt = torch.optim.Adam(layer.parameters(), lr=3e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / STEPS)
    for _ in range(STEPS):
        x = torch.randn(128, D) + offset
        loss = ((layer(x) - x @ teacher) ** 2).mean() + layer.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(4096, D) + offset)
    return layer.stats


def test_losses_balance_and_no_losses_collapse():
    on, off = train(0.1), train(0.0)
    assert on["cv_importance"] <= 0.1, on  # paper, Table 6: 0.06
    assert on["max_over_mean_load"] <= 1.2, on  # paper, Table 6: 1.14
    assert off["max_over_mean_load"] >= 2.0, off  # collapsed onto few experts
    assert off["cv_importance"] >= 0.5, off
