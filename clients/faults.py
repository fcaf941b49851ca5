"""Deliberate client failures, to check how the server copes with a client that goes wrong.

A node misbehaves when its node config holds ``fault = "KIND"`` or ``fault = "KIND@PHASE"``
(a SuperNode started with ``--node-config "... fault='hang'"``; ``fairsynth simulate`` and
``fairsynth deploy`` set it with ``--inject-fault PARTITION:KIND[@PHASE]``):

``raise``
    the handler raises an exception (the runtime turns it into an error reply);
``hang``
    the handler never returns (the server stops waiting after its ``timeout``);
``die``
    the ClientApp's process exits at once, without a reply (exit code :data:`DIE_EXIT_CODE`).

``PHASE`` is the message the fault strikes: ``query`` (the one-shot release, default),
``train`` (a FedAvg/FairFed round) or ``evaluate``. The fault strikes after the client has
loaded its data and before it replies, so nothing is released.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from common.errors import ConfigError

logger = logging.getLogger(__name__)

FAULT_KEY = "fault"
KINDS = ("raise", "hang", "die")
PHASES = ("query", "train", "evaluate")
DIE_EXIT_CODE = 70


class InjectedFault(RuntimeError):
    """The exception a ``raise`` fault raises."""


@dataclasses.dataclass(frozen=True)
class Fault:
    """A failure to inject: its kind and the phase it strikes."""

    kind: str
    phase: str = "query"

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``KIND`` or ``KIND@PHASE``; raises ConfigError naming the valid values."""
        kind, _, phase = str(text).strip().partition("@")
        fault = cls(kind, phase or "query")
        if fault.kind not in KINDS or fault.phase not in PHASES:
            raise ConfigError(
                f"fault {text!r} is not KIND or KIND@PHASE with KIND one of {list(KINDS)} and "
                f"PHASE one of {list(PHASES)} (e.g. 'hang' or 'die@train')."
            )
        return fault

    def strike(self, phase: str) -> None:
        """Fail now if this fault is for ``phase``."""
        if phase != self.phase:
            return
        logger.warning("injected fault: %s during %s", self.kind, phase)
        if self.kind == "raise":
            raise InjectedFault(f"injected fault: the client raised during {phase}")
        if self.kind == "hang":
            while True:
                time.sleep(3600)
        os._exit(DIE_EXIT_CODE)  # "die": no cleanup, no reply, as a crash would


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[int, Fault]:
    """``["1:hang", "2:die@train"]`` → ``{1: Fault("hang"), 2: Fault("die", "train")}``."""
    out: dict[int, Fault] = {}
    for item in items:
        partition, sep, spec = str(item).partition(":")
        if not sep or not partition.strip().isdigit():
            raise ConfigError(
                f"--inject-fault {item!r} is not PARTITION:KIND[@PHASE] (e.g. '1:hang')."
            )
        k = int(partition)
        if k in out:
            raise ConfigError(f"--inject-fault names partition {k} twice.")
        out[k] = Fault.parse(spec)
    return out
