"""Heuristics, RL placers, applied placements, cluster files, placement JSON and the CLI."""

import itertools
import json

import numpy as np
import pytest
import torch

from moeplace.cli import main
from moeplace.errors import InputError
from moeplace.place.core import PlacementProblem
from moeplace.place.device.apply import apply_placement
from moeplace.place.device.baselines import HEURISTICS, layer_split
from moeplace.place.device.cluster import load_cluster
from moeplace.place.device.colocrl import train_colocrl
from moeplace.place.device.graph import OpGraph
from moeplace.place.device.methods import placement_from_json, placement_to_json
from moeplace.place.device.models import build_benchmark
from moeplace.place.device.problem import DevicePlacementProblem
from moeplace.place.device.trace import trace_graph


@pytest.fixture(scope="module")
def nmt():
    m, x = build_benchmark("nmt4", "tiny")
    return DevicePlacementProblem(trace_graph(m, x), load_cluster("k80x4"))


def test_problem_implements_protocol(nmt):
    assert isinstance(nmt, PlacementProblem)
    assert nmt.node_features().shape[0] == nmt.num_nodes == nmt.graph.num_groups
    assert nmt.slot_features().shape[0] == nmt.num_slots == 5
    assert nmt.node_edges().shape[0] == 2


def test_each_heuristic_returns_a_valid_complete_placement(nmt):
    for name, fn in HEURISTICS.items():
        p = fn(nmt)
        assert p.shape == (nmt.num_nodes,) and p.min() >= 0 and p.max() < nmt.num_slots, name
        assert nmt.simulate(p).valid, name


def test_layer_split_is_contiguous_over_layers(nmt):
    g = nmt.graph
    p = layer_split(nmt)
    order = list(dict.fromkeys(g.layer))
    layer_dev = {g.layer[i]: int(p[g.group[i]]) for i in range(g.num_ops)}
    devs = [layer_dev[k] for k in order]
    assert devs == sorted(devs)  # each accelerator holds one contiguous run of layers
    assert len(set(devs)) == 4 and 0 not in devs  # all four GPUs used, the CPU not


def test_memory_bound_model_single_device_ooms_memory_aware_heuristics_fit():
    m, x = build_benchmark("moe_lstm")  # 4.5 GB of parameters -> 18 GB with gradients and Adam
    prob = DevicePlacementProblem(trace_graph(m, x), load_cluster("k80x4"))
    assert not prob.simulate(HEURISTICS["single"](prob)).valid
    for name in ("m_etf", "m_topo"):
        assert prob.simulate(HEURISTICS[name](prob)).valid, name


def toy_problem():
    """Two independent chains of equal work on a 2-GPU box: the best placement splits them."""
    G = 1e9
    n = 6
    g = OpGraph(
        names=[f"o{i}" for i in range(n)],
        kinds=["x"] * n,
        fwd_flops=np.array([1, 1, 1, 1, 1, 1.0]) * G,
        bwd_flops=np.full(n, 1.0) * G,
        out_bytes=np.full(n, 0.5 * G),
        param_bytes=np.zeros(n),
        trivial=np.zeros(n, bool),
        edges=np.array([[0, 1, 3, 4], [1, 2, 4, 5]]),
        anchor=np.full(n, -1),
        scope=[""] * n,
        layer=[""] * n,
        grouping="op",
    )
    c = load_cluster(
        {
            "devices": [{"name": "a", "flops": G, "memory": 1e12}, {"name": "b", "flops": G, "memory": 1e12}],
            "links": [{"between": "all", "bandwidth": G, "latency": 0.1}],
        }
    )
    return DevicePlacementProblem(g, c)


def test_seq2seq_reinforce_finds_the_brute_force_optimum():
    prob = toy_problem()
    best = min(prob.cost(np.array(p)) for p in itertools.product(range(2), repeat=prob.num_nodes))
    # stops as soon as the optimum is sampled; fails if 40 iterations do not find it
    r = train_colocrl(
        prob, budget_s=60, seed=0, batch=16, max_iters=40, callback=lambda it, c: c <= best + 1e-9
    )
    assert r["cost"] == pytest.approx(best)
    assert r["cost"] == pytest.approx(6.0)  # each chain alone on its device: 3 s forward + 3 s backward


def test_applied_placement_matches_original_outputs_and_gradients():
    torch.manual_seed(0)
    m, x = build_benchmark("nmt2", "tiny", device="cpu")
    g = trace_graph(m, x)
    rng = np.random.default_rng(0)
    op_dev = rng.integers(0, 3, g.num_groups)[g.group]
    names = ["cpu0", "cpu1", "cpu2"]
    placed = apply_placement(m, x, {n: names[d] for n, d in zip(g.names, op_dev)}, {k: "cpu" for k in names})
    # independent count of the transfers the placement implies: one per (tensor producer, other device)
    tensor_producers = {i for i in range(g.num_ops) if g.out_bytes[i] > 0}
    pairs = {(a, op_dev[b]) for a, b in g.edges.T if op_dev[a] != op_dev[b] and a in tensor_producers}
    assert placed.transfers == len(pairs) > 0
    loss_ref = m(*x)
    loss_ref.backward()
    loss = placed(*x)
    loss.backward()
    torch.testing.assert_close(loss, loss_ref)
    params = dict(placed.named_parameters())
    for name, p in m.named_parameters():
        torch.testing.assert_close(params[name].grad, p.grad, msg=name)


def test_cluster_file_errors_name_the_field(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("devices:\n  - {name: g0, flops: 1e12}\nlinks: []\n")
    with pytest.raises(InputError, match=r"devices\[0\]: missing field 'memory'"):
        load_cluster(f)
    f.write_text(
        "devices:\n  - {name: g0, flops: 1e12, memory: 1e9}\n  - {name: g1, flops: 1e12, memory: 1e9}\n"
        "links:\n  - {between: [g0, g1], bandwidth: 1e9}\n"
    )
    with pytest.raises(InputError, match=r"links\[0\]: missing field 'latency'"):
        load_cluster(f)
    f.write_text(
        "devices:\n  - {name: g0, flops: 1e12, memory: 1e9}\n  - {name: g1, flops: 1e12, memory: 1e9}\n"
        "links: [{between: [g0, g0], bandwidth: 1e9, latency: 0}]\n"
    )
    with pytest.raises(InputError, match="no link between 'g0' and 'g1'"):
        load_cluster(f)
    j = tmp_path / "c.json"
    j.write_text(json.dumps(load_cluster("hetero").to_dict()))
    c = load_cluster(j)
    assert c.names == load_cluster("hetero").names and c.bandwidth[0, 1] == 300e9


def test_placement_json_round_trip_and_unknown_device(nmt):
    p = HEURISTICS["expert"](nmt)
    data = json.loads(json.dumps(placement_to_json(nmt, p)))
    np.testing.assert_array_equal(placement_from_json(nmt, data), p)
    data["ops"][nmt.graph.names[5]] = "tpu9"
    with pytest.raises(InputError, match="unknown device 'tpu9'"):
        placement_from_json(nmt, data)


def test_cli_table_json_and_errors(tmp_path, capsys):
    out, png = tmp_path / "p.json", tmp_path / "t.png"
    rc = main(
        [
            "place",
            "device",
            "--model",
            "nmt2",
            "--size",
            "tiny",
            "--method",
            "single,expert,heft,m_topo",
            "--out",
            str(out),
            "--png",
            str(png),
            "--json",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["method"] for r in res["results"]] == ["single", "expert", "heft", "m_topo"]
    assert json.loads(out.read_text())["ops"] and png.stat().st_size > 1000
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ops": {"embed_src": "gpu7"}}))
    rc = main(
        [
            "place",
            "device",
            "--model",
            "nmt2",
            "--size",
            "tiny",
            "--method",
            "single",
            "--placement",
            str(bad),
        ]
    )
    assert rc == 2 and "unknown device 'gpu7'" in capsys.readouterr().err
    assert main(["place", "device", "--model", "nmt2", "--cluster", "nope.yaml"]) == 2


def test_seq2seq_policy_is_a_distribution_over_placements():
    from moeplace.place.device.colocrl import Seq2SeqPlacer

    torch.manual_seed(0)
    pol = Seq2SeqPlacer(feat_dim=4, num_devices=3, hidden=8)
    feats = torch.randn(3, 4)
    every = torch.tensor(list(itertools.product(range(3), repeat=3)))
    logp, ent = pol.score(feats, every)
    assert float(logp.detach().exp().sum()) == pytest.approx(1.0, abs=1e-5)
    # sampling step by step follows the teacher-forced probabilities
    samples = pol.sample(feats, 6000)
    freq = np.array([(samples == row).all(dim=1).float().mean().item() for row in every])
    np.testing.assert_allclose(freq, logp.exp().detach().numpy(), atol=0.02)


def test_cli_model_from_module_attr(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodels.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def tiny():\n    m = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))\n"
        "    return m, (torch.randn(4, 8),)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rc = main(["place", "device", "--model", "mymodels:tiny", "--method", "single,round_robin", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["graph"]["ops"] == 5  # input, linear, relu, linear, output
    assert main(["place", "device", "--model", "mymodels:nothing"]) == 2


def test_cli_ctrl_c_during_search_keeps_the_best_and_stops(tmp_path, monkeypatch, capsys):
    """Ctrl-C inside `sa` (a KeyboardInterrupt from the 40th cost call) ends that search with its best
    placement, runs no later search method, marks the row, writes --out and exits with 130."""
    real_cost, calls = DevicePlacementProblem.cost, {"n": 0}

    def cost(self, placement):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return real_cost(self, placement)

    monkeypatch.setattr(DevicePlacementProblem, "cost", cost)
    out = tmp_path / "p.json"
    rc = main(["place", "device", "--model", "rnnlm", "--size", "tiny", "--method", "single,sa,rl",
               "--budget", "30s", "--out", str(out), "--json"])
    assert rc == 130
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]}
    assert set(rows) == {"single", "sa (interrupted)"}
    assert rows["sa (interrupted)"]["step_ms"] <= rows["single"]["step_ms"] + 1e-9
    assert json.loads(out.read_text())["ops"]
