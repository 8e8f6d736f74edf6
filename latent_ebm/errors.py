"""The library's error type: one clear message that says what is wrong and what to do."""

from __future__ import annotations

__all__ = ["ChainDivergedError", "LatentEBMError", "TrainingInterrupted", "one_line"]


class LatentEBMError(Exception):
    """A user-facing error. The command line prints ``error: <message>`` and exits non-zero.

    Raise it for anything a user can fix (bad config value, missing or corrupt data file,
    existing run directory, ...); the message must name the culprit and the remedy.
    """


class ChainDivergedError(LatentEBMError):
    """A Langevin chain produced a NaN or Inf; ``rows`` lists the diverged rows of the batch."""

    def __init__(self, message: str, rows: list[int] | None = None) -> None:
        super().__init__(message)
        self.rows = rows or []


class TrainingInterrupted(LatentEBMError):
    """SIGINT or SIGTERM arrived during training; a checkpoint was saved first. The command
    line exits with status 130 instead of 1."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__
