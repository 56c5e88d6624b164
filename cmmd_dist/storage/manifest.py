"""The manifest of a prepared dataset: found, read (format version and paths checked), written, removed.

The writer produces ``manifest.json`` (deterministic bytes: sorted keys); a hand-written YAML manifest
(``manifest.yaml`` / ``manifest.yml``) of someone else's shards is also read. The manifest is written
LAST, so a dataset without one is unfinished and no reader accepts it. Every path a manifest lists is
checked when it is read (:func:`check_manifest_files`: relative, inside the root once links are resolved),
before any shard is opened. What the shards hold is ``cmmd_dist.datasets``' business, not this module's.
"""

from __future__ import annotations

import json

from cmmd_dist.storage.files import delete_file, exists, read_bytes, write_bytes
from cmmd_dist.storage.paths import StorageError, check_relative_path, confined, join_uri
from cmmd_dist.storage.s3 import S3Settings, check_bucket

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAMES",
    "check_manifest_files",
    "find_manifest",
    "read_manifest",
    "write_manifest",
    "remove_manifest",
]

FORMAT_VERSION = 1
# the writer produces manifest.json; a hand-written YAML manifest of someone else's shards is also read
MANIFEST_NAMES = ("manifest.json", "manifest.yaml", "manifest.yml")


def check_manifest_files(manifest: dict, where: str | None = None, root: str | None = None) -> list[dict]:
    """The manifest's ``files`` entries, each with a 'split' and a 'path' checked (and normalised) by
    :func:`check_relative_path` and, given the dataset ``root``, by :func:`confined` (links resolved):
    every entry is refused before any file is opened."""
    where = where or manifest.get("_uri", "manifest")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise StorageError(f"{where}: column 'files' is missing or not a list")
    for i, entry in enumerate(files):
        if not isinstance(entry, dict) or "path" not in entry or "split" not in entry:
            raise StorageError(f"{where}: files[{i}]: every entry of 'files' needs 'path' and 'split', got {entry!r}")
        entry["path"] = check_relative_path(entry["path"], f"{where}: files[{i}]")
        if root is not None:
            confined(root, entry["path"], f"{where}: files[{i}] {entry['path']!r}")
    return files


def find_manifest(root: str, settings: S3Settings | None = None) -> str | None:
    """URI of the manifest under ``root``, or None when the dataset is absent or unfinished."""
    for name in MANIFEST_NAMES:
        uri = confined(root, name)  # a manifest linked outside the root is refused, not read
        if exists(uri, settings):
            return uri
    return None


def _parse(uri: str, text: str) -> dict:
    """The manifest text of ``uri`` as a mapping (JSON, or YAML by its name) with an understood format version."""
    try:
        if uri.endswith(".json"):
            manifest = json.loads(text)
        else:
            import yaml

            manifest = yaml.safe_load(text)
    except ValueError as err:
        raise StorageError(f"{uri}: manifest is not valid {'JSON' if uri.endswith('.json') else 'YAML'}: {err}") from err
    if not isinstance(manifest, dict):
        raise StorageError(f"{uri}: a manifest must be a mapping, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise StorageError(f"{uri}: column 'format_version' is missing or not an integer")
    if version > FORMAT_VERSION:
        raise StorageError(
            f"{uri}: manifest format_version {version} is newer than this cmmd_dist understands ({FORMAT_VERSION}); upgrade cmmd_dist"
        )
    return manifest


def read_manifest(root: str, settings: S3Settings | None = None) -> dict:
    """The manifest of the dataset under ``root`` as a dict, its format version checked."""
    uri = find_manifest(root, settings)
    if uri is None:
        check_bucket(root, settings)
        raise StorageError(
            f"{join_uri(root, MANIFEST_NAMES[0])}: no manifest: not a prepared dataset, or its prepare did not finish"
        )
    manifest = _parse(uri, read_bytes(uri, settings).decode("utf-8"))
    manifest["_uri"] = uri
    if "files" in manifest:  # every path checked now (links resolved), before any shard is opened
        check_manifest_files(manifest, uri, root)
    return manifest


def write_manifest(root: str, manifest: dict, settings: S3Settings | None = None) -> str:
    """Write ``manifest.json`` under ``root`` (deterministic bytes: sorted keys); returns its URI."""
    uri = confined(root, MANIFEST_NAMES[0])
    body = {k: v for k, v in manifest.items() if not k.startswith("_")}
    write_bytes(uri, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8"), settings)
    return uri


def remove_manifest(root: str, settings: S3Settings | None = None) -> None:
    """Mark the dataset under ``root`` unfinished (done first by a prepare that overwrites it)."""
    for name in MANIFEST_NAMES[:1]:
        delete_file(join_uri(root, name), settings)
