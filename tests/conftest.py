"""Shared test settings: quiet progress bars, deterministic single-thread torch where it matters."""

import os

os.environ.setdefault("MOEPLACE_NO_PROGRESS", "1")
