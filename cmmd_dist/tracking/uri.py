"""Where tracking lives: the tracking URI (``--mlflow`` > MLFLOW_TRACKING_URI > the embedded
``sqlite:///<cwd>/mlruns.db``), its credentials moved out of it into this process's environment, a check that
MLflow can open it before anything starts, and the line that tells a person how to look at the runs.

``TrackingError`` is the one error of this package a user can act on. Nothing here imports mlflow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cmmd_dist.errors import UserError
from cmmd_dist.tracking.schema import SWEEP_VIEW

__all__ = ["TrackingError", "TRACKING_SCHEMES", "resolve_tracking_uri", "take_credentials", "ui_command",
           "check_tracking_uri", "check_reachable", "artifact_root"]

# the store kinds MLflow's tracking client opens (a typo such as gopher:// would fail in every trial instead)
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")


class TrackingError(UserError, RuntimeError):
    """A tracking problem a user can act on (unreachable server, unknown model or alias)."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` (``--mlflow``), else MLFLOW_TRACKING_URI, else the embedded ``sqlite:///<cwd>/mlruns.db``; a
    user and password in it are moved to this process's environment (:func:`take_credentials`), so the URI
    returned, which is stored and shown, carries none."""
    return take_credentials(uri or os.environ.get("MLFLOW_TRACKING_URI")
                            or f"sqlite:///{Path.cwd().resolve() / 'mlruns.db'}")


def take_credentials(uri: str | None) -> str | None:
    """``uri`` without user-info; for a server (http/https) its user and password become
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` of this process (where MLflow's client reads
    them at each request, as it does ``~/.mlflow/credentials``). A database store (``postgresql://role@host/db``)
    keeps its user, the database role, and loses only a password (``url_credentials.strip_password``). Never
    handed to Ray: only the driver talks to MLflow."""
    from cmmd_dist.storage.url_credentials import split_userinfo, strip_password

    if uri is None:
        return None
    if not uri.startswith(("http://", "https://")):  # a database store: its user names the role
        return strip_password(uri)
    stripped, user, password = split_userinfo(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return stripped


def ui_command(uri: str | None = None, port: int = 5000) -> str:
    """How a person looks at the runs: the server's address, or the ``mlflow ui`` line for a SQLite store."""
    uri = resolve_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (runs table with the sweeps' figures: ?viewStateShareKey={SWEEP_VIEW})"
    return f"mlflow ui --backend-store-uri {uri} --port {port}   # then open http://127.0.0.1:{port}"


def artifact_root(uri: str) -> str | None:
    """Artifacts beside a SQLite store (``mlartifacts``); a server decides for itself (None)."""
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri() if uri.startswith("sqlite:///") else None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """A server (http/https) that does not answer its health check is a TrackingError; other stores pass."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except requests.RequestException as err:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({type(err).__name__}: {err}). Start it "
            "(mlflow server --backend-store-uri ... --artifacts-destination ... --serve-artifacts) or drop "
            "--mlflow / unset MLFLOW_TRACKING_URI to use the embedded store ./mlruns.db"
        ) from err


def check_tracking_uri(uri: str | None = None, must_exist: bool = False) -> str:
    """The resolved tracking URI (:func:`resolve_tracking_uri`) once its form is one MLflow opens, a server
    answers, and a SQLite store's folder exists (``must_exist``: the store itself, for commands that only read);
    else a one-line TrackingError naming it. Nothing is created."""
    uri = resolve_tracking_uri(uri)
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri) else ""
    if scheme not in TRACKING_SCHEMES:
        raise TrackingError(f"--mlflow {uri}: not a tracking URI MLflow opens (use http(s)://host:port, "
                            f"sqlite:///ABSOLUTE/PATH.db or another of {', '.join(TRACKING_SCHEMES)})")
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise TrackingError(f"--mlflow {uri}: a SQLite store needs a file, e.g. sqlite:////abs/path/mlruns.db")
        db = Path(path).absolute()
        if db.is_dir() or (db.parent.exists() and not db.parent.is_dir()):
            raise TrackingError(f"--mlflow {uri}: {db if db.is_dir() else db.parent} is not a SQLite file's folder")
        if must_exist and not db.is_file():
            raise TrackingError(f"--mlflow {uri}: no MLflow store there ({db} does not exist)")
        if not db.parent.is_dir():
            raise TrackingError(f"--mlflow {uri}: folder {db.parent} does not exist")
    check_reachable(uri)
    return uri
