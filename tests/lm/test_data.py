"""Corpus loading, tokenisation, memory-mapped caching and deterministic batches."""

from __future__ import annotations

import numpy as np
import pytest

from moeplace.errors import InputError
from moeplace.lm.data import EOS, UNK, check_context, eval_windows, get_batch, load_corpus


def test_char_corpus_split_and_roundtrip(text_file, tmp_path):
    c = load_corpus(text_file, "char", tmp_path / "cache")
    text = text_file.read_text()
    cut = int(0.9 * len(text))
    assert isinstance(c.train, np.memmap)
    assert len(c.train) == cut and len(c.valid) == len(text) - cut
    assert c.decode(c.train) == text[:cut] and c.decode(c.valid) == text[cut:]
    assert c.vocab[:-1] == sorted(set(text[:cut])) and c.vocab[-1] == UNK
    assert c.decode(c.encode("hear me")) == "hear me"


def test_cache_is_reused_and_lives_in_cache_dir(text_file, tmp_path):
    cache = tmp_path / "cache"
    load_corpus(text_file, "char", cache)
    bins = sorted(cache.rglob("*.bin"))
    assert [b.name for b in bins] == ["test.bin", "train.bin", "valid.bin"]
    mtime = bins[0].stat().st_mtime_ns
    load_corpus(text_file, "char", cache)
    assert bins[0].stat().st_mtime_ns == mtime


def test_word_level_vocab_from_train_only(word_folder, tmp_path):
    c = load_corpus(word_folder, "word", tmp_path / "cache")
    assert set(c.vocab) == {"the", "cat", "sat", "on", "mat", "dog", EOS, UNK}
    assert [c.vocab[i] for i in c.valid] == ["the", UNK, "sat", EOS]
    assert [c.vocab[i] for i in c.test] == [UNK, "cat", EOS]
    assert len(c.train) == 6 + 1 + 3 + 1


def test_max_vocab_keeps_most_frequent(word_folder, tmp_path):
    c = load_corpus(word_folder, "word", tmp_path / "cache", max_vocab=3)
    assert set(c.vocab) == {"the", EOS, UNK}  # "the" x3, then <eos> and "sat" x2 (ties by name)


def test_missing_empty_and_short_corpus(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_corpus(tmp_path / "nope.txt", "char", tmp_path / "cache")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        load_corpus(empty, "char", tmp_path / "cache")
    short = tmp_path / "short.txt"
    short.write_text("abcdefghijklmnopqrstuvwxyz" * 4)
    c = load_corpus(short, "char", tmp_path / "cache")
    with pytest.raises(InputError, match="context"):
        check_context(c, 64)


def test_get_batch_is_a_function_of_seed_and_step():
    data = np.arange(1000, dtype=np.uint16)
    x1, y1 = get_batch(data, 8, 16, seed=3, step=7)
    x2, y2 = get_batch(data, 8, 16, seed=3, step=7)
    x3, _ = get_batch(data, 8, 16, seed=3, step=8)
    assert x1.shape == (8, 16) and x1.dtype.is_floating_point is False
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)
    # consecutive ids: each row is a window and y is x shifted by one
    assert np.all(np.diff(x1.numpy(), axis=1) == 1) and np.array_equal(y1.numpy(), x1.numpy() + 1)


def test_eval_windows_non_overlapping():
    data = np.arange(101)
    x, y = eval_windows(data, 10)
    assert x.shape == (10, 10)
    assert np.array_equal(x.numpy().ravel(), np.arange(100))
    assert np.array_equal(y.numpy().ravel(), np.arange(1, 101))
    x, _ = eval_windows(data, 10, max_tokens=30)
    assert x.shape == (3, 10) and x[0, 0] == 0 and x[-1, 0] == 90
