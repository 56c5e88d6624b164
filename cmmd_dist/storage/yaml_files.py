"""YAML files a user names (a run config, a search space), local or ``s3://``: read as a mapping, a one-line
``UserError`` naming the file when it is missing, unreadable or not a YAML mapping."""

from __future__ import annotations

from pathlib import Path

import yaml

from cmmd_dist.config import RunConfig
from cmmd_dist.errors import UserError
from cmmd_dist.storage.files import read_bytes
from cmmd_dist.storage.paths import is_s3_uri

__all__ = ["load_run_config", "read_yaml_mapping"]


def load_run_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """RunConfig from a YAML file (or defaults), with nested overrides like {'train': {'epochs': 3}}.

    ``path`` may be a local file or an ``s3://`` URI. A missing or unreadable file and bad YAML are a
    one-line ``UserError`` naming the file; a value or key the models refuse is pydantic's
    ``ValidationError`` (``errors.describe_validation`` words it on one line)."""
    raw: dict = {}
    if path is not None:
        raw = read_yaml_mapping(str(path))
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            raw.setdefault(section, {})
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    return RunConfig.model_validate(raw)


def read_yaml_mapping(path: str, what: str = "run config") -> dict:
    """The mapping in a YAML file (local or s3://); a one-line UserError names the file otherwise
    (``what``: the kind of file, for the message: run config, search space)."""
    try:
        data = read_bytes(path) if is_s3_uri(path) else Path(path).read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError as err:
        raise UserError(f"{path}: {'config' if what == 'run config' else what} file not found") from err
    except (IsADirectoryError, NotADirectoryError) as err:
        raise UserError(f"{path}: is a folder, expected a YAML {what} file") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a YAML {what}: not UTF-8 text (byte {err.start} is {data[err.start]:#04x})") from err
    except PermissionError as err:
        raise UserError(f"{path}: cannot read the {what} file ({err.__class__.__name__})") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise UserError(f"{path}: not valid YAML{at}: {problem}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a {what} must be a mapping, got {type(raw).__name__}")
    return raw
