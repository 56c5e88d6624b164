"""The test suite's own rules: every integration file carries the ``integration`` marker (so ``-m "not
integration"`` leaves no service behind), and ``waiting.wait_for`` (the one way tests wait) returns the
condition's value, fails naming what it waited for, and gives up at once when the predicate raises."""

import re
import time
from pathlib import Path

import pytest

from waiting import TimedOut, wait_for

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"


@pytest.mark.parametrize("path", sorted(INTEGRATION.glob("test_*.py")), ids=lambda p: p.name)
def test_every_integration_file_is_marked_integration(path):
    assert re.search(r"^pytestmark = .*pytest\.mark\.integration", path.read_text(), re.M), (
        f"{path.name} starts real services: add `pytestmark = pytest.mark.integration`, or move it to tests/unit/")


def test_wait_for_returns_the_first_truthy_value():
    calls = iter([None, 0, "", "ready"])
    assert wait_for(lambda: next(calls), timeout=5, interval=0.01, what="the third call") == "ready"


def test_wait_for_fails_naming_what_it_waited_for_after_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(TimedOut, match=r"timed out after 0.3 s waiting for the server \(seen: 7\)"):
        wait_for(lambda: False, timeout=0.3, interval=0.05, what=lambda: "the server (seen: 7)")
    assert 0.3 <= time.monotonic() - t0 < 2
    assert issubclass(TimedOut, AssertionError)


def test_wait_for_gives_up_at_once_when_the_predicate_raises():
    def exited():
        raise RuntimeError("the process exited")

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="exited"):
        wait_for(exited, timeout=30)
    assert time.monotonic() - t0 < 1
