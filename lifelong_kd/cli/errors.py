"""The one error type of the command line."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad command-line or config-file input; the message says what is wrong and how to fix it."""
