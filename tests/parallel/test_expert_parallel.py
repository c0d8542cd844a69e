"""Expert parallelism on 2 and 4 gloo processes equals one process (outputs, grads, checkpoints)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import launch  # noqa: E402
from _worker import TinyNet  # noqa: E402

from moeplace.errors import CheckpointError  # noqa: E402
from moeplace.moe.parallel import apply_expert_parallel  # noqa: E402
from moeplace.moe.sharded import load_sharded, read_index, save_sharded  # noqa: E402

WORKER = str(Path(__file__).resolve().parent / "_worker.py")


def _ranks(out_dir: Path, world: int) -> list[dict]:
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.parametrize("world", [2, 4])
def test_layer_equals_single_process(tmp_path, world):
    """Outputs and grads (1e-5) match one process, incl. routing where some ranks receive nothing."""
    launch.run([WORKER, "layer", str(tmp_path)], world)
    ranks = _ranks(tmp_path, world)
    received = {c["case"]: [r["experts_cases"][i]["received"] for r in ranks]
                for i, c in enumerate(ranks[0]["experts_cases"])}
    # the uneven cases really were uneven: ranks other than 0 computed nothing
    assert received["all_to_rank0"][0] > 0 and not any(received["all_to_rank0"][1:])
    model_received = [r["model_cases"][1]["received"] for r in ranks]
    assert model_received[0] == 4 * world * 3 * 2 and not any(model_received[1:])


def test_reshard_1_to_2_to_1(tmp_path):
    """A 1-process checkpoint loads on 2 ranks; their 2 shards after one step load back on 1 process."""
    torch.manual_seed(1)
    model = TinyNet(6, 5, 4, 2)
    g = torch.Generator().manual_seed(5)
    X, T = torch.rand(4, 3, 6, generator=g), torch.randn(4, 3, 3, generator=g)
    with torch.no_grad():
        Y1 = model(X)
    save_sharded(tmp_path / "ckpt1", model, extra={"tag": "one"})
    save_file({"X": X, "T": T, "Y1": Y1}, str(tmp_path / "data.safetensors"))
    assert read_index(tmp_path / "ckpt1")["world_size"] == 1

    launch.run([WORKER, "reshard", str(tmp_path)], 2)

    index = read_index(tmp_path / "ckptW")
    assert index["world_size"] == 2 and len(index["shards"]) == 2
    assert index["experts"]["moe.experts.w1"]["ranges"] == [[0, 2], [2, 4]]
    # the same step in one process on the global batch, the independent reference. (eps: Adam turns
    # router grads of ~1e-11 into full-size steps, so float rounding of them would not compare.)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-4)
    F.mse_loss(model(X), T).backward()
    opt.step()
    back = TinyNet(6, 5, 4, 2)
    back_opt = torch.optim.AdamW(back.parameters(), lr=1e-2, eps=1e-4)
    extra = load_sharded(tmp_path / "ckptW", back, back_opt)
    assert extra == {"step": 1, "from": "one"}
    for name, p in model.named_parameters():
        torch.testing.assert_close(back.get_parameter(name), p, rtol=1e-5, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(back_opt.state[back.get_parameter(name)][key], opt.state[p][key],
                                       rtol=1e-5, atol=1e-7, msg=f"{name} {key}")
    with torch.no_grad():
        torch.testing.assert_close(back(X), model(X), rtol=1e-5, atol=1e-6)


def test_load_rejects_mismatched_checkpoint(tmp_path):
    """A checkpoint with other experts, or a folder without an index, is a one-line CheckpointError."""
    save_sharded(tmp_path / "c", TinyNet(6, 5, 4, 2))
    with pytest.raises(CheckpointError, match="experts"):
        load_sharded(tmp_path / "c", TinyNet(6, 5, 2, 2))
    with pytest.raises(CheckpointError, match="index.json"):
        load_sharded(tmp_path, TinyNet(6, 5, 4, 2))


def test_world_one_is_the_plain_layer():
    """Without a process group, apply_expert_parallel keeps all experts and changes nothing numerically."""
    torch.manual_seed(2)
    ref = TinyNet(6, 5, 4, 2)
    model = copy.deepcopy(ref)
    names = apply_expert_parallel(model)
    assert names == ["moe.experts"] and model.moe.experts.num_local_experts == 4
    assert set(dict(model.named_parameters())) == set(dict(ref.named_parameters()))
    X = torch.rand(2, 5, 6)
    torch.testing.assert_close(model(X), ref(X), rtol=0, atol=0)
    assert model.moe.active_flops_per_token() == ref.moe.active_flops_per_token()
