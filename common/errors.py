"""Typed errors for user-facing problems.

Every error a user can cause (a bad file, a bad flag, a bad reply) is raised as one of these,
with a message that names the problem and the fix. The command-line interface prints the
message without a traceback; library callers can catch :class:`FairsynthError`.
"""

from __future__ import annotations


class FairsynthError(ValueError):
    """Base class of every error caused by input that the user can fix."""


class DataError(FairsynthError):
    """A dataset, schema or data file is missing or malformed."""


class ConfigError(FairsynthError):
    """A hyperparameter, flag or run-config value is invalid."""


class ReplyError(FairsynthError):
    """A client's reply does not match what the server asked for."""
