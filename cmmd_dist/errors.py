"""User errors and the one place that turns them into one line on stderr and exit status 2.

A *user error* is bad input the user can fix (a missing file, a malformed manifest, a bad option, an
unreachable service): it is raised as :class:`UserError` (or a subclass such as
``storage.StorageError``) with a message that names the culprit, and every entry point
(``cmmd-dist ...`` and ``python -m cmmd_dist.*``) runs through :func:`run_cli`, which prints

    cmmd-dist: error: <message on one line>

and exits 2, without a traceback. ``--debug`` or ``CMMD_DEBUG=1`` shows the traceback instead.
Ctrl-C exits 130 with one line. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["UserError", "one_line", "debug_enabled", "run_cli", "EXIT_USER_ERROR", "EXIT_INTERRUPTED"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input the user can fix; the message names the culprit (file, option, column, row)."""


def one_line(err: BaseException | str) -> str:
    """The error's message folded onto one line (pydantic and YAML errors span several)."""
    text = err if isinstance(err, str) else (str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(err).__name__


def debug_enabled(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("CMMD_DEBUG", "").lower() in ("1", "true", "yes")


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
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_error_types() as err:
        if debug:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
