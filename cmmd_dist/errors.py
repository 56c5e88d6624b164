"""User errors and the one place that turns them into one line on stderr and exit status 2.

A *user error* is bad input the user can fix (a missing file, a malformed manifest, a bad option, an
unreachable service): it is raised as :class:`UserError` (or a subclass such as
``storage.StorageError``) with a message that names the culprit, and every entry point
(``cmmd-dist ...`` and ``python -m cmmd_dist.*``) runs through :func:`run_cli`, which prints

    cmmd-dist: error: <message on one line>

and exits 2, without a traceback. ``--debug`` or ``CMMD_DEBUG=1`` shows the traceback instead.
Ctrl-C exits 130 with one line (:class:`Interrupted` adds what to do next, e.g. the resume command).
Anything else is a bug and keeps its traceback. Parsers built on ``cli.parser.OneLineArgumentParser``
report a bad option the same way (argparse's default adds a usage block).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable

__all__ = ["UserError", "Interrupted", "one_line", "describe_validation", "debug_enabled",
           "strip_debug", "run_cli", "EXIT_USER_ERROR", "EXIT_INTERRUPTED"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"


class UserError(Exception):
    """Bad input the user can fix; the message names the culprit (file, option, column, row)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C with something to say: where the work stands and the command that continues it."""


def _cause(err: BaseException) -> BaseException:
    """The user's own exception inside a Ray wrapper (RayTaskError keeps the remote one as ``cause``)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def one_line(err: BaseException | str) -> str:
    """The error's message folded onto one line (pydantic and YAML errors span several)."""
    if not isinstance(err, str):
        err = _cause(err)
    text = err if isinstance(err, str) else (str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(err).__name__


def describe_validation(err, source: str | None = None, overrides: dict | None = None) -> str:
    """A pydantic ValidationError on one line: each bad key, the value given, pydantic's reason and where the
    value came from: ``source`` (e.g. the YAML file) or the command line (the key is in ``overrides``)."""

    def where(loc: tuple) -> str:
        node = overrides or {}
        for key in loc:
            if not isinstance(node, dict) or key not in node:
                return f" ({source})" if source else ""
            node = node[key]
        return " (command line)"

    def got(e: dict) -> str:
        value = e.get("input")
        return f", got {value!r}" if isinstance(value, (int, float, str, bool)) and e.get("type") != "missing" else ""

    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}{got(e)}{where(tuple(e['loc']))}"
                     for e in err.errors())


def _message(err: BaseException) -> str:
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # noqa: N806
    if isinstance(err, ValidationError):
        return f"invalid settings: {describe_validation(err)}"
    return one_line(err)


def debug_enabled(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return DEBUG_FLAG in argv or os.environ.get("CMMD_DEBUG", "").lower() in ("1", "true", "yes")


def strip_debug(argv: list[str] | None) -> list[str]:
    """``argv`` without ``--debug``: the flag may stand anywhere, not only before the subcommand."""
    return [a for a in (sys.argv[1:] if argv is None else argv) if a != DEBUG_FLAG]


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
    try:
        from pydantic import ValidationError

        types.append(ValidationError)
    except ImportError:  # pragma: no cover
        pass
    try:
        import yaml

        types.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def run_cli(main: Callable[[], int | None], prog: str = "cmmd-dist", argv: list[str] | None = None) -> int:
    """Run ``main``; a user error becomes one line on stderr and exit 2 (traceback only with --debug)."""
    debug = debug_enabled(argv)
    try:
        return int(main() or 0)
    except KeyboardInterrupt as err:
        if debug:
            raise
        detail = f": {one_line(err)}" if isinstance(err, Interrupted) and err.args else ""
        print(f"{prog}: interrupted{detail}", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except _user_error_types() as err:
        if debug:
            raise
        print(f"{prog}: error: {_message(err)}", file=sys.stderr)
        code = EXIT_USER_ERROR
    # The error's traceback cycles hold what the failed command had loaded (Arrow tables, tensors); freed
    # only at interpreter teardown, Arrow's parquet threads can abort the process there ("terminate called
    # without an active exception", exit 134, seen after a bad shard). Free them now.
    gc.collect()
    return code
