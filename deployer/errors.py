"""One exception type for every user-facing failure.

Bad input must end in a single clear line and exit code 2, never a traceback. Code anywhere in
the package raises DeployerError with a message that names the file, field or board and says what
to do; the CLI layer turns it into that one line.
"""

from __future__ import annotations


class DeployerError(Exception):
    """A failure the user can act on. `str(err)` is the whole one-line message."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} ({hint})")


class GateFailed(DeployerError):
    """An accuracy or health gate did not hold. Not bad input, so a different exit code."""

    exit_code = 1


class RemoteError(DeployerError):
    """A board misbehaved: connection dropped, command failed, runner crashed."""

    exit_code = 3
