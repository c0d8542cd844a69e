"""Plain-text corpora as memory-mapped token-id arrays, char or word level, and deterministic batches.

A corpus is a text file (`.gz` is decompressed; split 90/10 into train/valid, as nanoGPT does; test is
the valid part), a built-in corpus by name (`tinyshakespeare`, `kjv`), or a folder holding
train/valid/test files (`train.txt`, `valid.txt`, `test.txt`, or the WikiText names `wiki.train.tokens`,
...). Token ids are written once to `.bin` files in a cache folder and read back with `np.memmap`, so a
large corpus never sits in RAM as Python objects.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moeplace.errors import InputError
from moeplace.utils import atomic_path, atomic_write_text

UNK = "<unk>"
EOS = "<eos>"  # word level: one token per line break
_SPLIT_NAMES = {
    "train": ("train", "train.txt", "wiki.train.tokens", "ptb.train.txt"),
    "valid": ("valid", "valid.txt", "val.txt", "validation.txt", "wiki.valid.tokens", "ptb.valid.txt"),
    "test": ("test", "test.txt", "wiki.test.tokens", "ptb.test.txt"),
}
_CACHE_VERSION = 2  # 2: binary and non-UTF-8 corpora are refused (were decoded with replacements)


def default_corpus_path() -> Path:
    """The built-in Tiny Shakespeare text."""
    from moeplace.data import TINYSHAKESPEARE

    return TINYSHAKESPEARE


def builtin_corpora() -> dict[str, Path]:
    """Corpora shipped with the package, by the name `--corpus` accepts (a file of that name wins)."""
    from moeplace.data import KJV, TINYSHAKESPEARE

    return {"tinyshakespeare": TINYSHAKESPEARE, "kjv": KJV}


def _read_text(path: Path) -> str:
    """Read a UTF-8 text file, naming the file on any failure; binary or non-UTF-8 bytes are refused."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read corpus ({e.strerror})") from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: not a readable gzip file ({e})") from None
    nul = data.find(b"\0")
    if nul >= 0:
        raise InputError(f"{path}: not a text corpus (binary data: a NUL byte at offset {nul})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text corpus (byte 0x{data[e.start]:02x} at offset {e.start} "
                         f"is not UTF-8; convert the file, e.g. iconv -t utf-8)") from None


def _find_split(folder: Path, split: str) -> Path | None:
    """The file in `folder` that holds `split`, or None."""
    for name in _SPLIT_NAMES[split]:
        if (folder / name).is_file():
            return folder / name
    return None


def read_splits(path: Path) -> dict[str, str]:
    """Read a corpus file or folder into {'train', 'valid', 'test'} texts; raise InputError if unusable."""
    if not path.exists():
        raise InputError(f"{path}: corpus not found")
    if path.is_dir():
        files = {s: _find_split(path, s) for s in _SPLIT_NAMES}
        if files["train"] is None or files["valid"] is None:
            raise InputError(f"{path}: corpus folder needs train and valid files (e.g. train.txt, valid.txt)")
        texts = {s: _read_text(f) for s, f in files.items() if f is not None}
        texts.setdefault("test", texts["valid"])
    else:
        text = _read_text(path)
        cut = int(0.9 * len(text))
        texts = {"train": text[:cut], "valid": text[cut:], "test": text[cut:]}
    if not texts["train"].strip():
        raise InputError(f"{path}: corpus is empty")
    if not texts["valid"].strip():
        raise InputError(f"{path}: corpus has an empty validation split")
    return texts


def _words(text: str) -> list[str]:
    """Word-level tokens: whitespace-separated words, each line ending with <eos>."""
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words:
            out.extend(words)
            out.append(EOS)
    return out


def _tokens(text: str, level: str) -> list[str] | str:
    return _words(text) if level == "word" else text


def build_vocab(train_text: str, level: str, max_vocab: int | None = None) -> list[str]:
    """Vocabulary from the training split only; <unk> (always last) stands for everything else."""
    counts = Counter(_tokens(train_text, level))
    if level == "word":
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            ranked = ranked[: max(1, max_vocab - 1)]
        vocab = sorted(t for t in ranked if t != UNK)
    else:
        vocab = sorted(counts)
    return [*vocab, UNK]


@dataclass
class Corpus:
    """Token-id arrays of the three splits plus the vocabulary that maps ids to text."""

    vocab: list[str]
    level: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    source: str = ""
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {t: i for i, t in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        """Number of distinct token ids (including <unk>)."""
        return len(self.vocab)

    def split(self, name: str) -> np.ndarray:
        """The ids of split 'train', 'valid' or 'test'."""
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, not {name!r}")
        return getattr(self, name)

    def encode(self, text: str) -> list[int]:
        """Text to ids (unknown tokens become <unk>)."""
        unk = self._index[UNK]
        return [self._index.get(t, unk) for t in _tokens(text, self.level)]

    def decode(self, ids: list[int] | np.ndarray | torch.Tensor) -> str:
        """Ids to text (word level: words joined by spaces, <eos> as a line break)."""
        toks = [self.vocab[int(i)] for i in ids]
        if self.level == "word":
            return " ".join(toks).replace(f" {EOS} ", "\n").replace(EOS, "\n")
        return "".join("?" if t == UNK else t for t in toks)


def _cache_key(path: Path, level: str, max_vocab: int | None) -> str:
    """A key that changes when the corpus files, the level or the vocabulary limit change."""
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{path.resolve()}|{level}|{max_vocab}".encode())
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    for f in files:
        if f.is_file():
            st = f.stat()
            h.update(f"|{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_corpus(path: str | Path | None = None, level: str = "char", cache_dir: str | Path | None = None,
                max_vocab: int | None = None) -> Corpus:
    """Tokenise a corpus (file or folder) once into memory-mapped id arrays and open them."""
    if level not in ("char", "word"):
        raise InputError(f"--level must be char or word, not {level!r}")
    path = Path(path) if path is not None else default_corpus_path()
    if not path.exists() and str(path) in builtin_corpora():
        path = builtin_corpora()[str(path)]
    if not path.exists():
        raise InputError(f"{path}: corpus not found")
    cache = Path(cache_dir) if cache_dir is not None else Path("runs") / ".cache" / "lm-data"
    folder = cache / _cache_key(path, level, max_vocab)
    meta_file = folder / "vocab.json"
    if not meta_file.is_file():
        texts = read_splits(path)
        vocab = build_vocab(texts["train"], level, max_vocab)
        index = {t: i for i, t in enumerate(vocab)}
        dtype = np.uint16 if len(vocab) < 2**16 else np.uint32
        unk = index[UNK]
        for split, text in texts.items():
            ids = np.fromiter((index.get(t, unk) for t in _tokens(text, level)), dtype=dtype)
            with atomic_path(folder / f"{split}.bin") as tmp:
                ids.tofile(tmp)
        meta = {"vocab": vocab, "level": level, "dtype": np.dtype(dtype).name, "source": str(path.resolve())}
        atomic_write_text(meta_file, json.dumps(meta))
    meta = json.loads(meta_file.read_text())
    arrays = {}
    for split in ("train", "valid", "test"):
        f = folder / f"{split}.bin"
        n = f.stat().st_size
        arrays[split] = (np.memmap(f, dtype=meta["dtype"], mode="r") if n else
                         np.zeros(0, dtype=meta["dtype"]))
    return Corpus(vocab=meta["vocab"], level=meta["level"], source=meta["source"], **arrays)


def check_context(corpus: Corpus, block_size: int) -> None:
    """Raise InputError if a split is too short to hold one training window of block_size + 1 tokens."""
    for split in ("train", "valid"):
        n = len(corpus.split(split))
        if n < block_size + 2:
            raise InputError(f"{corpus.source}: {split} split has {n} tokens, fewer than the context "
                             f"{block_size} + 2; use a smaller --block-size or a longer corpus")


def get_batch(data: np.ndarray, batch_size: int, block_size: int, seed: int, step: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The global training batch of `step`: a pure function of (seed, step), inputs x and targets y [B, T].

    A data-parallel rank uses rows [rank::world] of it, so N processes see what one process sees.
    """
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(data) - block_size - 1, size=batch_size)
    rows = np.stack([np.asarray(data[s: s + block_size + 1], dtype=np.int64) for s in starts])
    t = torch.from_numpy(rows)
    return t[:, :-1], t[:, 1:]


def eval_windows(data: np.ndarray, block_size: int, max_tokens: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows over a split (evenly spread if max_tokens caps them): x, y [N, T]."""
    n = (len(data) - 1) // block_size
    if n < 1:
        raise InputError(f"split of {len(data)} tokens is shorter than the context {block_size}")
    idx = np.arange(n)
    if max_tokens is not None and n * block_size > max_tokens:
        keep = max(1, max_tokens // block_size)
        idx = np.unique(np.linspace(0, n - 1, keep).round().astype(np.int64))
    rows = np.stack([np.asarray(data[i * block_size: i * block_size + block_size + 1], dtype=np.int64)
                     for i in idx])
    t = torch.from_numpy(rows)
    return t[:, :-1], t[:, 1:]
