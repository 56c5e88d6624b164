"""``train.early_stop.EarlyStop``: strict lower-is-better best-so-far, its kept state, and the patience rule
(which stops where the old "epochs waited, reset on improvement" counter of ``single.fit`` stopped)."""

from __future__ import annotations

import math
import random

import pytest

from cmmd_dist.train.early_stop import EarlyStop


def test_only_a_strictly_lower_value_improves_and_keeps_its_state():
    stop = EarlyStop(patience=2)
    calls = []
    assert stop.update(0.5, 1, lambda: calls.append(1) or "w1")
    assert not stop.update(0.5, 2, lambda: calls.append(2) or "w2")  # equal: no improvement
    assert not stop.update(math.nan, 3, lambda: calls.append(3) or "w3")  # NaN never improves
    assert (stop.value, stop.epoch, stop.state, calls) == (0.5, 1, "w1", [1])
    assert stop.update(0.4, 4)
    assert (stop.value, stop.epoch, stop.state) == (0.4, 4, None)


def test_patience_counts_epochs_since_the_best():
    stop = EarlyStop(patience=2)
    stop.update(1.0, 1)
    assert not stop.should_stop(1)
    stop.update(2.0, 2)
    assert stop.waited(2) == 1 and not stop.should_stop(2)
    stop.update(2.0, 3)
    assert stop.waited(3) == 2 and stop.should_stop(3)


def test_a_run_that_never_improves_stops_after_patience_epochs():
    stop = EarlyStop(patience=3)
    for epoch in range(1, 4):
        stop.update(math.nan, epoch)
    assert stop.should_stop(3) and stop.epoch == 0 and stop.state is None


def _counter_style(values: list[float], patience: int) -> tuple[int, int, float]:
    """The loop single.fit ran before EarlyStop: (stopped at, best epoch, best value)."""
    best, best_epoch, waited = float("inf"), 0, 0
    for epoch, v in enumerate(values, 1):
        if v < best:
            best, best_epoch, waited = v, epoch, 0
        else:
            waited += 1
            if waited >= patience:
                return epoch, best_epoch, best
    return len(values), best_epoch, best


def _helper(values: list[float], patience: int) -> tuple[int, int, float]:
    stop = EarlyStop(patience)
    for epoch, v in enumerate(values, 1):
        stop.update(v, epoch)
        if stop.should_stop(epoch):
            return epoch, stop.epoch, stop.value
    return len(values), stop.epoch, stop.value


@pytest.mark.parametrize("seed", range(40))
def test_stops_where_the_waited_counter_stopped(seed):
    rng = random.Random(seed)
    values = [rng.choice([math.nan, 1.0, 0.5]) if rng.random() < 0.2 else rng.random() for _ in range(30)]
    patience = rng.randint(1, 6)
    assert _helper(values, patience) == _counter_style(values, patience)


def test_resumes_from_the_saved_best_value_and_epoch():
    fresh, resumed = EarlyStop(2), None
    for epoch, v in enumerate([0.3, 0.2, 0.4], 1):
        fresh.update(v, epoch)
        if epoch == 2:
            resumed = EarlyStop(2, fresh.value, fresh.epoch, fresh.state)
    resumed.update(0.4, 3)
    assert (resumed.value, resumed.epoch, resumed.should_stop(4)) == (fresh.value, fresh.epoch, fresh.should_stop(4))
