"""`moeplace rl ...` subcommands (owned by the RL work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Register the rl subcommands."""
