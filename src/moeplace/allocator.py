"""Keep freed memory in the process on Linux/glibc, so large tensors are not page-faulted in every step.

glibc serves allocations above its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh `mmap`
pages and unmaps them on free, and it trims freed heap memory above 128 KiB back to the kernel. A
training step allocates and frees tensors of tens of megabytes (a word-level LM's [tokens, vocab] logits
are 82 MB at 2,048 tokens x 10,000 words), so each step page-faults them in again and the kernel spends
its time zeroing pages: `lm compare --level word` spent 7.9 s of 21 s in the kernel (5.4 M minor page
faults in 60 steps; docs/benchmarks.md). Raising both thresholds keeps that memory for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # allocations up to 1 GiB come from the heap and are reused after free
_TRIM_THRESHOLD = (1 << 31) - 1  # keep up to ~2 GiB of freed heap in the process (C int maximum)
_TOP_PAD = 64 << 20  # grow the heap 64 MiB beyond each request (without it reuse was partial: test)
_DEFAULT = 128 * 1024  # glibc's initial thresholds and top pad (fixed: setting them ends glibc's adaptation)
_applied: bool | None = None


def _mallopt():
    """glibc's mallopt(int, int) -> int, or None off Linux/glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def set_thresholds(mmap_threshold: int, trim_threshold: int, top_pad: int) -> bool:
    """Set glibc's M_MMAP_THRESHOLD, M_TRIM_THRESHOLD and M_TOP_PAD (bytes); True when all were accepted."""
    fn = _mallopt()
    if fn is None:
        return False
    return all([bool(fn(_M_TRIM_THRESHOLD, trim_threshold)), bool(fn(_M_MMAP_THRESHOLD, mmap_threshold)),
                bool(fn(_M_TOP_PAD, top_pad))])


def release_freed_memory() -> bool:
    """Back to glibc's initial 128-KiB thresholds and top pad (the 'before' of benchmarks/lm_word.py)."""
    global _applied
    _applied = None
    return set_thresholds(_DEFAULT, _DEFAULT, _DEFAULT)


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are in effect.

    A no-op (False) off Linux or without glibc. The cost: a process's resident memory stays at its peak.
    """
    global _applied
    if _applied is None:
        _applied = set_thresholds(_MMAP_THRESHOLD, _TRIM_THRESHOLD, _TOP_PAD)
    return _applied
