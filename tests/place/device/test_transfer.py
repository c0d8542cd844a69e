"""The transfer policy: its features against hand computation, independence from graph size and
device count, device-permutation equivariance, checkpoints, corpus specs, pre-training resume, CLI."""

import json
import math

import numpy as np
import pytest
import torch

from moeplace.errors import CheckpointError, InputError
from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.corpus import FAMILIES, build_corpus, parse_spec, sample_configs
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.transfer import (
    STEP_FEATURES,
    TransferPlacer,
    context_of,
    load_policy,
    save_policy,
)

from .problems import branchy_problem, symmetric_problem

G = 1e9


def test_step_features_match_hand_computation():
    """branchy: 8 ops, work w = [1,4,4,3,3,2,2,1] GFLOP fwd (+2w bwd), 0.2 GB per edge, links 2 GB/s
    and 10 ms. The time unit is the mean op's time on the fastest device (4 GFLOP/s): 3*2.5/4 s."""
    p = branchy_problem()
    ctx = context_of(p)
    unit = 3 * 2.5 / 4
    place = torch.tensor([[0, 1, 2, 0, 0, 1, 1, 0]])
    f = TransferPlacer.teacher_features(ctx, place)[0]  # [G, D, STEP]
    comp, comm, mem = (STEP_FEATURES.index(k) for k in ("compute", "comm_in", "memory_after"))
    # op 7 (preds 2 on cpu, 4 on fast, 6 on slow) placed on fast: two transfers of 0.2 GB at 2 GB/s + 10 ms
    assert f[7, 0, comm].item() == pytest.approx(math.log1p((2 * 0.1 + 2 * 0.01) / unit), rel=1e-5)
    # ... on cpu: transfers from fast and slow
    assert f[7, 2, comm].item() == pytest.approx(math.log1p((2 * 0.1 + 2 * 0.01) / unit), rel=1e-5)
    # op 1 (pred 0 on fast) placed on fast: nothing to move
    assert f[1, 0, comm].item() == pytest.approx(0.0, abs=1e-7)
    # compute of op 1 (4 GFLOP fwd + 8 bwd) on the slow GPU (2 GFLOP/s): 6 s
    assert f[1, 1, comp].item() == pytest.approx(math.log1p(6.0 / unit), rel=1e-5)
    load_b = STEP_FEATURES.index("load_before")
    # before op 4, fast holds ops 0 and 3: (1 + 3) * 3 / 4 = 3 s of compute
    assert f[4, 0, load_b].item() == pytest.approx(math.log1p(3.0 / unit) / 4, rel=1e-5)
    assert f[:, :, mem].abs().max().item() == 0.0  # no parameters


def test_finish_time_features_follow_list_scheduling_by_hand():
    """Same placement, list-scheduled by hand (op time 3w / FLOP/s; a transfer 0.1 s + 10 ms):
    fast runs 0 [0, 0.75], 3 [0.75, 3], 4 [3, 5.25]; slow 1 [0.86, 6.86], 5 [6.86, 9.86], 6 [9.86,
    12.86]; cpu 2 [6.97, 18.97]. Op 7 waits for op 2: on fast it ends at 19.08 + 0.75 = 19.83, on
    slow 19.08 + 1.5 = 20.58, on cpu 18.97 + 3 = 21.97. Op 4 on slow would start when op 1 ends
    (6.86, its input from fast is there at 3.11) and end at 6.86 + 4.5 = 11.36."""
    p = branchy_problem()
    unit = 3 * 2.5 / 4
    place = torch.tensor([[0, 1, 2, 0, 0, 1, 1, 0]])
    f = TransferPlacer.teacher_features(context_of(p), place)[0]
    fin, rel = STEP_FEATURES.index("finish"), STEP_FEATURES.index("finish_vs_best")
    for d, end in enumerate((19.83, 20.58, 21.97)):
        assert f[7, d, fin].item() == pytest.approx(math.log1p(end / unit) / 4, rel=1e-5)
        assert f[7, d, rel].item() == pytest.approx(math.log1p((end - 19.83) / unit), abs=1e-5)
    assert f[4, 1, fin].item() == pytest.approx(math.log1p(11.36 / unit) / 4, rel=1e-5)


def test_finish_times_are_scheduled_op_by_op_so_a_pipelined_layer_starts_early():
    """Two groups of two ops, A = a0 -> a1 and B = b0 -> b1, with a0 -> b0 and a1 -> b1 (two layers
    over two time steps); every op 3 s on either device, every transfer 1 s. A on device 0: a0 [0, 3],
    a1 [3, 6]. B on device 1: b0 [4, 7] (a0's output arrives at 4), b1 [7, 10]; on device 0 it
    waits for A: [6, 9], [9, 12]. (Group by group, B on device 1 would end at 6 + 1 + 6 = 13.)"""
    from moeplace.place.device.graph import OpGraph

    n = 4
    g = OpGraph(names=["a0", "a1", "b0", "b1"], kinds=["x"] * n, fwd_flops=np.full(n, 1.0 * G),
                bwd_flops=np.full(n, 2.0 * G), out_bytes=np.full(n, 1.0 * G), param_bytes=np.zeros(n),
                trivial=np.zeros(n, bool), edges=np.array([[0, 0, 1, 2], [1, 2, 3, 3]]),
                anchor=np.full(n, -1), scope=[""] * n, layer=[""] * n,
                group=np.array([0, 0, 1, 1]), group_names=["A", "B"], grouping="module")
    c = load_cluster({"devices": [{"name": f"d{i}", "flops": G, "memory": 1e12} for i in range(2)],
                      "links": [{"between": "all", "bandwidth": G, "latency": 0.0}]})
    ctx = context_of(DevicePlacementProblem(g, c))
    unit = 6.0  # the mean group's time on its fastest device
    f = TransferPlacer.teacher_features(ctx, torch.tensor([[0, 1]]))[0]
    fin, rel = STEP_FEATURES.index("finish"), STEP_FEATURES.index("finish_vs_best")
    assert f[1, 1, fin].item() == pytest.approx(math.log1p(10 / unit) / 4, rel=1e-5)
    assert f[1, 0, fin].item() == pytest.approx(math.log1p(12 / unit) / 4, rel=1e-5)
    assert f[1, 0, rel].item() == pytest.approx(math.log1p(2 / unit), rel=1e-5)
    assert f[1, 1, rel].item() == pytest.approx(0.0, abs=1e-6)


def test_sampling_and_teacher_forced_scoring_agree():
    """The step-by-step sampler and the one-shot teacher-forced scorer give the same log-probabilities."""
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    ctx = context_of(symmetric_problem())
    acts, logp = policy.sample_with_logp(ctx, 8, generator=torch.Generator().manual_seed(1))
    logp2, ent = policy.score(ctx, acts)
    assert torch.allclose(logp, logp2.detach(), atol=1e-4)
    assert (ent > 0).all()


def test_one_policy_serves_any_graph_size_and_device_count():
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    for prob in (branchy_problem(), symmetric_problem()):
        for cl in ("k80x4", "a100x8", "hetero"):
            problem = DevicePlacementProblem(prob.graph, load_cluster(cl))
            acts, _ = policy.sample_with_logp(context_of(problem), 3)
            assert acts.shape == (3, problem.num_nodes)
            assert int(acts.min()) >= 0 and int(acts.max()) < problem.num_slots


def test_permuting_the_devices_permutes_the_probabilities():
    """The head scores each device from its own features: relabelling devices relabels the placement."""
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    p = branchy_problem()
    perm = [2, 0, 1]  # new device i is old device perm[i]
    spec = p.cluster.to_dict()
    spec["devices"] = [spec["devices"][i] for i in perm]
    q = DevicePlacementProblem(p.graph, load_cluster(spec))
    place = torch.tensor([[0, 1, 2, 0, 0, 1, 1, 0], [2, 2, 1, 0, 1, 0, 2, 1]])
    inv = torch.tensor(np.argsort(perm))
    lp, _ = policy.score(context_of(p), place)
    lq, _ = policy.score(context_of(q), inv[place])
    assert torch.allclose(lp, lq, atol=1e-5)


def test_policy_checkpoint_round_trip_and_foreign_features(tmp_path):
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=8, rounds=1)
    save_policy(tmp_path / "policy.safetensors", policy)
    back = load_policy(tmp_path)
    ctx = context_of(branchy_problem())
    a = torch.zeros(1, 8, dtype=torch.long)
    assert torch.equal(policy.score(ctx, a)[0], back.score(ctx, a)[0])
    from moeplace.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(tmp_path / "policy.safetensors")
    state["step_features"] = ["compute", "comm_in"]
    save_checkpoint(tmp_path / "other.safetensors", state)
    with pytest.raises(CheckpointError, match="other step features"):
        load_policy(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "missing")


def test_corpus_spec_families_seeds_and_exclusion():
    assert parse_spec("builtin:2") == [(f, 2) for f in FAMILIES]
    assert parse_spec("nmt:3,pkg.mod:make") == [("nmt", 3), ("user", "pkg.mod:make")]
    with pytest.raises(InputError, match="not a family"):
        parse_spec("resnet")
    assert sample_configs("transformer", 3, 7) == sample_configs("transformer", 3, 7)
    assert len({json.dumps(c) for c in sample_configs("rnnlm", 5, 0)}) == 5
    corpus = build_corpus("rnnlm:1,moe_lstm:1", seed=0, exclude=("moe_lstm",))
    assert [g.family for g in corpus] == ["rnnlm"]
    with pytest.raises(InputError, match="nothing left"):
        build_corpus("rnnlm:1", exclude=("rnnlm",))


def _untraceable():
    """A model whose forward branches on a tensor's value (torch.fx cannot trace it)."""

    class M(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x

    return M(), (torch.ones(2),)


def test_untraceable_user_model_is_an_input_error():
    with pytest.raises(InputError, match="cannot trace"):
        build_corpus(f"{__name__}:_untraceable")


def _pairs():
    from moeplace.place.device.pretrain import make_pairs

    return make_pairs(build_corpus("rnnlm:1", seed=0), {"k80x4": load_cluster("k80x4"),
                                                         "hetero": load_cluster("hetero")})


def test_pretraining_resumes_to_the_same_state(tmp_path, monkeypatch):
    """4 updates in one go == Ctrl-C after 2 updates, then a resume: same weights, same metrics."""
    from moeplace.place.device.pretrain import PretrainSettings, pretrain
    from moeplace.rl.reinforce import SequenceREINFORCE
    from moeplace.runs import read_jsonl

    settings = PretrainSettings("rnnlm:1", ["k80x4", "hetero"], hidden=8, rounds=1)
    pairs = _pairs()
    pretrain(pairs, settings, tmp_path / "a", budget_s=None, max_updates=4, show_progress=False)
    real_step, calls = SequenceREINFORCE.step, []

    def interrupted_step(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(self, *a, **kw)

    monkeypatch.setattr(SequenceREINFORCE, "step", interrupted_step)
    summary = pretrain(pairs, settings, tmp_path / "b", budget_s=None, max_updates=4, show_progress=False)
    assert summary["interrupted"] and summary["updates"] == 2
    monkeypatch.setattr(SequenceREINFORCE, "step", real_step)
    pretrain(pairs, settings, tmp_path / "b", budget_s=None, max_updates=4, resume=True, show_progress=False)
    wa, wb = load_policy(tmp_path / "a").state_dict(), load_policy(tmp_path / "b").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = read_jsonl(tmp_path / "a" / "metrics.jsonl"), read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in rb] == [1, 2, 3, 4]
    assert [r["mean_ratio"] for r in ra] == [r["mean_ratio"] for r in rb]
    assert (tmp_path / "a" / "curve.png").stat().st_size > 0
    with pytest.raises(InputError, match="other settings"):
        pretrain(pairs, PretrainSettings("rnnlm:1", ["k80x4"], hidden=8, rounds=1), tmp_path / "b",
                 budget_s=None, max_updates=5, resume=True, show_progress=False)


def test_cli_pretrain_then_place_zero_shot_and_finetuned(tmp_path, capsys):
    from moeplace.cli import main

    out = tmp_path / "run"
    assert main(["place", "device", "pretrain", "--corpus", "rnnlm:1", "--clusters", "k80x4",
                 "--updates", "2", "--hidden", "8", "--rounds", "1", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["updates"] == 2
    assert main(["place", "device", "pretrain", "--corpus", "rnnlm:1", "--clusters", "k80x4",
                 "--updates", "2", "--out", str(out)]) == 2  # a run is there: --resume or --overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["place", "device", "--model", "rnnlm", "--size", "tiny", "--cluster", "hetero",
                 "--method", "single,rl", "--policy", str(out), "--finetune-budget", "1s", "--json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out.strip())["results"]}
    assert rows["rl"]["evals"] > 128  # zero-shot's 128 placements, then fine-tuning batches
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "policy.safetensors").write_bytes(b"not a checkpoint")
    assert main(["place", "device", "--model", "rnnlm", "--size", "tiny", "--method", "rl",
                 "--policy", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--policy" in err


def test_cli_bad_inputs_are_one_line_exit_2(tmp_path, capsys):
    from moeplace.cli import main

    bad_cluster = tmp_path / "c.yaml"
    bad_cluster.write_text("devices:\n  - {name: g0, flops: 1e12}\n"  # no memory
                           "links:\n  - {between: all, bandwidth: 1e9}\n")
    cases = [
        ["place", "device", "pretrain", "--clusters", str(bad_cluster), "--out", str(tmp_path / "r")],
        ["place", "device", "pretrain", "--corpus", "resnet:2", "--out", str(tmp_path / "r")],
        ["place", "device", "pretrain", "--corpus", "rnnlm:1", "--exclude-family", "vit", "--out",
         str(tmp_path / "r")],
        ["place", "device", "--model", "rnnlm", "--size", "tiny", "--method", "transfer",
         "--finetune-budget", "soon"],
        ["place", "device", "--model", "rnnlm", "--size", "tiny", "--method", "transfer",
         "--zero-shot-budget", "3s"],  # zero-shot is at most 2 s
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("moeplace") and "error:" in err, err
    assert not (tmp_path / "r").exists()  # nothing written half-way


def test_the_shipped_policy_loads_and_is_small():
    from moeplace.place.device.transfer import packaged_policy

    path = packaged_policy()
    assert path.stat().st_size <= 5 * 2**20
    policy = load_policy(path)
    acts, _ = policy.sample_with_logp(context_of(branchy_problem()), 1, greedy=True)
    assert acts.shape == (1, 8)


def test_devices_a_group_would_overflow_are_never_chosen_unless_all_would():
    """Each op owns 1 GB of parameters (x4 with gradients and Adam state = 4 GB): the fast GPU
    (2 GB) can hold none, so no sample puts an op there; with every device at 2 GB, any goes."""
    base = branchy_problem()
    g = base.graph
    g.param_bytes = np.full(g.num_ops, 1e9)
    spec = base.cluster.to_dict()
    spec["devices"][0]["memory"] = 2e9
    torch.manual_seed(0)
    policy = TransferPlacer(hidden=16, rounds=2)
    acts, logp = policy.sample_with_logp(context_of(DevicePlacementProblem(g, load_cluster(spec))), 64)
    assert int((acts == 0).sum()) == 0 and torch.isfinite(logp).all()
    for d in spec["devices"]:
        d["memory"] = 2e9
    acts, logp = policy.sample_with_logp(context_of(DevicePlacementProblem(g, load_cluster(spec))), 64)
    assert set(acts.unique().tolist()) == {0, 1, 2} and torch.isfinite(logp).all()
