"""The processes below this one, read from ``/proc`` (Linux).

The in-process simulation starts Ray, whose raylet starts the ClientApp workers: they are
descendants of the command's process. :mod:`simulations.simulate` finds the workers still busy
after the server finished; :mod:`simulations.bench_federation` sums their memory.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def children_by_parent() -> dict[int, list[int]]:
    """Every live process's PID, grouped under its parent's PID."""
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid …" — comm may hold spaces: split after the last ")".
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        tree.setdefault(ppid, []).append(int(entry.name))
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


def title(pid: int) -> str:
    """The first word of ``pid``'s command line, as the process set it (Ray names its workers
    ``ray::ClassName.method`` while they run a call); ``""`` if it has ended."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""
