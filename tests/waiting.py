"""``wait_for``: the one way a test waits for something to happen (imported as ``from waiting import wait_for``:
pytest puts ``tests/`` on ``sys.path`` for its conftest).

A test that sleeps a fixed time and then asserts races the machine: on a fast one it waits for nothing, on a
loaded one the thing has not happened yet and the test fails (or, worse, passes for the wrong reason).
``wait_for(predicate, timeout, interval, what)`` calls ``predicate`` until it returns something truthy and returns
that value; after ``timeout`` seconds it raises :class:`TimedOut` (an ``AssertionError``) naming ``what``. The
predicate may raise to give up at once (e.g. the process it watches has exited). ``what`` may be a callable, for
a message that shows the state at the time of failure (a log tail, what was seen). ``answers(url, proc, name,
log)`` is the predicate "this server answers", for the tests that start one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["TimedOut", "answers", "wait_for"]

T = TypeVar("T")


class TimedOut(AssertionError):
    """The condition of a :func:`wait_for` did not hold within its timeout."""


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.2,
             what: str | Callable[[], str] = "the condition") -> T:
    """``predicate()``'s first truthy value, polled every ``interval`` s; :class:`TimedOut` after ``timeout`` s.

    The predicate is called once more at the deadline, so a slow predicate never loses its last chance."""
    deadline = time.monotonic() + timeout
    while True:
        last_call = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if last_call:
            raise TimedOut(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def answers(url: str, proc: subprocess.Popen, name: str, log: Path | None = None) -> Callable[[], bool]:
    """A :func:`wait_for` predicate: ``url`` answers with a 2xx status. It raises ``RuntimeError`` at once when
    ``proc`` (the server ``name``) has exited, with the tail of its ``log``."""
    import requests

    def check() -> bool:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.is_file() else ""
            raise RuntimeError(f"{name} exited with {proc.returncode}" + (f"; see {log}:\n{tail}" if log else ""))
        try:
            return requests.get(url, timeout=2).ok
        except requests.RequestException:
            return False

    return check
