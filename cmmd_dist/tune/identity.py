"""A sweep's identity, fixed when it starts: ``<storage>/<name>/sweep.json`` beside Tune's state.

It holds what the sweep's trials and its MLflow runs are bound to: the dataset (name), ``--data`` (absolute),
``--space`` (absolute, None: the dataset's) and the sha256 of the space as planned (preset applied),
``--scenario``, ``--preset`` and the tracking URI (resolved, credentials stripped). Tune's ``tuner.pkl``, which
``--resume`` restores, keeps the trials, the searcher and the MLflow callback (with its tracking URI) of the
start whatever the command line says now, so a resume may change none of these:

- :func:`resume_identity` (first in ``plan_sweep``): for a ``--resume --name``, every identity option left out
  is taken from the sweep, one given that differs is a one-line :class:`UserError` naming both values;
- :func:`check_resumed` (last in ``plan_sweep``, once the name is known, also for an unnamed ``--resume``):
  the same, then the planned sweep against the record (a space file edited since the start is refused);
- :func:`record_identity` (``run_sweep``, before Ray starts): written at a sweep's start; a sweep started before
  this record existed gets one at its first resume (what that resume was given; unchecked, say the logs).

Nothing here starts Ray. S3 credentials in ``--storage`` / ``--data`` are refused here too (``url_credentials``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cmmd_dist.config import SweepConfig
from cmmd_dist.errors import UserError

__all__ = ["IDENTITY_FILE", "FLAGS", "sweep_identity", "read_identity", "record_identity", "resume_identity",
           "check_resumed"]

IDENTITY_FILE = "sweep.json"
# the identity's SweepConfig fields and their options (space_sha256 and a planned dataset come from the plan)
FLAGS = {"dataset": "--dataset", "data": "--data", "space": "--space", "scenario": "--scenario",
         "preset": "--preset", "mlflow": "--mlflow"}


def _normal(field: str, value: str | None) -> str | None:
    """A value as recorded: local paths absolute, the tracking URI resolved and without credentials."""
    from cmmd_dist.storage import is_s3_uri
    from cmmd_dist.tracking.store import resolve_tracking_uri

    if field == "mlflow":
        return resolve_tracking_uri(value)
    if value is None or field not in ("data", "space") or is_s3_uri(value):
        return value
    return str(Path(value).resolve())


def _space_sha256(space) -> str:
    return hashlib.sha256(json.dumps(space.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def sweep_identity(plan) -> dict:
    """The identity of a planned sweep (a ``plan.SweepPlan``), as ``sweep.json`` records it."""
    s = plan.settings
    ident = {f: _normal(f, getattr(s, f)) for f in FLAGS}
    return {**ident, "dataset": plan.dataset, "space_sha256": _space_sha256(plan.space)}


def _uri(storage: str, name: str) -> str:
    from cmmd_dist.storage import join_uri

    return join_uri(storage, name, IDENTITY_FILE)


def read_identity(storage: str, name: str) -> dict | None:
    """The recorded identity of sweep ``<storage>/<name>``, or None for a sweep started before it was recorded."""
    from cmmd_dist import storage as store

    uri = _uri(storage, name)
    if not store.exists(uri):
        return None
    try:
        ident = json.loads(store.read_bytes(uri))
    except ValueError as err:
        raise UserError(f"--resume: {uri} is not the JSON a sweep's start writes ({err})") from None
    if not isinstance(ident, dict):
        raise UserError(f"--resume: {uri} is not the JSON a sweep's start writes")
    return ident


def record_identity(plan, log=print) -> None:
    """Write the sweep's identity at its start (and at the first resume of a sweep that has none)."""
    from cmmd_dist import storage as store

    if plan.settings.resume:
        if read_identity(plan.storage, plan.name) is not None:
            return
        log(f"sweep {plan.exp_path} has no {IDENTITY_FILE} (started by an older cmmd_dist): its dataset, space "
            "and tracking store could not be checked; they are recorded now as given to this resume")
    body = json.dumps(sweep_identity(plan), indent=2, sort_keys=True).encode()
    store.write_bytes(_uri(plan.storage, plan.name), body)


def _shown(flag: str, value) -> str:
    return f"{flag} {value}" if value is not None else f"no {flag}"


def _refused(where: str, flag: str, saved, now) -> UserError:
    return UserError(f"--resume: sweep {where} was started with {_shown(flag, saved)}, not {_shown(flag, now)}: "
                     f"leave {flag} out (a resume keeps what its sweep started with) or start a new sweep "
                     "under another --name")


def _given_or_saved(settings: SweepConfig, saved: dict, where: str) -> SweepConfig:
    """``settings`` with the identity options it leaves out taken from ``saved``; one that differs is refused."""
    for field, flag in FLAGS.items():
        value = getattr(settings, field)
        if value is not None and _normal(field, value) != saved.get(field):
            from cmmd_dist.storage.url_credentials import strip_userinfo

            raise _refused(where, flag, saved.get(field), _normal(field, value) if field == "mlflow"
                           else strip_userinfo(value))
    fill = {f: saved[f] for f in FLAGS if getattr(settings, f) is None and saved.get(f) is not None}
    return SweepConfig.model_validate({**settings.model_dump(), **fill}) if fill else settings


def resume_identity(settings: SweepConfig) -> SweepConfig:
    """The settings a sweep plans with: no S3 credentials in a URI; a ``--resume --name`` sweep's identity
    filled in from its ``sweep.json`` (an option given that differs: refused, naming both)."""
    from cmmd_dist.storage.url_credentials import refuse_userinfo

    refuse_userinfo(settings.storage, "--storage")
    refuse_userinfo(settings.data, "--data")
    if not (settings.resume and settings.name):
        return settings
    from cmmd_dist.tune.paths import sweep_paths

    storage, name = sweep_paths(settings, settings.dataset or "")
    saved = read_identity(storage, name)
    return settings if saved is None else _given_or_saved(settings, saved, f"{storage.rstrip('/')}/{name}")


def check_resumed(plan, replan):
    """The plan of a resume, checked against its sweep's record (``replan``: ``plan_sweep``, called again when
    an unnamed resume found its sweep and takes options from the record)."""
    saved = read_identity(plan.storage, plan.name)
    if saved is None:
        return plan
    settings = _given_or_saved(plan.settings, saved, plan.exp_path)
    if settings != plan.settings:
        return replan(settings.model_copy(update={"name": plan.name}))
    now = sweep_identity(plan)
    for field, flag in {**FLAGS, "space_sha256": None}.items():
        if field in saved and now[field] != saved[field]:
            if flag is None:
                raise UserError(f"--resume: the search space of sweep {plan.exp_path} changed since it started "
                                f"({now['space'] or 'cmmd_dist/search_spaces/' + plan.dataset + '.yaml'}, preset "
                                f"{plan.settings.preset or 'none'}): put it back, or start a new sweep under "
                                "another --name")
            raise _refused(plan.exp_path, flag, saved[field], now[field])
    return plan
