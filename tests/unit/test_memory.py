"""Freed memory given back to the system: a trim every period, until the controller stops."""

from __future__ import annotations

import sys
import threading

import pytest

from controller.memory import glibc_malloc_trim, trim_periodically


def test_trims_every_period_until_stopped() -> None:
    # given a trim that counts its calls and stops the loop at the third
    stop = threading.Event()
    calls: list[int] = []

    def trim() -> None:
        calls.append(1)
        if len(calls) == 3:
            stop.set()

    # when the loop runs with a short period
    finished = threading.Thread(target=trim_periodically, kwargs={"stop": stop, "trim": trim, "interval_seconds": 0.01})
    finished.start()
    finished.join(timeout=5)

    # then it trimmed three times and returned
    assert not finished.is_alive() and len(calls) == 3


def test_a_failing_trim_does_not_end_the_loop() -> None:
    stop = threading.Event()
    calls: list[int] = []

    def trim() -> None:
        calls.append(1)
        if len(calls) == 2:
            stop.set()
        raise OSError("not today")

    trim_periodically(stop=stop, trim=trim, interval_seconds=0.01)

    assert len(calls) == 2


def test_without_a_trim_it_returns_at_once() -> None:
    trim_periodically(stop=threading.Event(), trim=None, interval_seconds=3600)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is a Linux function")
def test_glibc_malloc_trim_is_found_and_callable_here() -> None:
    trim = glibc_malloc_trim()

    assert trim is not None
    assert trim() in (0, 1)  # 1 when memory was returned
