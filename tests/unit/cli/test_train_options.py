"""``cmmd-dist train``'s options come from ``RunConfig``'s fields: every flag the README, the integration
tests and the benchmarks call still parses, and its value lands at its field's dotted path, nowhere else."""

from operator import attrgetter

import pytest

from cmmd_dist.cli.app import build_parser
from cmmd_dist.cli.train import DISTRIBUTED, GENERAL, run_field, train_overrides
from cmmd_dist.config import RunConfig, TrainConfig
from cmmd_dist.storage.yaml_files import load_run_config

# the train command's contract: flag -> the RunConfig field it sets
FLAG_PATHS = {"--source": "data.source", "--epochs": "train.epochs", "--batch-size": "train.batch_size",
              "--lr": "train.lr", "--lam": "loss.lam", "--seed": "train.seed", "--limit": "data.limit",
              "--out": "output_dir", "--no-baseline": "train.baseline", "--no-progress": "train.progress",
              "--workers": "distributed.workers", "--use-gpu": "distributed.use_gpu", "--bf16": "distributed.bf16",
              "--data": "data.prepared", "--stream": "data.stream", "--shuffle-buffer": "data.shuffle_buffer",
              "--prefetch": "data.prefetch", "--storage": "distributed.storage"}
NOT_FIELDS = {"-h", "--help", "--dataset", "--config", "--resume"}


def _train_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["train"]


def _given(flag: str, path: str, tmp_path) -> tuple[list[str], object]:
    """An argv fragment giving ``flag`` a valid value other than its field's default, and the value RunConfig holds."""
    field = run_field(path)
    if field.annotation is bool:
        return [flag], not field.default
    value = {"data.prepared": str(tmp_path / "prepared"), "data.stream": "always", "train.lr": 0.5,
             "loss.lam": 0.5}.get(path, 3 if "int" in str(field.annotation) else f"x-{flag[2:]}")
    return [flag, str(value)], value


def test_every_path_in_the_tables_is_a_run_config_field():
    for opt in (*GENERAL, *DISTRIBUTED):
        run_field(opt.path)  # KeyError otherwise
    assert run_field("train.epochs") is TrainConfig.model_fields["epochs"]
    with pytest.raises(KeyError, match="train.epoch'"):
        run_field("train.epoch")


def test_the_train_command_has_every_flag_it_had():
    flags = {s for a in _train_parser()._actions for s in a.option_strings}
    assert flags == set(FLAG_PATHS) | NOT_FIELDS


@pytest.mark.parametrize("flag, path", FLAG_PATHS.items())
def test_a_flags_value_lands_at_its_path_and_nowhere_else(flag, path, tmp_path):
    argv, value = _given(flag, path, tmp_path)
    overrides = train_overrides(_train_parser().parse_args(["--dataset", "digits2v", *argv]))
    *parents, name = path.split(".")
    expected = {name: value}
    for part in reversed(parents):
        expected = {part: expected}
    expected.setdefault("data", {})["dataset"] = "digits2v"
    assert overrides == expected
    assert attrgetter(path)(load_run_config(None, overrides)) == value


def test_options_not_given_keep_the_configs_values():
    assert train_overrides(_train_parser().parse_args([])) == {}
    assert load_run_config(None, {}) == RunConfig()


def test_help_is_the_fields_description_unless_the_table_words_it():
    helps = {a.dest: a.help for a in _train_parser()._actions}
    for opt in (*GENERAL, *DISTRIBUTED):
        assert helps[opt.path].replace("%%", "%") == (opt.help or run_field(opt.path).description)
    assert _train_parser().format_help().count("\n") > 40  # --help renders (argparse formats every help text)


@pytest.mark.parametrize("argv, message", [(["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
                                           (["--stream", "sometimes"], "argument --stream: invalid choice")])
def test_a_bad_value_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["train", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err
