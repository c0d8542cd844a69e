"""`moeplace place chip|device ...`: each problem registers its own subcommand."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Register `place chip` and `place device` (each from its own module)."""
    from moeplace.cli import place_chip, place_device

    place_chip.register(sub)
    place_device.register(sub)
