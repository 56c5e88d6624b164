"""One option parser for both sweep entry points, built from SweepConfig: every field is an option, and
``cmmd-dist tune`` and ``python -m cmmd_dist.tune`` accept the same options with the same meaning."""

import typing
from typing import Literal

from cmmd_dist.cli.app import build_parser as cli_parser
from cmmd_dist.config import SweepConfig
from cmmd_dist.cli.tune import build_parser, settings_from_args


def _non_default(name: str, field) -> tuple[list[str], object]:
    """An argv fragment setting ``field`` to a value other than its default, and that value."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
    ann = args[0]
    flag = "--out" if name == "output_dir" else "--" + name.replace("_", "-")
    if ann is bool:
        return ([f"--no-{name.replace('_', '-')}"], False) if field.default else ([flag], True)
    if typing.get_origin(ann) is Literal:
        value = next(v for v in typing.get_args(ann) if v != field.default)
        return [flag, str(value)], value
    value = {int: 3, float: 2.5, str: f"x-{name}"}[ann]
    return [flag, str(value)], value


def _tune_subparser():
    parser = cli_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["tune"]


def _options(parser) -> dict:
    return {tuple(a.option_strings): (a.dest, a.choices and list(a.choices), a.type, type(a).__name__, a.help)
            for a in parser._actions if a.option_strings and a.dest not in ("help", "debug")}


def test_every_sweep_config_field_is_an_option_of_both_entry_points():
    argv, expected = [], {}
    for name, field in SweepConfig.model_fields.items():
        part, value = _non_default(name, field)
        argv += part
        expected[name] = value
    for parser in (build_parser(), _tune_subparser()):
        settings = settings_from_args(parser.parse_args(argv))
        assert settings.model_dump() == expected  # every field set from the command line, none left at its default


def test_both_entry_points_accept_the_same_options():
    standalone, sub = _options(build_parser()), _options(_tune_subparser())
    assert standalone == sub
    assert len(standalone) == len(SweepConfig.model_fields)
    for dest, _, _, _, help_text in standalone.values():
        assert help_text.replace("%%", "%") == SweepConfig.model_fields[dest].description


def test_unset_options_keep_the_fields_defaults():
    assert settings_from_args(build_parser().parse_args([])) == SweepConfig()
