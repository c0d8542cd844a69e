"""The chip policy's sampling temperature: logits / T, greedy unchanged, reaches fine-tuning, CLI checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moeplace.cli import main
from moeplace.place.chip.agent import make_policy, train_chip_rl
from moeplace.place.chip.batched import BatchedChipEnv
from moeplace.place.chip.policy import MASKED_LOGIT, ChipPolicy
from moeplace.place.chip.transfer import policy_episodes, run_pretrained
from moeplace.rl.vec import obs_to_tensor


def _trained_looking(seed: int = 0) -> ChipPolicy:
    """A ChipPolicy with a non-zero conv head (an untrained one is the wire-mask prior alone)."""
    torch.manual_seed(seed)
    policy = ChipPolicy(16, 2, 4)
    with torch.no_grad():
        policy.out.weight.normal_(0.0, 1.0)
    return policy


def test_temperature_divides_the_legal_logits(problem) -> None:
    policy = _trained_looking()
    env = BatchedChipEnv(problem, 3, design=policy.add_design(problem))
    obs, _ = env.reset(seed=0)
    obs_t = obs_to_tensor(obs)
    with torch.no_grad():
        cold, _ = policy(obs_t)
        policy.temperature = 2.5
        warm, _ = policy(obs_t)
    legal = torch.as_tensor(obs["action_mask"]).reshape(3, -1).bool()
    assert torch.allclose(warm[legal], cold[legal] / 2.5, atol=1e-5)
    assert (warm[~legal] < MASKED_LOGIT / 10).all()  # illegal cells stay out of reach
    assert torch.equal(warm.argmax(dim=1), cold.argmax(dim=1))  # the greedy cell is the same


def test_greedy_episode_ignores_temperature_sampling_does_not(problem) -> None:
    policy = _trained_looking(1)
    policy.add_design(problem)
    greedy = policy_episodes(problem, policy, 1, greedy=True)[0]["placement"]
    cold = [e["placement"] for e in policy_episodes(problem, policy, 8, greedy=False, seed=3)]
    policy.temperature = 4.0
    assert np.array_equal(policy_episodes(problem, policy, 1, greedy=True)[0]["placement"], greedy)
    warm = [e["placement"] for e in policy_episodes(problem, policy, 8, greedy=False, seed=3)]
    assert any(not np.array_equal(a, b) for a, b in zip(cold, warm))


def test_run_pretrained_samples_warm_and_restores_the_policy(problem) -> None:
    policy = _trained_looking(2)
    runs = {t: run_pretrained(problem, policy, finetune_s=0.0, samples=6, seed=5, progress=False,
                              temperature=t)[1] for t in (1.0, 3.0)}
    assert policy.temperature == 1.0  # the caller's policy is left as it was
    assert runs[1.0]["greedy"]["proxy"] == runs[3.0]["greedy"]["proxy"]
    with pytest.raises(ValueError, match="temperature"):
        run_pretrained(problem, policy, finetune_s=0.0, samples=2, temperature=0.0)


def test_fine_tuning_policies_sample_at_the_temperature(problem) -> None:
    assert make_policy(problem, 16, 2, 4, temperature=2.0).temperature == 2.0
    init = dict(_trained_looking(3).state_dict())
    kw = dict(max_episodes=8, seed=4, hidden=16, rounds=2, channels=4, n_envs=4, progress=False,
              init_weights=init, greedy_every=0)
    default, one, warm = (train_chip_rl(problem, **kw), train_chip_rl(problem, temperature=1.0, **kw),
                          train_chip_rl(problem, temperature=3.0, **kw))
    assert [h[2] for h in default.history] == [h[2] for h in one.history]  # 1 is the default
    assert [h[2] for h in warm.history] != [h[2] for h in one.history]


@pytest.mark.parametrize("option, value, error", [("--rl-temperature", "0", "must be > 0"),
                                                   ("--rl-incumbent-logit", "-1", "must be >= 0")])
def test_cli_refuses_bad_rl_sampling_values(design, capsys, option, value, error) -> None:
    capsys.readouterr()
    argv = ["place", "chip", "--netlist", str(design / "netlist.pb.txt"), "--plc",
            str(design / "initial.plc"), "--method", "rl", "--budget", "2s", option, value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{option}: {error}" in err[0], err
