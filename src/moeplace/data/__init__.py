"""Built-in data shipped with the package (each folder has a SOURCE/licence note)."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
TINYSHAKESPEARE = DATA_DIR / "tinyshakespeare" / "input.txt"
CHIP_DIR = DATA_DIR / "chip"
