"""A distributed run's folder ``<storage>/<name>``: Ray Train's checkpoints and snapshot next to the run's config,
the ends of ``trainer.fit`` turned into what the user needs (a worker's user error, Ctrl-C), and ``--resume``.

    cmmd-dist train --resume <storage>/<name>

The folder holds the run's config (``cmmd_run.yaml``) next to Ray's checkpoints, so that Ctrl-C can print a
command that resumes it. A ``UserError`` on a worker comes back as a marker in rank 0's return value
(``USER_ERROR_KEY``: Ray would restart the group ``max_failures`` times on the same bad file) and is raised
again here, a fresh folder removed (nothing half-written). ``status.json`` marks a folder whose last attempt
failed or was interrupted; a run that finishes (a resumed one too) removes it. No Ray import: the trainer is
what ``setup`` built.
"""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import replace
from pathlib import Path

import yaml

from cmmd_dist import storage as run_store  # the run folder's own files (config, Ray's snapshot); driver side
from cmmd_dist.config import RunConfig
from cmmd_dist.errors import Interrupted, UserError
from cmmd_dist.storage import S3Settings, StorageError
from cmmd_dist.train.storage_outage import storage_cause

__all__ = ["RunFolder", "resume_settings", "storage_uri", "check_folder_path", "mark_failed", "clear_status",
           "RUN_CONFIG_FILE", "USER_ERROR_KEY", "STATUS_FILE"]

RUN_CONFIG_FILE = "cmmd_run.yaml"  # in <storage>/<name>: what `train --resume` reads back
USER_ERROR_KEY = "cmmd_user_error"  # a worker's return value that carries a UserError to the driver
BRIEF_RETRY_S = 3.0  # how long a failed run's last look at its storage may retry (it may still be down)
# in a run folder whose last attempt failed after its checks, or was interrupted: {"status": "failed", "error": ...};
# a run that finishes (a resumed one too) removes it
STATUS_FILE = "status.json"


def check_folder_path(path: str, flag: str) -> None:
    """A UserError naming ``flag`` unless the local ``path`` is, or can become, a folder (nothing created)."""
    if run_store.is_s3_uri(path):
        return
    folder = Path(path)
    blocked = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise UserError(f"{flag} {path}: {blocked} is a file, not a folder")


def mark_failed(folder: str, err: BaseException, s3: S3Settings | None = None) -> None:
    """Write ``STATUS_FILE`` into a run folder whose run failed past its checks, so that it does not look like a
    run in progress (best effort: the error being reported matters more)."""
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    text = json.dumps({"status": status, "error": f"{type(err).__name__}: {err}"[:2000]})
    try:
        run_store.write_bytes(run_store.join_uri(folder, STATUS_FILE), text.encode(), s3)
    except Exception:  # noqa: BLE001
        pass


def clear_status(folder: str, s3: S3Settings | None = None) -> None:
    """Remove ``STATUS_FILE`` from the folder of a run that finished: an earlier attempt's "failed" or
    "interrupted" is no longer true (best effort, like :func:`mark_failed`)."""
    try:
        run_store.delete_file(run_store.join_uri(folder, STATUS_FILE), s3)
    except Exception:  # noqa: BLE001
        pass


def storage_uri(run: RunConfig) -> str:
    """Where the run folders of ``run`` live: ``distributed.storage``, else ``<output_dir>/ray`` (absolute)."""
    uri = run.distributed.storage or str(Path(run.output_dir, "ray"))
    return uri if run_store.is_s3_uri(uri) else str(Path(uri).resolve())


def resume_settings(run_dir: str, overrides: dict) -> tuple[str, dict]:
    """(config URI, overrides) that continue the run whose folder is ``run_dir`` = ``<storage>/<name>``: its
    saved config, with ``distributed.storage`` and ``name`` pointing there (Ray Train then restores the
    latest checkpoint of that run); the other ``overrides`` (e.g. more --epochs) apply on top, but no other
    data: a --dataset, --data, --source or --limit that differs from the saved config is refused."""
    uri = str(run_dir).rstrip("/")
    if run_store.is_s3_uri(uri):
        base, _, name = uri.rpartition("/")
        if base in ("s3:/", "s3:") or not name:
            raise UserError(f"--resume {run_dir}: expected s3://bucket/prefix/<run name>")
    else:
        folder = Path(uri).resolve()
        base, name = str(folder.parent), folder.name
    config = run_store.join_uri(uri, RUN_CONFIG_FILE)
    if not run_store.exists(config):
        raise UserError(f"--resume {run_dir}: no run to resume there (no {RUN_CONFIG_FILE}); give the folder "
                        f"<storage>/<run name> that an interrupted run printed")
    _check_same_data(run_dir, yaml.safe_load(run_store.read_bytes(config)) or {}, overrides.get("data") or {})
    dist_over = dict(overrides.get("distributed") or {})
    if dist_over.get("storage") not in (None, base):
        raise UserError(f"--resume {run_dir} names the storage already: drop --storage {dist_over['storage']}")
    return config, {**overrides, "distributed": {**dist_over, "storage": base, "name": name}}


# what a run's checkpoints are bound to: the data it trains on (option: its config key under data)
_DATA_OPTIONS = {"--dataset": "dataset", "--data": "prepared", "--source": "source", "--limit": "limit"}


def _check_same_data(run_dir: str, saved: dict, data: dict) -> None:
    """A resume trains on the run's own data: a --dataset, --data, --source or --limit that differs from the
    saved config is refused, naming both (before Ray starts)."""
    def normal(key: str, value):
        if key in ("prepared", "source") and isinstance(value, str) and not run_store.is_s3_uri(value):
            return str(Path(value).resolve())
        return value

    was = saved.get("data") or {}
    for flag, key in _DATA_OPTIONS.items():
        if key in data and normal(key, data[key]) != normal(key, was.get(key)):
            shown = "none" if was.get(key) is None else was.get(key)
            raise UserError(f"--resume {run_dir}: the run was started with {flag} {shown}, not {flag} {data[key]}: "
                            f"leave {flag} out (a resume trains on its run's data) or start a new run")


class RunFolder:
    """``<storage>/<name>``: Ray Train's checkpoints and snapshot, and the run's config for ``--resume``.

    ``fit`` runs the trainer and turns its ends into what the user needs: a worker's user error is raised
    again here (and a fresh folder removed: nothing half-written), Ctrl-C says where the latest
    checkpoint is and which command resumes from it."""

    def __init__(self, run: RunConfig, name: str, s3: S3Settings | None):
        self.uri = run_store.join_uri(storage_uri(run), name)
        self.s3 = s3
        self.fresh = not run_store.exists(self.uri, s3)
        run_store.write_bytes(run_store.join_uri(self.uri, RUN_CONFIG_FILE),
                              yaml.safe_dump(run.model_dump(mode="json"), sort_keys=False).encode(), s3)

    def fit(self, trainer):
        interrupted = threading.Event()
        _note_sigint(trainer, interrupted)
        main_thread = threading.current_thread() is threading.main_thread()
        before = signal.getsignal(signal.SIGINT) if main_thread else None
        try:
            result = trainer.fit()
        except BaseException as err:
            if interrupted.is_set() or isinstance(err, KeyboardInterrupt):
                mark_failed(self.uri, Interrupted("Ctrl-C"), self.s3)  # before a checkpointless fresh folder goes
                raise Interrupted(self._interrupted()) from err
            cause = storage_cause(err)
            if cause is not None:  # the storage may still be down: look at it briefly, then say how to go on
                mark_failed(self.uri, err, self._briefly())
                raise StorageError(self._storage_failed(cause)) from err
            mark_failed(self.uri, err, self.s3)
            raise
        finally:
            if main_thread:  # Ray leaves its handler behind, bound to the finished run's controller
                signal.signal(signal.SIGINT, before)
        value = result.return_value
        if isinstance(value, dict) and USER_ERROR_KEY in value:
            if storage_cause(value[USER_ERROR_KEY]) is not None:  # an outage while loading: no user error
                raise StorageError(self._storage_failed(storage_cause(value[USER_ERROR_KEY])))
            self._discard_if_fresh()
            raise UserError(value[USER_ERROR_KEY])
        clear_status(self.uri, self.s3)
        return result

    def latest_checkpoint(self, s3: S3Settings | None = None) -> tuple[int, str] | None:
        """(epoch, URI) of the checkpoint Ray Train resumes from: the newest in its snapshot (read with ``s3``, else
        the run's settings)."""
        snapshot = run_store.join_uri(self.uri, "checkpoint_manager_snapshot.json")
        try:
            state = json.loads(run_store.read_bytes(snapshot, s3 or self.s3))
        except (UserError, ValueError):
            return None
        latest = state.get("latest_checkpoint_result") or {}
        name = (latest.get("checkpoint_dir_name") or "") if isinstance(latest, dict) else ""
        if not name.startswith("checkpoint_epoch_"):
            return None
        return int(name.rsplit("_", 1)[1]), run_store.join_uri(self.uri, name)

    def _interrupted(self) -> str:
        latest = self.latest_checkpoint()
        if latest is None:
            self._discard_if_fresh()
            return "stopped before the first epoch checkpoint: nothing to resume"
        epoch, uri = latest
        return f"checkpoint of epoch {epoch} at {uri}; resume with: cmmd-dist train --resume {self.uri}"

    def _briefly(self) -> S3Settings:
        return replace(self.s3 or S3Settings.from_env(), retry_s=BRIEF_RETRY_S)

    def _storage_failed(self, cause: str) -> str:
        """One line: the storage, what failed, the latest checkpoint (if it can be read now) and the resume command."""
        latest = self.latest_checkpoint(self._briefly())
        where = f"checkpoint of epoch {latest[0]} at {latest[1]}" if latest else "latest checkpoint unknown (storage unreadable)"
        return (f"{self.uri}: the run stopped on a storage error ({cause}); {where}; once the storage answers, "
                f"resume with: cmmd-dist train --resume {self.uri}")

    def _discard_if_fresh(self) -> None:
        if not self.fresh:
            return
        fs, path = run_store.resolve(self.uri, self.s3)
        try:
            fs.delete_dir(path)
        except (FileNotFoundError, OSError):  # best effort: the error being reported matters more
            pass


def _note_sigint(trainer, interrupted: threading.Event) -> None:
    """Let the driver know that the user pressed Ctrl-C. Ray Train installs its own SIGINT handler in
    ``fit`` (it aborts the run gracefully) and ``fit`` then fails like any crash; wrapping the handler as
    Ray registers it is the only way to tell the two apart (Ray 2.60: ``_register_sigint_handler``; where
    that is gone, Ctrl-C still ends the run, with a plain "interrupted"): ``ray_compat.wrap_sigint_registration``."""
    from cmmd_dist.train.ray_compat import wrap_sigint_registration

    def note() -> None:
        ray_handler = signal.getsignal(signal.SIGINT)

        def handler(signum, frame) -> None:
            interrupted.set()
            if callable(ray_handler):
                ray_handler(signum, frame)

        signal.signal(signal.SIGINT, handler)

    wrap_sigint_registration(trainer, note)
