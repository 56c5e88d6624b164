"""Tell a storage outage apart from other ends of a Ray Train run: the S3 (or disk) error inside Ray's wrappers.

Ray Train V2 ends a failed run with a ``ControllerError`` (its ``controller_failure``: e.g. an upload of the
checkpoint snapshot) or a ``WorkerGroupError`` (``worker_failures`` per rank, each possibly a ``RayTaskError``
with the remote ``cause``). A storage error is an ``OSError`` (pyarrow raises one for every S3 failure), or any
error whose text carries the AWS SDK's ``AWS Error <CODE> during <Operation> operation`` (a worker's own
``StorageError`` or Ray's message that quotes it). No Ray import: the chain is walked by attribute.
"""

from __future__ import annotations

import re

__all__ = ["storage_cause"]

_AWS = re.compile(r"AWS Error [A-Z_]+ during \w+ operation[^\n]{0,160}")
_LINKS = ("controller_failure", "cause", "__cause__", "__context__")


def _chain(err: BaseException):
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (getattr(e, name, None) for name in _LINKS) if isinstance(x, BaseException)]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo += [x for x in failures.values() if isinstance(x, BaseException)]


def storage_cause(err: BaseException | str) -> str | None:
    """The storage error that ended a run, in a few words ('AWS Error NETWORK_CONNECTION during GetObject
    operation: ...', or an OSError's first line), or None when ``err`` is no storage failure."""
    if isinstance(err, str):
        found = _AWS.search(err)
        return found[0].strip() if found else None
    for e in _chain(err):
        found = _AWS.search(str(e))
        if found:
            return found[0].strip()
    for e in _chain(err):
        if isinstance(e, OSError):
            return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return None
