"""One rank of a multi-process expert-parallel check (launched by test_parallel.py, torchrun-style env).

    RANK=r WORLD_SIZE=w MASTER_ADDR=127.0.0.1 MASTER_PORT=p python _worker.py SCENARIO OUT_DIR

Every rank builds the same single-process reference from the same seed, checks its own part of
the expert-parallel result against it, and writes OUT_DIR/rank<r>.json; a failed check raises.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from moeplace.lm.distributed import init_distributed, local_rows, shutdown
from moeplace.moe import MoE
from moeplace.moe.experts import Experts
from moeplace.moe.parallel import (
    ExpertParallel,
    apply_expert_parallel,
    clip_grad_norm_,
    sync_gradients,
)
from moeplace.moe.sharded import load_sharded, save_sharded

TOL = dict(rtol=1e-5, atol=1e-5)


def close(name: str, got: torch.Tensor, want: torch.Tensor) -> float:
    """Assert got == want within 1e-5 (float32) and return the max abs difference."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got - want).abs().max().item() if got.numel() else 0.0
    assert torch.allclose(got, want, **TOL), f"{name}: max abs diff {diff}"
    return diff


def dense_experts(x: torch.Tensor, expert: torch.Tensor, w1, b1, w2, b2) -> torch.Tensor:
    """Reference: relu(x W1[e] + b1[e]) W2[e] + b2[e] for each row with its own expert e (no grouping)."""
    h = torch.relu(torch.bmm(x[:, None, :], w1[expert])[:, 0] + b1[expert])
    return torch.bmm(h[:, None, :], w2[expert])[:, 0] + b2[expert]


def routing_cases(world: int, num_experts: int) -> dict[str, list[list[int]]]:
    """Tokens per expert sent by each rank: random, everything to rank 0's experts, a rank with none."""
    g = torch.Generator().manual_seed(7)
    random = [torch.randint(0, 4, (num_experts,), generator=g).tolist() for _ in range(world)]
    local = num_experts // world
    to_rank0 = [[3 if e < local else 0 for e in range(num_experts)] for _ in range(world)]
    last = [0] * (num_experts - local) + [2] * local
    one_empty = [last] + [[1] * num_experts for _ in range(world - 2)] + [[0] * num_experts]
    return {"random": random, "all_to_rank0": to_rank0, "sender_without_tokens": one_empty}


def check_experts(ctx, out: dict) -> None:
    """ExpertParallel on controlled (incl. uneven) routing equals the dense per-token reference."""
    world, rank = ctx.world_size, ctx.rank
    E, d, h = 2 * world, 6, 5
    torch.manual_seed(0)
    bank = Experts(E, d, h)
    ep = ExpertParallel(copy.deepcopy(bank))
    a, b = ep.expert_start, ep.expert_end
    for case, counts in routing_cases(world, E).items():
        g = torch.Generator().manual_seed(11)
        xs = [torch.randn(sum(c), d, generator=g) for c in counts]
        cot = [torch.randn(sum(c), d, generator=g) for c in counts]
        # single-process reference over every rank's tokens
        params = [p.detach().clone().requires_grad_() for p in (bank.w1, bank.b1, bank.w2, bank.b2)]
        ref_x = [x.clone().requires_grad_() for x in xs]
        ref_y = [dense_experts(x, torch.repeat_interleave(torch.arange(E), torch.tensor(c)), *params)
                 for x, c in zip(ref_x, counts)]
        sum((y * c).sum() for y, c in zip(ref_y, cot)).backward()
        # expert parallel: this rank's tokens only
        ep.zero_grad(set_to_none=True)
        x = xs[rank].clone().requires_grad_()
        y = ep(x, torch.tensor(counts[rank]))
        (y * cot[rank]).sum().backward()
        close(f"{case} y", y, ref_y[rank].detach())
        close(f"{case} x.grad", x.grad, ref_x[rank].grad)
        for name, p in zip(("w1", "b1", "w2", "b2"), params):
            close(f"{case} {name}.grad", getattr(ep, name).grad, p.grad[a:b])
        assert ep.tokens_received == sum(sum(c[a:b]) for c in counts)
        out.setdefault("experts_cases", []).append({"case": case, "received": ep.tokens_received})


class TinyNet(nn.Module):
    """A data-parallel projection, an MoE layer and a data-parallel head (what an LM block looks like)."""

    def __init__(self, d: int, h: int, E: int, k: int):
        super().__init__()
        self.inp = nn.Linear(d, d)
        self.moe = MoE(d, h, E, k, router="softmax_topk")
        self.head = nn.Linear(d, 3)
        nn.init.normal_(self.moe.router.w_gate, std=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.moe(self.inp(x)))


def check_model(ctx, out: dict) -> None:
    """Outputs, synced grads and clipped norm of an expert-parallel TinyNet equal one process's."""
    world = ctx.world_size
    for case in ("random", "all_to_rank0"):
        torch.manual_seed(1)
        ref = TinyNet(6, 5, 2 * world, 2)
        if case == "all_to_rank0":  # every token picks experts 0 and 1, both on rank 0
            with torch.no_grad():
                ref.moe.router.w_gate.zero_()
                ref.inp.weight.copy_(torch.eye(6))
                ref.inp.bias.fill_(1.0)
                ref.moe.router.w_gate[:, :2] = 1.0
        model = copy.deepcopy(ref)
        apply_expert_parallel(model)
        g = torch.Generator().manual_seed(3)
        B = 4 * world
        X = torch.rand(B, 3, 6, generator=g)
        T = torch.randn(B, 3, 3, generator=g)
        ref_y = ref(X)
        F.mse_loss(ref_y, T).backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05)
        y = model(local_rows(X, ctx))
        F.mse_loss(y, local_rows(T, ctx)).backward()
        sync_gradients(model)
        norm = clip_grad_norm_(model, 0.05)
        close(f"{case} output", y, local_rows(ref_y.detach(), ctx))
        close(f"{case} grad norm", norm, ref_norm)
        ep = model.moe.experts
        for name, p in model.named_parameters():
            want = ref.get_parameter(name).grad
            if name.startswith("moe.experts."):
                want = want[ep.expert_start:ep.expert_end]
            close(f"{case} grad {name}", p.grad, want)
        out.setdefault("model_cases", []).append({"case": case, "received": ep.tokens_received})


def check_reshard(ctx, out_dir: Path, out: dict) -> None:
    """Load a 1-process checkpoint into W ranks (same outputs); take one step; save W shards."""
    torch.manual_seed(1)
    model = TinyNet(6, 5, 2 * ctx.world_size, 2)
    apply_expert_parallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-4)
    extra = load_sharded(out_dir / "ckpt1", model)
    data = load_file(str(out_dir / "data.safetensors"))
    close("reshard 1->W output", model(local_rows(data["X"], ctx)), local_rows(data["Y1"], ctx))
    F.mse_loss(model(local_rows(data["X"], ctx)), local_rows(data["T"], ctx)).backward()
    sync_gradients(model)
    opt.step()
    save_sharded(out_dir / "ckptW", model, opt, extra={"step": 1, "from": extra["tag"]})
    out["reshard"] = True


def main() -> None:
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    ctx = init_distributed(timeout_s=60)
    torch.set_num_threads(1)
    out: dict = {"rank": ctx.rank, "world": ctx.world_size}
    if scenario in ("layer", "all"):
        check_experts(ctx, out)
        check_model(ctx, out)
    if scenario in ("reshard", "all"):
        check_reshard(ctx, out_dir, out)
    (out_dir / f"rank{ctx.rank}.json").write_text(json.dumps(out))
    shutdown(ctx)


if __name__ == "__main__":
    main()
