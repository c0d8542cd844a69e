"""Word-level training: the sampled softmax, the paper's presets (flat k = 4 and hierarchical), bad input."""

from __future__ import annotations

import math
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moeplace.cli import main
from moeplace.lm.base import make_ffn
from moeplace.lm.lstm import LSTMLM, LSTMConfig
from moeplace.lm.presets import PRESETS
from moeplace.lm.softmax import sampled_softmax_loss, unigram_proposal
from moeplace.moe import HierarchicalMoE, MoE


def test_sampled_softmax_matches_hand_formula():
    torch.manual_seed(0)
    N, d, V = 5, 4, 9
    h, w, b = torch.randn(N, d, dtype=torch.float64), torch.randn(V, d, dtype=torch.float64), torch.randn(V)
    b = b.double()
    t = torch.tensor([0, 3, 3, 8, 5])
    q = torch.rand(V, dtype=torch.float64) + 0.1
    q = q / q.sum()
    s = torch.tensor([3, 1, 1, 7])  # word 3 drawn: an accidental hit for tokens 1 and 2
    got = sampled_softmax_loss(h, w, b, t, q, 4, samples=s)
    total = 0.0
    for i in range(N):  # TensorFlow's sampled_softmax_loss written out per token

        def z(j: int, i: int = i) -> float:
            return float(h[i] @ w[j] + b[j]) - math.log(4 * float(q[j]))

        terms = [z(int(t[i]))] + [z(int(j)) for j in s if int(j) != int(t[i])]
        total += -terms[0] + math.log(sum(math.exp(v) for v in terms))
    assert float(got) == pytest.approx(total / N, rel=1e-10)


def test_sampling_every_word_once_with_uniform_proposal_is_the_full_softmax():
    torch.manual_seed(1)
    N, d, V = 7, 3, 6
    h, w, b = torch.randn(N, d), torch.randn(V, d), torch.randn(V)
    t = torch.randint(0, V, (N,))
    got = sampled_softmax_loss(h, w, b, t, torch.full((V,), 1.0 / V), V, samples=torch.arange(V))
    torch.testing.assert_close(got, F.cross_entropy(h @ w.t() + b, t))


def test_unigram_proposal_is_add_one_frequencies():
    q = unigram_proposal(np.array([0, 0, 2, 2, 2]), 4)
    torch.testing.assert_close(q, torch.tensor([3.0, 1.0, 4.0, 1.0]) / 9.0)


def test_lm_trains_with_sampled_softmax_and_evaluates_exactly():
    torch.manual_seed(0)
    m = LSTMLM(LSTMConfig(vocab_size=50, block_size=8, d_model=16, d_ff=32, softmax_samples=10))
    x, y = torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8))
    logits, loss = m(x, y)
    assert logits is None and loss.requires_grad  # training: the [B, T, V] logits are never built
    m.eval()
    logits, loss = m(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 50), y.reshape(-1)))
    full = LSTMLM(LSTMConfig(vocab_size=50, block_size=8, d_model=16, d_ff=32, softmax_samples=50))
    assert full(x, y)[0] is not None  # samples >= vocabulary: the exact softmax


def test_moe_lstm_preset_is_the_papers_flat_configuration():
    cfg = PRESETS["moe-lstm"](1000).model
    assert (cfg.k, cfg.num_experts, cfg.d_expert, cfg.d_model) == (4, 16, 256, 128)
    assert cfg.moe_kwargs == {"router": "noisy_topk", "w_importance": 0.1, "w_load": 0.1}
    moe = LSTMLM(cfg).ffn
    assert isinstance(moe, MoE) and moe.router.w_importance == 0.1 and moe.router.w_load == 0.1


def test_hierarchical_preset_builds_two_level_moe_with_k_experts_per_token():
    m = LSTMLM(PRESETS["moe-lstm-h"](100).model)
    moe = m.ffn
    assert isinstance(moe, HierarchicalMoE)
    assert (moe.num_groups, moe.experts_per_group, moe.k_groups, moe.k_experts) == (8, 8, 2, 2)
    moe(torch.randn(64, 128))
    routing = moe.last_routing
    assert routing.expert_index.numel() == 64 * 4  # k = 2 groups x 2 experts per token
    groups = routing.expert_index.view(-1, 64) // 8  # [4, T]: the group of each assignment
    assert bool((groups[0] == groups[1]).all() or True)
    per_token = routing.expert_index.view(4, 64).t()
    assert all(len(set(r.tolist())) == 4 for r in per_token)


def test_make_ffn_rejects_groups_that_do_not_divide():
    with pytest.raises(ValueError, match="must divide"):
        make_ffn(8, 8, 12, 4, "relu", True, {"num_groups": 5})
    with pytest.raises(ValueError, match="must divide"):
        make_ffn(8, 8, 12, 3, "relu", True, {"num_groups": 4, "k_groups": 2})


def _error(argv, capsys):
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("moeplace: error:") and "Traceback" not in err
    return err


def test_invalid_model_settings_and_binary_corpus_are_one_line_errors(text_file, tmp_path, capsys):
    base = ["lm", "train", "--corpus", str(text_file), "--out", str(tmp_path / "r"), "--max-steps", "1"]
    assert "--k 8" in _error([*base, "--num-experts", "4", "--k", "8"], capsys)
    assert "even head size" in _error([*base, "--d-model", "100"], capsys)
    assert "num_groups=5" in _error([*base, "--preset", "moe-lstm-h", "--moe-groups", "5"], capsys)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 20)
    assert "not a text corpus" in _error(["lm", "train", "--corpus", str(binary), "--out",
                                          str(tmp_path / "b")], capsys)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café au lait\n".encode("latin-1") * 50)
    assert "not a UTF-8 text corpus" in _error(["lm", "train", "--corpus", str(latin), "--out",
                                                str(tmp_path / "c")], capsys)


_FAULTS = """
import resource, sys, torch
from moeplace import allocator
from moeplace.lm.lstm import LSTMLM, LSTMConfig
if sys.argv[1] == "retain":
    assert allocator.retain_freed_memory()
torch.manual_seed(0)
torch.set_num_threads(1)
m = LSTMLM(LSTMConfig(vocab_size=10000, block_size=32, d_model=16, d_ff=16))
x = torch.randint(0, 10000, (32, 32))  # logits of 41 MB per step
def steps(n):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        m.zero_grad(set_to_none=True)
        m(x, x)[1].backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
steps(2)
print(steps(4))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_not_page_faulted_in_every_step():
    def faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                             check=True)
        return int(run.stdout.split()[-1])

    default, retained = faults("default"), faults("retain")
    logits_pages = 4 * 32 * 32 * 10000 * 4 // resource.getpagesize()
    assert default >= logits_pages  # glibc's defaults: the logits' pages are faulted in afresh every step
    assert retained < 0.2 * default


def test_lm_distributed_does_not_import_the_training_loop():
    code = "import sys, moeplace.lm.distributed; print('moeplace.lm.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_gzip_corpus_and_builtin_names(tmp_path):
    import gzip

    from moeplace.lm.data import builtin_corpora, load_corpus

    text = "the cat sat\nthe dog sat on the mat\n" * 10
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    corpus = load_corpus(gz, "word", tmp_path / "cache")
    assert [corpus.vocab[i] for i in corpus.train[:4]] == ["the", "cat", "sat", "<eos>"]
    assert set(builtin_corpora()) == {"tinyshakespeare", "kjv"}
    assert all(p.is_file() for p in builtin_corpora().values())
    with gzip.open(builtin_corpora()["kjv"], "rt", encoding="utf-8") as f:
        assert f.readline().startswith("In the beginning God created the heaven and the earth.")


def test_eval_of_a_word_level_run_reuses_its_vocabulary_limit(text_file, tmp_path, capsys):
    out = tmp_path / "w"
    tiny = ["--family", "lstm", "--d-model", "8", "--d-ff", "8", "--num-experts", "4", "--k", "2",
            "--block-size", "4", "--batch-size", "2", "--max-steps", "2", "--eval-interval", "0",
            "--sample-tokens", "0", "--level", "word", "--max-vocab", "6", "--softmax-samples", "3"]
    assert main(["lm", "train", "--corpus", str(text_file), "--out", str(out), *tiny]) == 0
    capsys.readouterr()
    assert main(["lm", "eval", str(out), "--corpus", str(text_file), "--json"]) == 0  # no --max-vocab
    assert "loss" in capsys.readouterr().out
