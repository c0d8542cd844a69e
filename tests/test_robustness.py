"""Robustness of every file parser: seeded random truncations and byte mutations of the shipped files.

Each case damages one file (a truncation, flipped bytes, an inserted token such as `nan` or `}`, a
deleted or repeated line, a number replaced) and parses it: the parser must either accept it or
raise the project's one-line error type (MoeplaceError) - never another exception, never a hang
(each case runs under a 10 s alarm). Covered: Circuit Training netlists (plain and gzipped), .plc
placements, a Bookshelf benchmark (cut down from the shipped ibm01), cluster YAML and JSON (the
presets as files), and safetensors + JSON checkpoints (an LM checkpoint loaded for inference).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

import moeplace
from moeplace.errors import MoeplaceError

DATA = Path(moeplace.__file__).parent / "data" / "chip"
CT = DATA / "circuit_training"
SMALL = ["sample_clustered", "simple_grouped_with_coords", "simple_grouped_with_coords_with_blockage",
         "simple_with_coords", "toy_macro_stdcell"]
TOKENS = [b"nan", b"inf", b"-1", b"1e999", b"-0", b"{", b"}", b'"', b":", b"\n", b"\x00", b"\xff\xfe",
          b"#", b" ", b"0", b"99999999999999999999", b"attr {", b"NetDegree : 3"]
PER_CASE_S = 10


# -- mutations ------------------------------------------------------------------------------------------

def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One seeded random damage of `data`, and a description of it."""
    op = rng.choice(["truncate", "flip", "insert", "delete_line", "repeat_line", "number"])
    n = len(data)
    if op == "truncate" or n == 0:
        at = rng.randrange(n) if n else 0
        return data[:at], f"truncated at byte {at}"
    if op == "flip":
        out = bytearray(data)
        where = sorted(rng.randrange(n) for _ in range(rng.randint(1, 3)))
        for i in where:
            out[i] = rng.randrange(256)
        return bytes(out), f"bytes {where} replaced"
    if op == "insert":
        at, tok = rng.randrange(n), rng.choice(TOKENS)
        return data[:at] + tok + data[at:], f"{tok!r} inserted at byte {at}"
    lines = data.split(b"\n")
    k = rng.randrange(len(lines))
    if op == "delete_line":
        return b"\n".join(lines[:k] + lines[k + 1:]), f"line {k + 1} deleted"
    if op == "repeat_line":
        return b"\n".join(lines[:k + 1] + lines[k:]), f"line {k + 1} repeated"
    numbers = list(re.finditer(rb"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", data))
    if not numbers:
        return data[:n // 2], f"truncated at byte {n // 2}"
    m = rng.choice(numbers)
    tok = rng.choice([b"nan", b"-inf", b"-1", b"0", b"1e999", b"x", b"", b"2.5"])
    return data[:m.start()] + tok + data[m.end():], f"number {m.group(0)!r} at byte {m.start()} -> {tok!r}"


ODD_VALUES = [None, [], {}, "x", -1, 0, 1e308, True, [1, 2], {"a": 1}, "nan"]


def mutate_tree(tree: object, rng: random.Random) -> tuple[object, str]:
    """Replace one random node of a JSON tree by a value of another type or range."""
    paths: list[tuple] = []

    def walk(o: object, path: tuple) -> None:
        paths.append(path)
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, (*path, k))
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, (*path, i))

    walk(tree, ())
    path, value = rng.choice(paths[1:] or paths), rng.choice(ODD_VALUES)
    if not path:
        return value, f"whole tree -> {value!r}"
    node = tree
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    return tree, f"{'/'.join(map(str, path))} -> {value!r}"


def mutate_structure(name: str, data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Well-formed but wrong content: one node of the JSON/YAML tree (for a checkpoint: of its
    safetensors header or of the moeplace metadata in it) replaced, the file re-encoded."""
    if name.endswith(".safetensors"):
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        if rng.random() < 0.5:
            meta = json.loads(header["__metadata__"]["moeplace"])
            meta, how = mutate_tree(meta, rng)
            header["__metadata__"]["moeplace"] = json.dumps(meta)
        else:
            header, how = mutate_tree(header, rng)
        raw = json.dumps(header).encode()
        return len(raw).to_bytes(8, "little") + raw + data[8 + n:], how
    tree, how = mutate_tree(yaml.safe_load(data), rng)
    return (json.dumps(tree) if name.endswith(".json") else yaml.safe_dump(tree)).encode(), how


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail (TimeoutError) if the block runs longer than `seconds` (a hang)."""
    def on_alarm(signum, frame):  # noqa: ARG001
        raise TimeoutError(f"parser still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def parses_or_fails_cleanly(parse: Callable[[], object], what: str) -> None:
    """Run `parse`: success and MoeplaceError (one line) pass; anything else fails the test."""
    with time_limit(PER_CASE_S):
        try:
            parse()
        except MoeplaceError as e:
            assert "\n" not in str(e).strip(), f"{what}: multi-line error {str(e)!r}"
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{what}: {type(e).__name__}: {e}")


# -- the files ------------------------------------------------------------------------------------------

def small_bookshelf(out: Path, nets_kept: int = 30, macros: int = 4, rows: int = 6) -> Path:
    """A consistent Bookshelf benchmark cut from the shipped ibm01: the nodes of its first nets and a
    few macros, the nets among them (pins of other nodes dropped), and its first rows."""
    src = DATA / "ibm01"
    node_lines = (src / "ibm01.nodes").read_text().splitlines()
    header = node_lines[:5]
    body = [ln for ln in node_lines[7:] if ln.strip()]
    net_lines = (src / "ibm01.nets").read_text().splitlines()[7:]
    keep = set()
    for ln in net_lines:
        if ln.startswith("NetDegree"):
            nets_kept -= 1
            if nets_kept < 0:
                break
        elif ln.split():
            keep.add(ln.split()[0])
    tall = [ln.split()[0] for ln in body if "terminal" not in ln and float(ln.split()[2]) > 16]
    keep |= set(tall[:macros])  # macros: taller than ibm01's 16-unit rows
    keep_lines = [ln for ln in body if ln.split()[0] in keep]
    keep = {ln.split()[0] for ln in keep_lines}
    terminals = sum("terminal" in ln for ln in keep_lines)
    (out / "s.nodes").write_text("\n".join(header + [f"NumNodes : {len(keep)}",
                                                          f"NumTerminals : {terminals}"] + keep_lines) + "\n")
    nets, pins, net = [], [], None
    for ln in net_lines:
        if ln.startswith("NetDegree"):
            net = []
            nets.append(net)
        elif net is not None and ln.split() and ln.split()[0] in keep:
            net.append(ln)
    out_nets = []
    for k, net in enumerate(n for n in nets if len(n) >= 2):
        out_nets += [f"NetDegree : {len(net)} n{k}", *net]
        pins.append(len(net))
    (out / "s.nets").write_text("UCLA nets 1.0\n\n" + f"NumNets : {len(pins)}\nNumPins : {sum(pins)}\n"
                                + "\n".join(out_nets) + "\n")
    pl = [ln for ln in (src / "ibm01.pl").read_text().splitlines() if ln.split() and ln.split()[0] in keep]
    (out / "s.pl").write_text("UCLA pl 1.0\n\n" + "\n".join(pl) + "\n")
    scl = (src / "ibm01.scl").read_text().split("CoreRow Horizontal")
    (out / "s.scl").write_text(scl[0] + "".join("CoreRow Horizontal" + r for r in scl[1:rows + 1]))
    wts = [ln for ln in (src / "ibm01.wts").read_text().splitlines() if ln.split() and ln.split()[0] in keep]
    (out / "s.wts").write_text("UCLA wts 1.0\n\n" + "\n".join(wts) + "\n")
    (out / "s.aux").write_text("RowBasedPlacement : s.nodes s.nets s.wts s.pl s.scl\n")
    return out / "s.aux"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Every seed file's bytes, by name (made once for the module)."""
    from moeplace.lm.data import load_corpus
    from moeplace.lm.train import TrainConfig, train
    from moeplace.lm.transformer import TransformerConfig
    from moeplace.place.device.cluster import load_cluster

    work = tmp_path_factory.mktemp("seeds")
    files: dict[str, bytes] = {}
    for name in SMALL:
        files[f"{name}/netlist.pb.txt"] = (CT / name / "netlist.pb.txt").read_bytes()
        files[f"{name}/initial.plc"] = (CT / name / "initial.plc").read_bytes()
    files["toy_macro_stdcell/netlist.pb.txt.gz"] = gzip.compress(files["toy_macro_stdcell/netlist.pb.txt"])
    files["ariane133/netlist.pb.txt.gz"] = (DATA / "ariane133" / "netlist.pb.txt.gz").read_bytes()
    small_bookshelf(work)
    for ext in ("aux", "nodes", "nets", "pl", "scl", "wts"):
        files[f"bookshelf/s.{ext}"] = (work / f"s.{ext}").read_bytes()
    spec = load_cluster("hetero").to_dict()
    files["cluster.yaml"] = yaml.safe_dump(spec).encode()
    files["cluster.json"] = json.dumps(spec, indent=1).encode()
    text = work / "corpus.txt"
    text.write_text("to be or not to be, that is the question\n" * 20)
    corpus = load_corpus(text, "char", work / "cache")
    model = TransformerConfig(vocab_size=corpus.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8,
                              d_ff=16, num_experts=2, k=1, moe_kwargs={"router": "noisy_topk"})
    cfg = TrainConfig(model=model, batch_size=2, max_steps=1, eval_interval=0, eval_tokens=32)
    train(cfg, corpus, work / "lm", show_progress=False)
    files["lm/ckpt.safetensors"] = (work / "lm" / "ckpt.safetensors").read_bytes()
    algo = _ppo()
    algo.learn(64, progress_bar=False)
    files["rl/policy.safetensors"] = algo.save(work / "policy").read_bytes()
    return files


def _ppo():
    """A small PPO on CartPole (its checkpoint is a fuzz seed; its policy receives the loaded weights)."""
    import gymnasium as gym

    from moeplace.rl import PPO, MLPPolicy, make_vec_env

    envs = make_vec_env(lambda: gym.make("CartPole-v1"), 2)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(8,))
    return PPO(policy, envs, n_steps=16, n_epochs=1, seed=0)


def _netlist(name: str) -> Callable[[Path], object]:
    from moeplace.place.chip.netlist import load_netlist

    return lambda path: load_netlist(path)


def _plc(name: str) -> Callable[[Path], object]:
    from moeplace.place.chip.netlist import load_netlist
    from moeplace.place.chip.plc import load_placement

    netlist = load_netlist(CT / name.split("/")[0] / "netlist.pb.txt")
    return lambda path: load_placement(netlist.copy(), path)


def _cluster(name: str) -> Callable[[Path], object]:
    from moeplace.place.device.cluster import load_cluster

    return lambda path: load_cluster(path)


def _checkpoint(name: str) -> Callable[[Path], object]:
    from moeplace.lm.train import load_for_inference

    return lambda path: load_for_inference(path)


def _rl_checkpoint(name: str) -> Callable[[Path], object]:
    from moeplace.rl import PPO

    policy = _ppo().policy
    return lambda path: PPO.load(path, policy)


# (seed file, parser, number of cases): 300 cases in all
CASES: list[tuple[str, Callable[[str], Callable[[Path], object]], int]] = [
    *[(f"{n}/netlist.pb.txt", _netlist, 16) for n in SMALL],
    ("toy_macro_stdcell/netlist.pb.txt.gz", _netlist, 20),
    *[(f"{n}/initial.plc", _plc, 10) for n in SMALL],
    *[(f"bookshelf/s.{ext}", None, 10) for ext in ("aux", "nodes", "nets", "pl", "scl", "wts")],
    ("cluster.yaml", _cluster, 20),
    ("cluster.json", _cluster, 20),
    ("lm/ckpt.safetensors", _checkpoint, 20),
    ("rl/policy.safetensors", _rl_checkpoint, 20),
]
PARAMS = [(name, make, i) for name, make, count in CASES for i in range(count)]


@pytest.mark.parametrize(("name", "make", "case"), PARAMS,
                         ids=[f"{name}-{i}" for name, _, i in PARAMS])
def test_damaged_file_parses_or_gives_one_line_error(name, make, case, seeds, tmp_path):
    rng = random.Random(f"{name}/{case}")
    if name.endswith((".json", ".yaml", ".safetensors")) and case % 2:
        data, how = mutate_structure(name, seeds[name], rng)
    else:
        data, how = mutate(seeds[name], rng)
    if name.startswith("bookshelf/"):  # write the whole benchmark, with one file damaged
        from moeplace.place.chip.bookshelf import load_bookshelf

        for other, content in seeds.items():
            if other.startswith("bookshelf/"):
                (tmp_path / other.split("/")[1]).write_bytes(data if other == name else content)

        def parse():
            return load_bookshelf(tmp_path / "s.aux")
    else:
        path = tmp_path / name.split("/")[-1]
        path.write_bytes(data)
        reader = make(name)

        def parse():
            return reader(path)
    parses_or_fails_cleanly(parse, f"{name} ({how})")


@pytest.mark.parametrize("at", [0, 10, 1000, 5000])
def test_truncated_ariane_gzip_is_a_one_line_error(at, seeds, tmp_path):
    from moeplace.errors import InputError
    from moeplace.place.chip.netlist import load_netlist

    path = tmp_path / "netlist.pb.txt.gz"
    path.write_bytes(seeds["ariane133/netlist.pb.txt.gz"][:at])
    with time_limit(PER_CASE_S), pytest.raises(InputError):
        load_netlist(path)


def test_undamaged_seed_files_parse(seeds, tmp_path):
    """The seeds themselves are valid, so every failure above is caused by the damage."""
    for name, make, _ in CASES:
        if make is None:
            continue
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(seeds[name])
        make(name)(path)
    from moeplace.place.chip.bookshelf import load_bookshelf

    for other, content in seeds.items():
        if other.startswith("bookshelf/"):
            (tmp_path / other.split("/")[1]).write_bytes(content)
    netlist, header = load_bookshelf(tmp_path / "s.aux")
    assert netlist.num_nets > 5 and len(netlist.hard_macros) > 0
