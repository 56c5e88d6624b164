"""``cli.options.field_option``: the one field -> option rule of the generated parsers (train and tune)."""

from typing import Literal

from pydantic import BaseModel, Field

from cmmd_dist.cli.options import field_option


class _Fields(BaseModel):
    count: int | None = Field(None, description="how many (100% sure)")
    on: bool = Field(True, description="on by default")
    off: bool = False
    mode: Literal["a", "b"] = "a"


def _option(name, **kw):
    return field_option(name, _Fields.model_fields[name], **kw)


def test_type_without_none_help_escaped_for_argparse_and_unset_is_none():
    assert _option("count") == (["--count"], {"dest": "count", "default": None, "type": int,
                                              "help": "how many (100%% sure)"})


def test_a_bool_that_defaults_to_true_is_a_no_flag():
    assert _option("on") == (["--no-on"], {"dest": "on", "default": None, "help": "on by default",
                                           "action": "store_false"})
    assert _option("off", flag="--switch", dest="x.off", help="turn it on") == (
        ["--switch"], {"dest": "x.off", "default": None, "help": "turn it on", "action": "store_true"})


def test_a_literal_is_choices():
    flags, kw = _option("mode")
    assert flags == ["--mode"] and kw["choices"] == ["a", "b"] and "type" not in kw
