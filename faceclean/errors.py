"""Errors that faceclean reports to a user as one line, with the file at fault."""

from __future__ import annotations

from pathlib import Path


class FacecleanError(Exception):
    """A problem with the user's input, reported as ``<file>: <what is wrong>``.

    The CLI prints ``str(error)`` on one line and exits non-zero; the Python API lets it
    propagate so callers can catch one type for every input problem.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
