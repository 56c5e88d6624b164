"""Replacing a dataset under ``--out`` safely: which dataset is there, may it go, and which files are ours.

A writer replaces only the same dataset (spec name, source hash, seed, limit: :func:`dataset_identity`)
unless told to overwrite (:func:`check_replaceable`). Before it deletes or writes anything it checks that
its split folders resolve inside ``out_uri`` (:func:`check_out_folders`) and that every file it would
delete is its own (``storage.own_file``: inside, a regular file): the files the old manifest lists, and
the stale files of its naming (``<split>/part-NNNNN.parquet``, ``*.tmp-<hex>``) that a killed prepare
left and no manifest lists (:func:`doomed_files`). :func:`remove_dataset` then removes the manifest FIRST
and those files, so no stale shard is left behind.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable

import pyarrow.fs as pafs

from cmmd_dist.errors import one_line
from cmmd_dist.storage.files import delete_file
from cmmd_dist.storage.manifest import MANIFEST_NAMES, check_manifest_files, find_manifest, read_manifest, remove_manifest
from cmmd_dist.storage.paths import StorageError, confined, is_s3_uri, join_uri, own_file
from cmmd_dist.storage.s3 import S3Settings, resolve

__all__ = ["dataset_identity", "check_replaceable", "check_out_folders", "doomed_files", "remove_dataset",
           "remove_empty_folders"]

# the files a writer names (and a killed one leaves): part-00000.parquet, its temporary part-00000.parquet.tmp-<hex>
_OWN_SHARD = re.compile(r"part-\d{5,}\.parquet(\.tmp-[0-9a-f]{32})?")
_OWN_TOP = re.compile(r"manifest\.json\.tmp-[0-9a-f]{32}")


def dataset_identity(manifest: dict) -> dict:
    """What makes two prepared datasets the same one: spec name, source hash, seed and limit."""
    spec = manifest.get("spec")
    return {"name": spec.get("name") if isinstance(spec, dict) else None, "source_sha256": manifest.get("source_sha256"),
            "seed": manifest.get("seed"), "limit": manifest.get("limit")}


def check_replaceable(out_uri: str, identity: dict, overwrite: bool = False,
                      settings: S3Settings | None = None) -> dict | None:
    """The manifest of the dataset under ``out_uri`` (None if none) once it may be replaced by a dataset
    of ``identity`` (keys of :func:`dataset_identity`; absent keys are not compared).

    The same dataset may always be written again (that completes an interrupted prepare); a different
    one, or a manifest that cannot be read, only with ``overwrite``."""
    if find_manifest(out_uri, settings) is None:
        return None
    try:
        old = read_manifest(out_uri, settings)
    except StorageError as err:
        if not overwrite:
            raise StorageError(f"{out_uri}: holds a manifest that cannot be read ({one_line(err)}); "
                               "pass --overwrite to replace it, or choose another --out") from err
        return None  # its files are unknown (or unsafe to touch): only the manifest goes
    there = dataset_identity(old)
    diff = [f"{k} {there[k]!r} there, {v!r} now" for k, v in identity.items() if there.get(k) != v]
    if diff and not overwrite:
        raise StorageError(f"{out_uri}: holds a different dataset ({'; '.join(diff)}); "
                           "pass --overwrite to replace it, or choose another --out")
    return old


def _listed(out_uri: str, folder: str, settings: S3Settings | None) -> list[str]:
    """Names of the entries directly in ``folder`` under ``out_uri`` (none when it is absent, or is a local
    folder that resolves outside ``out_uri``: nothing there is this writer's)."""
    uri = join_uri(out_uri, folder) if folder else out_uri
    if not is_s3_uri(uri):
        if not os.path.isdir(uri):
            return []
        if folder:
            try:
                confined(out_uri, folder, inside="--out")
            except StorageError:  # a folder linked outside: nothing there is this writer's
                return []
        return sorted(os.listdir(uri))
    fs, path = resolve(uri, settings)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise StorageError(f"{uri}: cannot list: {one_line(err)}") from err
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File)


def check_out_folders(out_uri: str, splits: Iterable[str]) -> None:
    """Refuse an ``out_uri`` whose split folders (or manifest) resolve outside it, before anything is written."""
    for name in (*splits, MANIFEST_NAMES[0]):
        confined(out_uri, name, f"{join_uri(out_uri, name)} (where data prepare writes)", inside="--out")


def doomed_files(out_uri: str, old: dict | None, splits: Iterable[str], settings: S3Settings | None) -> list[str]:
    """Every file a writer into ``out_uri`` is to delete, each proven its own (``storage.own_file``) before
    any is deleted: the files ``old`` (the manifest replaced) lists, then the stale ones of its naming that
    no manifest lists, in the split folders written now or listed by ``old``. The split folders to be
    written must resolve inside ``out_uri`` (a link that leaves is refused before anything is touched)."""
    check_out_folders(out_uri, splits)
    listed = check_manifest_files(old, root=out_uri) if old and "files" in old else []
    rels = [e["path"] for e in listed]
    folders = dict.fromkeys([*splits, *(posixpath.dirname(p) for p in rels if "/" in p)])
    stale = [n for n in _listed(out_uri, "", settings) if _OWN_TOP.fullmatch(n)]
    for folder in folders:
        stale += [f"{folder}/{n}" for n in _listed(out_uri, folder, settings) if _OWN_SHARD.fullmatch(n)]
    doomed = []
    for rel in dict.fromkeys([*rels, *stale]):
        uri = own_file(out_uri, rel)
        if uri is not None:
            doomed.append(uri)
    return doomed


def remove_dataset(out_uri: str, doomed: list[str], settings: S3Settings | None) -> None:
    """Unfinish the dataset under ``out_uri`` (manifest first), then delete ``doomed`` (see :func:`doomed_files`)."""
    remove_manifest(out_uri, settings)
    for name in MANIFEST_NAMES[1:]:  # a hand-written YAML manifest would otherwise outlive its dataset
        delete_file(confined(out_uri, name), settings)
    for uri in doomed:
        delete_file(uri, settings)


def remove_empty_folders(out_uri: str, rel_paths: list[str]) -> None:
    """Local folders of replaced shards left empty (S3 has no folders); a folder with anything in it stays."""
    if is_s3_uri(out_uri):
        return
    for folder in sorted({posixpath.dirname(p) for p in rel_paths if "/" in p}, key=len, reverse=True):
        try:
            os.rmdir(join_uri(out_uri, folder))
        except OSError:
            pass
