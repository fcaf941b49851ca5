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


class PolicyError(FairsynthError):
    """A request that a client's privacy policy does not allow (its message names the rule and
    the policy's limit, never data)."""


#: What a client's error reply tells the server, by the error's class: a code and a sentence.
#: The full message stays in the client's log: it can quote a cell, a row number, a category or
#: a count, and an error that reaches the server must carry no data.
PUBLIC_REASONS = {
    "DataError": "data-error: this client's data could not be read or does not fit the run; "
                 "the details are in the client's log",
    "ConfigError": "config-error: this client cannot run with this configuration; the details "
                   "are in the client's log",
    "ReplyError": "reply-error: this client could not read the server's message; the details "
                  "are in the client's log",
}


def public_reason(exc: FairsynthError) -> str:
    """The reason a client's error reply gives the server for ``exc`` (see
    :data:`PUBLIC_REASONS`); a :class:`PolicyError` gives its rule."""
    if isinstance(exc, PolicyError):
        return f"policy: {exc}"
    for cls in type(exc).__mro__:
        if cls.__name__ in PUBLIC_REASONS:
            return PUBLIC_REASONS[cls.__name__]
    return "error: this client could not answer; the details are in the client's log"
