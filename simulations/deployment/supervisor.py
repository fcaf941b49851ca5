"""Process supervision for a deployment: each component started as the leader of its own
process group, SIGINT/SIGTERM turned into ``KeyboardInterrupt`` (held while a process is being
started), and every group stopped by its PID — SIGTERM, then SIGKILL after a grace period —
with a final check, through :mod:`simulations.processes`, that nothing is left."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from simulations.deployment import LOOPBACK, DeploymentError
from simulations.processes import pid_alive, process_group_members

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def flower_executable(name: str) -> str:
    """``name`` from this interpreter's environment, else from ``PATH``."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise DeploymentError(
            f"cannot find `{name}`; install Flower into this environment "
            "(`pip install -e .` installs flwr 1.41)."
        )
    return found


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to process group ``pgid``, if it is still there."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclasses.dataclass
class Component:
    """One process started by a :class:`Supervisor` (leader of its own process group)."""

    name: str
    popen: subprocess.Popen
    log: Path
    critical: bool = True  # the federation cannot work without it

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Supervisor:
    """The processes of one deployment, each the leader of its own process group.

    Parameters
    ----------
    workdir : Path
        Working directory of every process; their logs go to ``workdir/logs/NAME.log``.
    env : mapping
        Environment of every process.
    grace : float
        Seconds between SIGTERM and SIGKILL when stopping.
    """

    def __init__(self, *, workdir: Path, env: Mapping[str, str], grace: float = 10.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.logs = self.workdir / "logs"
        self.env = dict(env)
        self.grace = grace
        self.components: list[Component] = []
        self.components_started: list[Component] = []
        self.seen_pids: set[int] = set()
        self._starting_process = False  # see handling_signals()
        self._held_signal: int | None = None

    def spawn(self, name: str, argv: list[str], *, extra_env: Mapping[str, str] | None = None,
              critical: bool = True) -> Component:
        """Start ``argv`` as the leader of a new process group, output to ``logs/name.log``."""
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh, self._holding_signals():
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh,
                                     stderr=subprocess.STDOUT, cwd=self.workdir,
                                     env={**self.env, **(extra_env or {})},
                                     start_new_session=True)
            component = Component(name, popen, log, critical)
            self.components.append(component)
            self.components_started.append(component)
            self.seen_pids.add(popen.pid)
        logger.info("started %s (pid %d)", name, popen.pid)
        return component

    @contextlib.contextmanager
    def _holding_signals(self) -> Iterator[None]:
        """Hold SIGINT/SIGTERM (see :meth:`handling_signals`) until the block has run, then
        raise the held one."""
        self._starting_process = True
        try:
            yield
        finally:
            self._starting_process = False
        if self._held_signal is not None:
            signum, self._held_signal = self._held_signal, None
            raise KeyboardInterrupt(signum)

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[Supervisor]:
        """Within this block SIGINT and SIGTERM raise ``KeyboardInterrupt(signum)``, so that
        ``finally`` blocks stop the processes — except while a process is being started: then
        the signal is held until its PID is recorded, or :meth:`stop` could miss it. (Main
        thread only; elsewhere Python's defaults stay.)"""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self._starting_process:
                self._held_signal = signum
            else:
                raise KeyboardInterrupt(signum)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, old in previous.items():
                signal.signal(s, old)

    def stop(self) -> list[int]:
        """Stop every started process group, newest first; return PIDs still alive after.

        SIGINT and SIGTERM are ignored meanwhile (main thread), so a second Ctrl-C cannot
        leave processes behind."""
        if threading.current_thread() is not threading.main_thread():
            return self._stop()
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._stop()
        finally:
            for s, old in previous.items():
                signal.signal(s, old)

    def _stop(self) -> list[int]:
        groups = {c.pid for c in self.components}
        self.note_descendants()
        for c in reversed(self.components):
            if c.alive():
                signal_group(c.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for c in reversed(self.components):
            try:
                c.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) ignored SIGTERM; killing it", c.name, c.pid)
        while process_group_members(groups) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pgid in groups:  # whatever is left — leaders or their children — is killed
            if process_group_members({pgid}):
                signal_group(pgid, signal.SIGKILL)
        for c in self.components:
            try:
                c.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        time.sleep(0.2)
        left = sorted(p for p in self.seen_pids | set(process_group_members(groups))
                      if pid_alive(p, groups=groups))
        if left:
            logger.warning("processes still alive after stopping: %s", left)
        self.components = [c for c in self.components if c.alive()]
        return left

    def component(self, name: str) -> Component:
        """The component called ``name`` (:meth:`stop` forgets those it stopped)."""
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def note_descendants(self) -> None:
        """Remember the PIDs of the processes the components started — the ServerApp and
        ClientApp processes of the executors (for the final check)."""
        self.seen_pids |= set(process_group_members({c.pid for c in self.components}))

    def check_alive(self) -> None:
        """Raise if a started component has exited (with the end of its log)."""
        for c in self.components:
            if c.critical and c.popen.poll() is not None:
                raise DeploymentError(
                    f"{c.name} exited with code {c.popen.returncode}; the end of {c.log}:\n"
                    f"{c.log_tail()}"
                )

    def run_cli(self, argv: list[str], *, timeout: float) -> tuple[int, str, str]:
        """Run a short command to its end: exit code, stdout, stderr. It is killed on a
        timeout (:class:`DeploymentError`) or an interrupt."""
        proc = None
        try:
            with self._holding_signals():
                proc = subprocess.Popen(argv, cwd=self.workdir, env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException as exc:
            if proc is not None:
                proc.kill()
                proc.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                command = " ".join([Path(argv[0]).name, *argv[1:]])
                raise DeploymentError(f"`{command}` took longer than {timeout:g} s.") from exc
            raise
        return proc.returncode, stdout, stderr
