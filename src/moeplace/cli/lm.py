"""`moeplace lm ...` subcommands (owned by the language-model work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Register the lm subcommands."""
