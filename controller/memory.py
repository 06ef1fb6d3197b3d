"""Giving memory the controller freed back to the system.

The controller's work frees as much as it allocates: every pass parses its rollout from the cache
and serializes the status it writes, every watch event and Prometheus answer is parsed and
dropped. glibc keeps what is freed inside its heaps (one per thread that allocates, up to eight per
core) for later use, and gives back only what lies at a heap's top, so the resident size follows
the busiest moments of every thread's heap and creeps up between them (docs/scale.md: at 1,000
rollouts about two thirds of what the controller held beyond its idle size was freed memory, not
live objects). `malloc_trim(0)`
returns the free pages inside the heaps too. It is a glibc function; elsewhere (musl, macOS)
there is nothing to call and `trim_periodically` returns at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_INTERVAL_SECONDS = 30.0
"""Time between two trims."""


def glibc_malloc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)`, or None when the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def trim_periodically(
    *,
    stop: threading.Event,
    trim: Callable[[], object] | None,
    interval_seconds: float = TRIM_INTERVAL_SECONDS,
) -> None:
    """Calls `trim` every `interval_seconds` until `stop` is set; returns at once without one."""
    if trim is None:
        log.info("no malloc_trim in this C library; freed memory is left to it")
        return
    while not stop.wait(interval_seconds):
        try:
            trim()
        except Exception:
            # Never worth ending the thread: the next period tries again.
            log.exception("malloc_trim failed")
