"""Paths inside a dataset root: URI joining and the confinement checks, for local folders and ``s3://`` alike.

Every path joined to a root is checked lexically (:func:`check_relative_path`: no ``..``, no absolute path,
no scheme, no backslash or control character) and, locally, again once links are resolved
(:func:`confined`), before the file is opened, written or deleted; a writer deletes only regular files
inside its root (:func:`own_file`). A link swapped in between that check and the open is not caught: it
guards against mistakes and planted links, not a concurrent writer. S3 has no links: its URIs are only
checked lexically. Nothing here opens a file; a refusal is a :class:`StorageError` naming the path.
"""

from __future__ import annotations

import os
import re
import shlex
import stat

from cmmd_dist.errors import UserError

__all__ = [
    "StorageError",
    "SCHEME",
    "is_s3_uri",
    "check_relative_path",
    "join_uri",
    "confined",
    "own_file",
]


class StorageError(UserError, RuntimeError):
    """A dataset or storage location that cannot be used; the message names the file (and column)."""


def is_s3_uri(uri: str) -> bool:
    return str(uri).startswith("s3://")


# "s3:", "file:", "http:", a drive letter "C:": anything that names another place than the folder it is joined to
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _escape(path: str) -> str | None:
    """Why ``path`` would leave the folder it is joined to (or is no usable name), or None."""
    if not path.strip("/. "):
        return "is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "has control characters"
    if "\\" in path:  # a Windows separator: "..\\x" climbs out on a filesystem that honours it
        return "has a backslash"
    if path.startswith(("/", "~")):
        return "is absolute"
    if SCHEME.match(path):
        return "has a URI scheme"
    if ".." in path.split("/"):
        return "climbs out with '..'"
    return None


def check_relative_path(path: object, where: str) -> str:
    """``path`` as a clean relative path ('train/part-00000.parquet') that stays inside the folder or
    prefix it is joined to, on local disks and S3 alike; a StorageError naming ``where`` otherwise.

    Refused: a non-string, the empty path, an absolute path (or ``~``), a scheme (``s3://``, ``file:``,
    ``C:``), a ``..`` component, a backslash, control characters. ``.`` and empty components are dropped."""
    if not isinstance(path, str):
        raise StorageError(f"{where}: path must be a string, got {type(path).__name__} {path!r}")
    reason = _escape(path)
    if reason is not None:
        raise StorageError(f"{where}: path {path!r} {reason}; it must be a relative path inside the dataset root")
    return "/".join(part for part in path.split("/") if part not in ("", "."))


def confined(root: str, rel: str, where: str | None = None, inside: str = "the dataset root") -> str:
    """``join_uri(root, rel)`` once it is known to lie inside ``root`` after every link is resolved.

    Locally both ``root`` and the joined path go through ``os.path.realpath`` (a ``root`` that is itself a
    link is fine; a shard, split folder or manifest linked to a place outside it is not); S3 has no links,
    so its URIs are only checked lexically (by :func:`join_uri`). The refusal names ``where`` (default: the
    joined path) and the target, never anything read from the target: nothing has been opened yet."""
    uri = join_uri(root, rel)
    if is_s3_uri(uri):
        return uri
    top, real = os.path.realpath(root), os.path.realpath(uri)
    if os.path.commonpath([top, real]) != top:
        raise StorageError(f"{where or uri}: resolves to {real}, outside {inside} {top}; "
                           "links may not leave it (copy the files in instead)")
    return uri


def own_file(root: str, rel: str, where: str | None = None, inside: str = "--out") -> str | None:
    """The URI of ``rel`` under ``root`` if a writer may delete it: locally a regular file (not a link,
    folder or device) inside ``root`` once links are resolved; None when there is nothing there locally.
    Anything else is a StorageError that says how to clear it by hand. S3 keys are plain objects."""
    uri = join_uri(root, rel)
    if is_s3_uri(uri):
        return uri
    try:
        mode = os.lstat(uri).st_mode
    except FileNotFoundError:
        confined(root, rel, where, inside)
        return None
    if not stat.S_ISLNK(mode):
        confined(root, rel, where, inside)  # a parent folder may be a link that leaves
        if stat.S_ISREG(mode):
            return uri
    kind = (f"a link to {os.path.realpath(uri)}" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a special file")
    raise StorageError(f"{where or uri}: is {kind}, not a regular file this prepare wrote: not deleted; "
                       f"remove it yourself (rm {'-r ' if stat.S_ISDIR(mode) else ''}{shlex.quote(uri)}) "
                       f"or choose another {inside}")


def join_uri(base: str, *parts: str) -> str:
    """``base`` joined with ``parts`` by '/', for local paths and s3:// URIs alike; the result is always
    inside ``base`` (each part is checked by :func:`check_relative_path`: no '..', no absolute path)."""
    base = str(base)
    rel = "/".join(check_relative_path(part, base) for part in parts)  # each part: "/etc" is no subfolder
    if is_s3_uri(base):
        inside = base[len("s3://") :].strip("/")
        if not inside:
            raise StorageError(f"{base}: an S3 URI needs a bucket, e.g. s3://bucket/prefix")
        return f"s3://{inside}/{rel}"
    head = base.rstrip("/")
    if not head:
        return f"/{rel}" if base.startswith("/") else rel
    return f"{head}/{rel}"
