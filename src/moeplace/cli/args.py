"""argparse `type=` validators shared by every command: a bad number is a one-line error, exit code 2.

    p.add_argument("--max-steps", type=positive_int)
    p.add_argument("--dropout", type=probability)

Each validator parses the text and checks its range; argparse turns the ArgumentTypeError into
`moeplace ...: error: argument --max-steps: must be >= 1, got -3` (exit code 2). NaN and
infinities are refused everywhere a float is read.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= low."""

    def parse(text: str) -> int:
        v = _int(text)
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v

    return parse


positive_int = int_at_least(1)
"""An integer >= 1 (counts, step budgets, grid sizes)."""
nonneg_int = int_at_least(0)
"""An integer >= 0 (0 usually means 'off' or 'default')."""


def any_int(text: str) -> int:
    """Any integer (seeds)."""
    return _int(text)


def finite_float(text: str) -> float:
    """Any finite number."""
    return _float(text)


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, timeouts)."""
    v = _float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (weight decay, clipping where 0 = off, temperature where 0 = greedy)."""
    v = _float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def probability(text: str) -> float:
    """A number in [0, 1] (dropout, fractions)."""
    v = _float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def share(text: str) -> float:
    """A number in (0, 1] (the share of each rollout's episodes risk-seeking PPO trains on)."""
    v = _float(text)
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def fraction_below_one(text: str) -> float:
    """A number in [0, 1) (a warm-up share of the run, a wall fraction that must leave room)."""
    v = _float(text)
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return v


def _duration(allow_off: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        from moeplace.errors import InputError
        from moeplace.place.search import parse_budget

        try:
            return parse_budget(text, name="duration", allow_off=allow_off)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("duration: ")) from None

    return parse


duration = _duration(allow_off=False)
"""A positive wall time: '90s', '30m', '1.5h' or plain seconds -> seconds."""
duration_or_off = _duration(allow_off=True)
"""A wall time, or '0' / 'none' / 'off' for none (0.0)."""
