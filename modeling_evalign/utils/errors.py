"""Exception types for bad USER input that other code may catch as KeyError/TypeError too.

They all derive from ``ValueError``, so every entry point (``utils.cli.run_cli``) reports them as one line with
exit status 2, while existing ``except KeyError``/``except TypeError`` callers keep working.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a file, a flag value): one line naming it and what was expected."""


class InputKeyError(InputError, KeyError):
    """A required key/dataset/column is missing from the user's input."""

    __str__ = Exception.__str__  # KeyError would quote the message


class InputTypeError(InputError, TypeError):
    """The user's input has the wrong dtype/type."""
