"""Command-line options derived from pydantic fields: the one rule both generated parsers follow
(``cmmd-dist tune`` from ``SweepConfig``, ``cmmd-dist train`` from ``RunConfig``).

A field is ``--<name-with-dashes>`` (or the flag its parser names), ``--no-<name>`` for a bool that defaults
to true; its type and choices come from the annotation (``X | None`` is ``X``), its help from the field's
description. Every option defaults to ``None`` (a bool flag too), so an option not given is told apart from
one given and leaves the config's own value.
"""

from __future__ import annotations

import types
import typing
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

__all__ = ["field_option"]


def _value_type(ann):
    """The annotation without its ``None``: ``int | None`` -> ``int``."""
    if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union:
        return next(a for a in typing.get_args(ann) if a is not type(None))
    return ann


def field_option(name: str, field: FieldInfo, flag: str | None = None, dest: str | None = None,
                 help: str | None = None) -> tuple[list[str], dict]:  # noqa: A002 (argparse's word)
    """(option strings, ``add_argument`` keywords) of the field ``name``: ``flag`` replaces the derived
    option string, ``dest`` the attribute it parses into (default ``name``), ``help`` the field's description."""
    ann = _value_type(field.annotation)
    dashed = name.replace("_", "-")
    text = field.description if help is None else help
    kw: dict = {"dest": dest or name, "default": None, "help": (text or "").replace("%", "%%")}  # argparse formats help
    if ann is bool:
        if field.default:
            return [flag or f"--no-{dashed}"], {**kw, "action": "store_false"}
        return [flag or f"--{dashed}"], {**kw, "action": "store_true"}
    if typing.get_origin(ann) is Literal:
        return [flag or f"--{dashed}"], {**kw, "choices": list(typing.get_args(ann))}
    return [flag or f"--{dashed}"], {**kw, "type": ann}
