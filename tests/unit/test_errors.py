"""run_cli: a user error is one line and exit 2, a traceback only with --debug / CMMD_DEBUG=1, Ctrl-C exit 130
with what to do next, a bug keeps its traceback; option errors and config-file problems are one line too."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cmmd_dist.config import RunConfig
from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, Interrupted, UserError, describe_validation, one_line, run_cli
from cmmd_dist.cli.parser import OneLineArgumentParser


def fail(err: BaseException):
    def main():
        raise err

    return main


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch):
    monkeypatch.delenv("CMMD_DEBUG", raising=False)


def test_user_error_is_one_line_and_exit_2(capsys):
    assert run_cli(fail(UserError("rows.parquet: column 'view1'\n  is missing")), argv=[]) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "cmmd-dist: error: rows.parquet: column 'view1' is missing\n"


@pytest.mark.parametrize("argv, env", [(["train", "--debug"], None), ([], "1")])
def test_debug_shows_the_traceback(monkeypatch, argv, env):
    if env:
        monkeypatch.setenv("CMMD_DEBUG", env)
    with pytest.raises(UserError, match="bad"):
        run_cli(fail(UserError("bad")), argv=argv)


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_cli(fail(ZeroDivisionError("bug")), argv=[])


def test_ctrl_c_is_exit_130_with_the_next_step(capsys):
    assert run_cli(fail(KeyboardInterrupt()), argv=[]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "cmmd-dist: interrupted\n"
    assert run_cli(fail(Interrupted("resume with: cmmd-dist train --resume runs/ray/x")), argv=[]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "cmmd-dist: interrupted: resume with: cmmd-dist train --resume runs/ray/x\n"


def test_wrapped_remote_error_shows_its_cause():
    class Wrapper(UserError):  # as Ray's RayTaskError: the remote exception is ``cause``
        def __init__(self, cause):
            super().__init__("Traceback (most recent call last):\n  File ...\nlong remote text")
            self.cause = cause

    assert one_line(Wrapper(UserError("shard.parquet: checksum mismatch"))) == "shard.parquet: checksum mismatch"


def test_option_errors_are_one_line(capsys):
    parser = OneLineArgumentParser(prog="cmmd-dist")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    train.add_argument("--workers", type=int)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["train", "--workers", "two"])
    assert exit_.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers: invalid int value: 'two'" in err, err


def test_validation_error_names_key_and_where_it_came_from():
    overrides = {"train": {"epochs": 0}}
    with pytest.raises(ValidationError) as e:
        RunConfig.model_validate({"loss": {"lamda": 0.3}, **overrides})
    text = describe_validation(e.value, "run.yaml", overrides)
    assert "\n" not in text
    assert "loss.lamda: Extra inputs are not permitted, got 0.3 (run.yaml)" in text
    assert "train.epochs: Input should be greater than or equal to 1, got 0 (command line)" in text


def test_validation_error_reaching_run_cli_is_one_line(capsys):
    with pytest.raises(ValidationError) as e:
        RunConfig.model_validate({"train": {"epochs": 0}})
    assert run_cli(fail(e.value), argv=[]) == EXIT_USER_ERROR
    assert capsys.readouterr().err == ("cmmd-dist: error: invalid settings: train.epochs: "
                                       "Input should be greater than or equal to 1, got 0\n")


@pytest.mark.parametrize("content, message", [
    (None, "config file not found"),
    ("train:\n  epochs: [1\n", "not valid YAML at line 3, column 1"),
    ("- 1\n- 2\n", "a run config must be a mapping, got list"),
])
def test_config_file_problems_name_the_file(tmp_path, content, message):
    path = tmp_path / "run.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as e:
        load_run_config(path)
    assert str(e.value).startswith(f"{path}: {message}") and "\n" not in str(e.value)


def test_config_folder_is_named(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        load_run_config(tmp_path)
