"""Foundation: checkpoints round-trip without pickle, atomic writes, CLI error convention."""

import json

import pytest
import torch

from moeplace.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from moeplace.cli import main
from moeplace.errors import CheckpointError
from moeplace.utils import atomic_write_text


def test_checkpoint_roundtrip_nested_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optim": opt.state_dict(), "step": 7,
             "rng": torch.get_rng_state(), "note": None}
    path = save_checkpoint(tmp_path / "ck.safetensors", state)
    back = load_checkpoint(path)
    assert back["step"] == 7 and back["note"] is None
    assert torch.equal(back["rng"], torch.get_rng_state())
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optim"])  # int keys of optimizer state survive
    assert set(opt2.state_dict()["state"]) == set(opt.state_dict()["state"])
    assert json.loads((tmp_path / "ck.json").read_text())


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_model_state_mismatch_names_the_tensor():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(4, 2)
    with pytest.raises(CheckpointError, match="weight"):
        load_model_state(b, a.state_dict())


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "out.txt"
    atomic_write_text(p, "old")
    from moeplace.utils import atomic_path

    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.txt"]


def test_cli_bad_argument_exits_2(capsys):
    assert main(["no-such-area"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_atomic_files_get_the_usual_mode(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", {"a": torch.zeros(2)})
        atomic_write_text(tmp_path / "t.txt", "x")
    finally:
        os.umask(mask)
    for p in (path, tmp_path / "m.json", tmp_path / "t.txt"):
        assert oct(os.stat(p).st_mode & 0o777) == oct(0o644), p
