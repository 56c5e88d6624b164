"""The sweep's command line, built from ``SweepConfig``'s fields: ``python -m cmmd_dist.tune`` and ``cmmd-dist tune``.

Each field is one option by :func:`cli.options.field_option`: ``--<name-with-dashes>`` (``output_dir`` is
``--out``), its type and choices from the field's annotation, its help from the field's description. A flag
that defaults to true is ``--no-<name>``.
Unset options are left out, so the field's own default (or the search space's value) applies. Both entry
points call :func:`build_parser`, so they cannot drift apart, and a new ``SweepConfig`` field is an option.
"""

from __future__ import annotations

import argparse
import sys

from cmmd_dist.config import SweepConfig
from cmmd_dist.cli.options import field_option
from cmmd_dist.cli.parser import OneLineArgumentParser
from cmmd_dist.errors import run_cli

__all__ = ["build_parser", "settings_from_args", "run_from_args", "main", "FLAGS"]

FLAGS = {"output_dir": "--out"}  # fields whose option is not --<name-with-dashes>


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The sweep's options on ``p`` (the ``cmmd-dist tune`` subparser), or a parser of their own with ``--debug``."""
    standalone = p is None
    if p is None:
        p = OneLineArgumentParser(prog="python -m cmmd_dist.tune", description=__doc__.splitlines()[0])
    for name, field in SweepConfig.model_fields.items():
        flags, kw = field_option(name, field, FLAGS.get(name))
        p.add_argument(*flags, **kw)
    if standalone:
        p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return p


def settings_from_args(args: argparse.Namespace) -> SweepConfig:
    """The SweepConfig of the options given (unset ones keep the field's default)."""
    return SweepConfig(**{k: getattr(args, k) for k in SweepConfig.model_fields if getattr(args, k, None) is not None})


def run_from_args(args: argparse.Namespace) -> int:
    """``cmmd-dist tune`` and ``python -m cmmd_dist.tune``: the same checks, the same sweep. A sweep in which
    no trial finished its CV exits 1; user errors are ``UserError`` (one line, exit 2, via ``run_cli``)."""
    from cmmd_dist.tune.sweep import SweepFailed, run_sweep

    settings = settings_from_args(args)
    try:
        run_sweep(settings)
    except SweepFailed as err:
        print(f"cmmd_dist.tune: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run_from_args(args), prog="cmmd_dist.tune", argv=argv)
