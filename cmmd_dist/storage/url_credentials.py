"""Credentials in a URL's user-info (``http://user:password@host``, ``s3://key:secret@bucket``): split off, so
that no URL stored (Tune's ``tuner.pkl``, ``sweep.json``, MLflow tags) or shown (logs, messages) carries them.

    split_userinfo("http://me:p%40ss@host:5000/x")   # ("http://host:5000/x", "me", "p@ss")
    strip_userinfo("http://me:pw@host")              # "http://host" (None stays None)
    refuse_userinfo("s3://key:secret@b/p", "--storage")   # UserError naming s3://b/p, never the secret

What to do with the credentials is the caller's: ``tracking.take_credentials`` moves MLflow's into this
process's ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``; S3 keys in a URI are refused (each Ray
node brings its own, ``storage.resolve_without_keys``). Only ``scheme://`` URLs have user-info: a path such as
``sqlite:////tmp/a@b/x.db`` is left alone.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit

from cmmd_dist.errors import UserError

__all__ = ["split_userinfo", "strip_userinfo", "strip_password", "tracking_uri_shown", "refuse_userinfo"]


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """(the URL without user-info, user, password), user and password percent-decoded (None when absent)."""
    if "://" not in uri:
        return uri, None, None
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    stripped = urlunsplit(parts._replace(netloc=host))
    return stripped, unquote(user) or None, unquote(password) if colon else None


def strip_userinfo(uri: str | None) -> str | None:
    """``uri`` without its user-info, for storing and showing."""
    return None if uri is None else split_userinfo(uri)[0]


def refuse_userinfo(uri: str | None, option: str) -> None:
    """A one-line UserError when ``uri`` carries credentials (shown without them)."""
    if uri is not None and split_userinfo(uri)[1:] != (None, None):
        raise UserError(f"{option} {strip_userinfo(uri)}: credentials in a URI are not accepted (they would be "
                        "stored with the sweep and printed): give them in the environment (AWS_ACCESS_KEY_ID / "
                        "AWS_SECRET_ACCESS_KEY), ~/.aws or the node's role")


def strip_password(uri: str) -> str:
    """A database URI (``postgresql://role:pw@host/db``) without its password; the role stays, since it names
    who connects. A PostgreSQL password moves to this process's ``PGPASSWORD`` (libpq reads it, as it reads
    ``~/.pgpass``); any other database's password in the URI is refused: give it in that driver's own way."""
    import os

    stripped, user, password = split_userinfo(uri)
    if password is None:
        return uri
    if not uri.startswith(("postgresql", "postgres")):
        raise UserError(f"--mlflow {stripped}: a password in a database URI is not accepted (it would be stored "
                        "with the sweep and printed): give it in the database driver's own way")
    os.environ["PGPASSWORD"] = password
    return tracking_uri_shown(uri)


def tracking_uri_shown(uri: str | None) -> str | None:
    """A tracking URI as it may be stored and shown: a server's without user-info, a database's without its
    password (its role stays). Changes no environment."""
    if uri is None or uri.startswith(("http://", "https://")):
        return strip_userinfo(uri)
    stripped, user, _ = split_userinfo(uri)
    if user is None:
        return stripped
    parts = urlsplit(stripped)
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}@{parts.netloc}"))
