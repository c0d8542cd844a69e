"""Chip policy files (bad ones exit 2 naming the file), zero-shot rollouts and `--method rl --policy`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moeplace.checkpoint import save_checkpoint
from moeplace.cli import main
from moeplace.place.chip.policy import ChipPolicy
from moeplace.place.chip.policy_io import DEFAULT_POLICY, FORMAT, VERSION, arch_of, load_policy, save_policy
from moeplace.place.chip.transfer import policy_episodes, run_pretrained


def _place(design, *extra: str) -> list[str]:
    return ["place", "chip", "--netlist", str(design / "netlist.pb.txt"), "--plc",
            str(design / "initial.plc"), "--method", "rl", "--budget", "3s", "--rl-envs", "2",
            "--out", str(design.parent / "out.plc"), *extra]


def _error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _state(policy, **changes):
    state = {"format": FORMAT, "version": VERSION, "arch": arch_of(policy),
             "policy": dict(policy.state_dict()), "trained": {}}
    for k, v in changes.items():
        if k in state["arch"]:
            state["arch"][k] = v
        else:
            state[k] = v
    return state


def test_bad_policy_files_exit_2_naming_the_file(design, tmp_path, capsys) -> None:
    policy = ChipPolicy(16, 2, 4)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x07not a safetensors file at all" * 10)
    other_version = save_checkpoint(tmp_path / "v99.safetensors", _state(policy, version=VERSION + 98))
    other_format = save_checkpoint(tmp_path / "fmt.safetensors", _state(policy, format="something-else"))
    other_features = save_checkpoint(tmp_path / "feat.safetensors", _state(policy, node_dim=9))
    other_shape = save_checkpoint(tmp_path / "shape.safetensors", _state(policy, hidden=32))
    cases = [(corrupt, "corrupt"), (other_version, "version"), (other_format, "not a chip policy"),
             (other_features, "incompatible features"), (other_shape, "does not fit"),
             (tmp_path / "missing", "not found")]
    for path, needle in cases:
        line = _error(_place(design, "--policy", str(path)), capsys)
        assert str(path) in line and needle in line, line


def test_policy_file_round_trip(tmp_path) -> None:
    policy = ChipPolicy(16, 2, 4)
    save_policy(tmp_path, policy, {"updates": 7})
    loaded, trained = load_policy(tmp_path)
    assert trained == {"updates": 7}
    for k, v in policy.state_dict().items():
        assert np.array_equal(v.numpy(), loaded.state_dict()[k].numpy()), k


def test_zero_shot_episodes_are_legal_and_costed(problem) -> None:
    policy = ChipPolicy(16, 2, 4)
    greedy = policy_episodes(problem, policy, 1, greedy=True)
    again = policy_episodes(problem, policy, 1, greedy=True)
    assert np.array_equal(greedy[0]["placement"], again[0]["placement"])  # greedy: no randomness
    sampled = policy_episodes(problem, policy, 5, greedy=False, seed=1)
    assert len(sampled) == 5
    for e in greedy + sampled:
        assert problem.is_legal(e["placement"])
        assert e["cost"] == pytest.approx(problem.terms(e["placement"])["proxy"])
    res, phases = run_pretrained(problem, policy, finetune_s=0.0, samples=5, seed=1, progress=False)
    assert "finetuned" not in phases
    assert res.cost == pytest.approx(min(phases["greedy"]["proxy"], phases["sampled"]["proxy"]))
    assert res.evaluations == 6


def test_method_rl_with_a_policy_reports_zero_shot_and_fine_tuning(design, tmp_path, capsys) -> None:
    save_policy(tmp_path, ChipPolicy(16, 2, 4))
    capsys.readouterr()
    assert main(_place(design, "--policy", str(tmp_path), "--finetune-budget", "1s", "--rl-samples", "4",
                       "--json")) == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    phases = figures["rl_phases"]
    # zero-shot samples whole batches of --rl-samples for a tenth of --budget
    assert phases["sampled"]["samples"] % 4 == 0 and phases["finetuned"]["episodes"] > 0
    best = min(phases[k]["proxy"] for k in ("greedy", "sampled", "finetuned"))
    assert figures["rl"]["proxy"] == pytest.approx(best, abs=1e-4)
    assert any(line.startswith(f"rl from {tmp_path}: zero-shot greedy") for line in out)


def test_policy_none_is_ppo_from_scratch(design, capsys) -> None:
    assert main(_place(design, "--policy", "none", "--json")) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["rl_phases"] is None and figures["rl"]["evaluations"] > 0


def test_rl_plus_sa_is_its_own_row(design, capsys) -> None:
    assert main(_place(design, "--policy", "none", "--json")[:-1] + ["--method", "rl+sa", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["rl+sa"]["placement"] == "rl+sa" and "rl" not in figures


def test_shipped_policy_loads_and_is_small() -> None:
    assert DEFAULT_POLICY.is_file() and DEFAULT_POLICY.stat().st_size <= 5 * 2**20
    policy, trained = load_policy(DEFAULT_POLICY)
    assert isinstance(policy, ChipPolicy) and trained.get("by") == "moeplace place chip pretrain"
