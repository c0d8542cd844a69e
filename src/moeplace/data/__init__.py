"""Built-in data shipped with the package (each folder has a SOURCE/licence note)."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
TINYSHAKESPEARE = DATA_DIR / "tinyshakespeare" / "input.txt"
KJV = DATA_DIR / "kjv" / "kjv.txt.gz"  # King James Bible, one verse a line (word-level corpus)
CHIP_DIR = DATA_DIR / "chip"
