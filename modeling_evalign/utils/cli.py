"""Command-line conventions shared by every entry point: user errors are ONE line on stderr, exit status 2.

    from modeling_evalign.utils.cli import ArgumentParser, run_cli

    def main(argv=None) -> int:
        args = ArgumentParser(prog="build_dsec.py").parse_args(argv)
        ...

    if __name__ == "__main__":
        raise SystemExit(run_cli(main))

Bad flags (argparse), missing paths and invalid configs (``ValueError`` from a config's checks,
``FileNotFoundError``..., and ``utils.errors.InputError`` for bad files, which is also a KeyError/TypeError
where it says so) print ``prog: error: <message>`` and return 2; so do such errors raised inside a library
that wraps them (datasets' ``DatasetGenerationError`` around the DSEC builder's). Set ``EVALIGN_TRACEBACK=1`` to
see the full traceback of such an error while debugging; real bugs (any other exception) keep theirs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_USAGE = 2

# Exceptions that mean "the user gave something wrong", reported without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    FileExistsError,
)


# Library exceptions that wrap the error that really happened (raised in our code, running inside them).
_WRAPPERS = frozenset({"DatasetGenerationError"})


def user_error(err: BaseException) -> BaseException | None:
    """``err`` when it is a user error, the user error a library wrapper carries, else None (a real bug)."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, USER_ERRORS):
            return err
        if type(err).__name__ not in _WRAPPERS:
            return None
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


class CLIError(ValueError):
    """A user-facing command-line error (bad value, missing input): one line, exit status 2."""


def one_line(message: object) -> str:
    """Collapse a (possibly multi-line) message to one line."""
    return " ".join(str(message).split())


def report_error(prog: str, message: object) -> int:
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return EXIT_USAGE


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: ...``, plus a pointer to --help) and exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE)


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
            prog: str | None = None) -> int:
    """Run ``main(argv)``; user errors become one stderr line and exit status 2."""
    prog = prog or Path(sys.argv[0]).name or "evalign"
    try:
        return int(main(argv) or 0)
    except Exception as err:
        found = user_error(err)
        if found is None or os.environ.get("EVALIGN_TRACEBACK"):
            raise
        return report_error(prog, found)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130


def parse_named_paths(items: Sequence[str], flag: str) -> dict[str, str]:
    """``["1s=feats/1s", ...]`` -> ``{"1s": "feats/1s"}``; a malformed entry is a :class:`CLIError` naming ``flag``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CLIError(f"{flag} entries must look like DURATION=DIR, got {item!r}")
        if not _SAFE_NAME.match(name) or set(name) == {"."}:  # names become folder names under the output
            raise CLIError(f"{flag} name {name!r} must be a plain name (letters, digits, '.', '_', '-'; no '/' "
                           "or '..'), such as 1s")
        if name in out:
            raise CLIError(f"{flag} names {name!r} twice")
        out[name] = path
    return out


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
