"""Processes read from ``/proc`` (Linux): the project's one process-table reader.

The in-process simulation starts Ray, whose raylet starts the ClientApp workers: they are
descendants of the command's process. :mod:`simulations.engine` finds the workers still busy
after the server finished; :mod:`simulations.bench_federation` sums their memory. The
deployment (:mod:`simulations.deployment.supervisor`) starts each component as the leader of
its own process group and finds what is left of those groups when it stops them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")


@dataclasses.dataclass(frozen=True)
class Stat:
    """The fields of ``/proc/PID/stat`` that the project reads."""

    pid: int
    command: str  # the kernel's name of the program (``comm``), at most 15 characters
    state: str  # R, S, D, Z (zombie), T, …
    ppid: int
    pgrp: int

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def stat(pid: int) -> Stat | None:
    """``pid``'s :class:`Stat`; ``None`` if it has ended."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
        # "pid (comm) state ppid pgrp …" — comm may hold spaces: split after the last ")".
        state, ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
        return Stat(pid, text[text.index("(") + 1: text.rindex(")")], state, int(ppid),
                    int(pgrp))
    except (OSError, ValueError):
        return None  # the process ended while we looked


def every_process() -> Iterator[Stat]:
    """The :class:`Stat` of every process (zombies included) at the time each is read."""
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            found = stat(int(entry.name))
            if found is not None:
                yield found


def children_by_parent() -> dict[int, list[int]]:
    """Every live process's PID, grouped under its parent's PID."""
    tree: dict[int, list[int]] = {}
    for proc in every_process():
        tree.setdefault(proc.ppid, []).append(proc.pid)
    return tree


def descendants(root: int) -> list[int]:
    """The PIDs of every process below ``root`` (children, their children, …)."""
    tree = children_by_parent()
    found, todo = [], list(tree.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += tree.get(pid, [])
    return sorted(found)


def process_group_members(pgids: set[int]) -> dict[int, str]:
    """Live processes (not zombies) whose process group is in ``pgids``: ``{pid: command}``."""
    return {proc.pid: proc.command for proc in every_process()
            if proc.pgrp in pgids and not proc.zombie}


def pid_alive(pid: int, *, groups: set[int] | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie and (if ``groups`` is given) belongs to one of
    those process groups — PIDs are reused, so a PID seen earlier is checked by its group."""
    proc = stat(pid)
    return proc is not None and not proc.zombie and (groups is None or proc.pgrp in groups)


def title(pid: int) -> str:
    """The first word of ``pid``'s command line, as the process set it (Ray names its workers
    ``ray::ClassName.method`` while they run a call); ``""`` if it has ended."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""
