"""Folder listings by URI, local or ``s3://``: the names of the sub-folders under a root.

A root that does not exist lists nothing (no error); S3 "folders" are the common prefixes that
``pyarrow.fs`` reports as directories.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from cmmd_dist.storage.s3 import resolve

__all__ = ["folder_names"]


def folder_names(uri: str, prefix: str = "") -> list[str]:
    """The sorted base names of the folders directly under ``uri`` that start with ``prefix``."""
    fs, root = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix))
