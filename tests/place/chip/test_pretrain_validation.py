"""Pre-training keeps the policy that scores best on held-out validation designs; the edge prior;
zero-shot sampling in batches for a time budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moeplace.cli import main
from moeplace.place.chip.corpus import generate_corpus, load_corpus
from moeplace.place.chip.policy import ChipPolicy, set_priors
from moeplace.place.chip.policy_io import load_policy
from moeplace.place.chip.pretrain import corpus_problems
from moeplace.place.chip.transfer import policy_episodes, run_pretrained
from moeplace.rl.vec import obs_to_tensor
from moeplace.runs import read_jsonl


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """A tiny training corpus and a tiny validation corpus of another seed."""
    train, val = tmp_path_factory.mktemp("train"), tmp_path_factory.mktemp("val")
    generate_corpus(train, 2, seed=3, min_macros=3, max_macros=6, show_progress=False)
    generate_corpus(val, 2, seed=4, min_macros=3, max_macros=6, show_progress=False)
    return train, val


def test_validation_keeps_the_best_scoring_policy(corpora, tmp_path) -> None:
    train, val = corpora
    out = tmp_path / "run"
    assert main(["place", "chip", "pretrain", "--corpus", str(train), "--no-builtin", "--out", str(out),
                 "--envs", "2", "--hidden", "16", "--channels", "4", "--fd-iterations", "2", "--seed", "5",
                 "--updates", "4", "--validation", str(val), "--val-every", "2", "--edge-prior", "1",
                 "--lr", "3e-3"]) == 0
    records = read_jsonl(out / "validation.jsonl")
    assert [r["step"] for r in records] == [0, 2, 4]
    assert records[0]["validation"] == 1.0  # the untrained prior is the reference
    best = min(records, key=lambda r: r["validation"])
    # the policy file is the best-scoring weights: rescore it from scratch on fresh problems
    policy, trained = load_policy(out)
    assert trained["validation_score"] == pytest.approx(best["validation"])
    problems = [p for _, p in corpus_problems(load_corpus([val], builtin=False), 2)]
    costs = [policy_episodes(p, policy, 1, greedy=True)[0]["cost"] for p in problems]
    assert costs == pytest.approx(best["validation_costs"])
    ref = records[0]["validation_costs"]
    assert float(np.mean([c / r for c, r in zip(costs, ref)])) == pytest.approx(best["validation"])


def test_edge_prior_lowers_each_logit_by_its_distance_to_the_edge(corpora) -> None:
    d = load_corpus([corpora[0]], builtin=False)[0]
    problem = corpus_problems([d], 2)[0][1]
    from moeplace.place.chip.batched import BatchedChipEnv

    logits = []
    for edge in (0.0, 2.5):
        torch.manual_seed(0)
        policy = ChipPolicy(16, 2, 4)
        set_priors(policy, edge=edge)
        obs, _ = BatchedChipEnv(problem, 1, design=policy.add_design(problem)).reset()
        with torch.no_grad():
            logits.append(policy(obs_to_tensor(obs))[0][0])
    g = problem.grid
    rows, cols = np.meshgrid(np.arange(g.rows), np.arange(g.columns), indexing="ij")
    cx, cy = (cols + 0.5) / g.columns, (rows + 0.5) / g.rows  # cell centres as canvas fractions
    cells_to_edge = np.minimum.reduce([cx, 1 - cx, cy, 1 - cy]).ravel() * min(g.rows, g.columns)
    legal = logits[0] > -1e8
    got = (logits[1] - logits[0])[legal].numpy()
    assert got == pytest.approx(-2.5 * cells_to_edge[legal.numpy()], abs=1e-4)


def test_zero_shot_budget_samples_whole_batches_and_keeps_the_first(corpora) -> None:
    d = load_corpus([corpora[1]], builtin=False)[0]
    problem = corpus_problems([d], 2)[0][1]
    one, phases_one = run_pretrained(problem, ChipPolicy(16, 2, 4), finetune_s=0.0, samples=3,
                                     zero_shot_s=0.0, seed=2, progress=False)
    assert phases_one["sampled"]["samples"] == 3 and one.evaluations == 4
    many, phases = run_pretrained(problem, ChipPolicy(16, 2, 4), finetune_s=0.0, samples=3,
                                  zero_shot_s=0.5, seed=2, progress=False)
    n = phases["sampled"]["samples"]
    assert n % 3 == 0 and many.evaluations == 1 + n
    assert many.cost <= one.cost + 1e-12  # the first batch is the same draw, so more batches never lose


def test_resumed_run_continues_its_validation(corpora, tmp_path, ctrl_c_in_rollout) -> None:

    train, val = corpora
    args = ["place", "chip", "pretrain", "--corpus", str(train), "--no-builtin", "--envs", "2",
            "--hidden", "16", "--channels", "4", "--fd-iterations", "2", "--seed", "5", "--updates", "4",
            "--lr", "3e-3",
            "--validation", str(val), "--val-every", "1"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main([*args, "--out", str(straight)]) == 0
    restore = ctrl_c_in_rollout(3)
    assert main([*args, "--out", str(broken)]) == 130
    restore()
    assert main([*args, "--out", str(broken), "--resume"]) == 0
    a, b = read_jsonl(straight / "validation.jsonl"), read_jsonl(broken / "validation.jsonl")
    assert [(r["step"], r["validation"], r["best"]) for r in a] == [(r["step"], r["validation"], r["best"])
                                                                    for r in b]
    assert load_policy(straight)[1]["validation_score"] == load_policy(broken)[1]["validation_score"]
