"""Reused weight-gradient memory (GradBuffer): exact gradients across steps, held grads untouched."""

import copy

import torch

from moeplace.moe import Experts, grouped_linear
from moeplace.moe.experts import GradBuffer

E, D, H = 4, 6, 5


def _reference_grads(bank: Experts, x: torch.Tensor, counts: list[int], g: torch.Tensor) -> list:
    """Gradients of sum(y * g) for a per-expert loop over fresh copies of the weights."""
    w1, b1, w2, b2 = (p.detach().clone().requires_grad_() for p in (bank.w1, bank.b1, bank.w2, bank.b2))
    out, start = [], 0
    for e, c in enumerate(counts):
        rows = x[start:start + c]
        start += c
        out.append(torch.relu(rows @ w1[e] + b1[e]) @ w2[e] + b2[e])
    (torch.cat(out) * g).sum().backward()
    return [w1.grad, b1.grad, w2.grad, b2.grad]


def _step(bank: Experts, x: torch.Tensor, counts: list[int], g: torch.Tensor) -> None:
    bank.zero_grad(set_to_none=True)
    (bank(x, torch.tensor(counts)) * g).sum().backward()


def test_gradients_exact_when_the_buffer_is_reused_and_experts_go_empty():
    """Step 1 fills every expert's gradient; step 2 leaves experts 1 and 3 empty: their grads must be 0."""
    torch.manual_seed(0)
    bank = Experts(E, D, H).double()
    for counts in ([2, 3, 1, 4], [5, 0, 5, 0], [0, 0, 0, 7]):
        x = torch.randn(sum(counts), D, dtype=torch.float64)
        g = torch.randn(sum(counts), D, dtype=torch.float64)
        _step(bank, x, counts, g)
        ref = _reference_grads(bank, x, counts, g)
        for p, r in zip((bank.w1, bank.b1, bank.w2, bank.b2), ref):
            torch.testing.assert_close(p.grad, r)
    # The memory was in fact reused: the last gradient lives in the kept storage.
    assert bank.w1.grad.data_ptr() == bank.grad_buffers[0].storage.data_ptr()


def test_a_gradient_still_held_is_never_overwritten():
    torch.manual_seed(1)
    bank = Experts(E, D, H)
    counts = [1, 2, 3, 4]
    x = torch.randn(10, D)
    _step(bank, x, counts, torch.ones(10, D))
    held = bank.w2.grad
    saved = held.clone()
    _step(bank, 2 * x, counts, -torch.ones(10, D))
    assert torch.equal(held, saved)
    assert bank.w2.grad.data_ptr() != held.data_ptr()


def test_accumulation_without_resetting_grads_adds_up():
    torch.manual_seed(2)
    bank = Experts(E, D, H)
    counts = [3, 3, 0, 4]
    x, g = torch.randn(10, D), torch.randn(10, D)
    _step(bank, x, counts, g)
    first = bank.w1.grad.clone()
    for _ in range(2):
        (bank(x, torch.tensor(counts)) * g).sum().backward()
    torch.testing.assert_close(bank.w1.grad, 3 * first)


def test_grouped_linear_with_a_buffer_passes_gradcheck():
    torch.manual_seed(3)
    counts = [2, 0, 3]
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    buf = GradBuffer()
    assert torch.autograd.gradcheck(lambda x, w, b: grouped_linear(x, w, b, counts, buf), (x, w, b))


def test_copies_of_the_bank_start_without_the_kept_memory():
    bank = Experts(E, D, H)
    _step(bank, torch.randn(4, D), [1, 1, 1, 1], torch.ones(4, D))
    bank.zero_grad(set_to_none=True)
    clone = copy.deepcopy(bank)
    assert clone.grad_buffers[0].storage is None
    assert bank.grad_buffers[0].storage is not None


def test_experts_spread_over_threads_match_the_reference():
    """With 2 torch threads the per-expert loop runs on a thread pool: same outputs and gradients."""
    torch.manual_seed(4)
    bank = Experts(8, D, H).double()
    counts = [3, 0, 4, 2, 5, 1, 0, 3]  # no expert above a thread's share, so the pool is used
    x = torch.randn(sum(counts), D, dtype=torch.float64)
    g = torch.randn(sum(counts), D, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _step(bank, x, counts, g)
        assert torch.get_num_threads() == 2  # restored after the loops
        w = torch.randn(8, D, H, dtype=torch.float64, requires_grad=True)
        xr = x.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda x, w: grouped_linear(x, w, None, counts), (xr, w))
    finally:
        torch.set_num_threads(before)
    ref = _reference_grads(bank, x, counts, g)
    for p, r in zip((bank.w1, bank.b1, bank.w2, bank.b2), ref):
        torch.testing.assert_close(p.grad, r)
