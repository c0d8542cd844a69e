"""Small corpora and configs shared by the language-model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
        "All:\nResolved. resolved.\n") * 12


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    """A ~2 KB character corpus in one file."""
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT)
    return p


@pytest.fixture
def word_folder(tmp_path: Path) -> Path:
    """A word-level corpus folder with train/valid/test files."""
    d = tmp_path / "words"
    d.mkdir()
    (d / "train.txt").write_text("the cat sat on the mat\nthe dog sat\n")
    (d / "valid.txt").write_text("the bird sat\n")
    (d / "test.txt").write_text("a cat\n")
    return d
