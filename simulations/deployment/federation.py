"""A federation on 127.0.0.1: :class:`LocalFederation` starts the SuperLink, its ServerApp
executor and ``K`` SuperNodes with their ClientApp executors (TLS and SuperNode authentication
on), drives them with the ``flwr`` CLI and stops every process by its PID."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from clients.faults import FAULT_KEY, Fault
from common.errors import ConfigError
from simulations.deployment import LOOPBACK, DeploymentError
from simulations.deployment.credentials import (
    Credentials,
    clientapp,
    generate_auth_key,
    supernode,
)
from simulations.deployment.flower_config import (
    CONNECTION,
    FLOWER_ENV,
    toml_table,
    write_connection,
)
from simulations.deployment.supervisor import (
    Component,
    Supervisor,
    flower_executable,
    free_port,
)

logger = logging.getLogger(__name__)

#: The last line of a Python traceback, e.g. ``ValueError: …``.
ERROR_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception)\b.*:")
#: Run statuses that ``flwr list`` reports for a run that is over.
FINISHED = "finished"
COMPLETED = "finished:completed"


class LocalFederation(Supervisor):
    """A SuperLink, its ServerApp executor and ``K`` SuperNodes with their ClientApp
    executors, as processes on 127.0.0.1 with TLS and SuperNode authentication.

    Use as a context manager: leaving the ``with`` block — normally, by an exception or by
    ``KeyboardInterrupt`` — stops every process by its PID (SIGTERM to its process group, then
    SIGKILL after ``grace`` seconds; :class:`~simulations.deployment.supervisor.Supervisor`).
    :meth:`stop` returns the processes that survived.

    Parameters
    ----------
    workdir : Path
        Logs (``logs/``), the ``flwr`` CLI home (``flwr-home/``) and node configs go here.
    credentials : Credentials
        From :func:`~simulations.deployment.credentials.generate_credentials`.
    data_files : sequence of Path
        Client ``k``'s CSV file (``k = 1..K``); passed as node config ``data-path``.
    port : int
        SuperLink port (0: a free one).
    startup_timeout : float
        Seconds to wait for the SuperLink to answer and for all SuperNodes to come online.
    grace : float
        Seconds between SIGTERM and SIGKILL when stopping.
    faults : mapping of int to Fault, optional
        Partition id → a failure that client injects on purpose (:mod:`clients.faults`).
    policy : mapping, optional
        Node-config entries of the clients' privacy policy
        (:meth:`clients.policy.PrivacyPolicy.to_node_config`); every SuperNode gets them.
    """

    def __init__(self, *, workdir: Path, credentials: Credentials, data_files: Sequence[Path],
                 port: int = 0, startup_timeout: float = 120.0, grace: float = 10.0,
                 faults: Mapping[int, Fault] | None = None,
                 policy: Mapping[str, object] | None = None) -> None:
        if len(data_files) != credentials.clients:
            raise ConfigError(
                f"{len(data_files)} data files for {credentials.clients} SuperNodes; give one "
                "CSV file per client."
            )
        workdir = Path(workdir).resolve()
        self.flwr_home = workdir / "flwr-home"
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        super().__init__(workdir=workdir, grace=grace, env={
            **os.environ, **FLOWER_ENV, "FLWR_HOME": str(self.flwr_home), "PATH": path})
        self.credentials = credentials
        self.data_files = [Path(p).resolve() for p in data_files]
        self.faults = dict(faults or {})
        self.policy = dict(policy or {})
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        # K ClientApps share this machine's cores: one BLAS/torch thread each.
        self.client_env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                           **{k: v for k, v in os.environ.items()
                              if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}

    @property
    def address(self) -> str:
        """The SuperLink's ``host:port``."""
        return f"{LOOPBACK}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """SuperLink → ServerApp executor → key registration → SuperNodes and executors."""
        creds = self.credentials
        self.start_superlink()
        self.spawn("serverapp", self.executor_argv(self.port, creds.folder("serverapp")))
        for k in range(1, creds.clients + 1):
            self.register(creds.auth_pub(k))
        for k in range(1, creds.clients + 1):
            self.start_supernode(k)
        self.wait_online(creds.clients)

    def start_superlink(self) -> Component:
        """Write the ``flwr`` CLI's connection, start the SuperLink, wait for its health."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        creds = self.credentials
        write_connection(self.flwr_home, address=self.address, ca_cert=creds.ca_cert)
        link = creds.folder("superlink")
        self.spawn("superlink", [
            flower_executable("flower-superlink"),
            "--ssl-ca-certfile", str(link / "ca.crt"),
            "--ssl-certfile", str(link / "server.pem"),
            "--ssl-keyfile", str(link / "server.key"),
            "--enable-supernode-auth",
            "--isolation", "process",
            "--superexec-auth-secret-file", str(link / "superexec.secret"),
            "--disable-runtime-dependency-installation",
            "--host", LOOPBACK, "--port", str(self.port),
        ])
        self.wait_healthy(self.port, "superlink")
        return self.component("superlink")

    def start_supernode(self, k: int, *, auth_key: Path | None = None,
                        max_retries: int | None = None) -> Component:
        """Start SuperNode ``k`` (authenticating with ``auth_key``, default its own) and its
        ClientApp executor. ``max_retries`` bounds its connection attempts."""
        creds = self.credentials
        folder = creds.folder(supernode(k))
        port = free_port()
        node_config = self.workdir / "node-config" / f"{supernode(k)}.toml"
        node_config.parent.mkdir(parents=True, exist_ok=True)
        node_config.write_text(toml_table(self.node_config(k)))
        argv = [
            flower_executable("flower-supernode"),
            "--superlink", self.address,
            "--root-certificates", str(folder / "ca.crt"),
            "--auth-supernode-private-key", str(auth_key or creds.auth_key(k)),
            "--isolation", "process",
            "--superexec-auth-secret-file", str(folder / "superexec.secret"),
            "--host", LOOPBACK, "--port", str(port),
            "--ssl-certfile", str(folder / "server.pem"),
            "--ssl-keyfile", str(folder / "server.key"),
            "--ssl-ca-certfile", str(folder / "ca.crt"),
            "--node-config", str(node_config),
        ]
        if max_retries is not None:
            argv += ["--max-retries", str(max_retries)]
        own = auth_key is None
        node = self.spawn(supernode(k) if own else f"unregistered-{supernode(k)}", argv,
                          critical=own)
        if own:
            self.wait_healthy(port, node.name)
            self.spawn(clientapp(k), self.executor_argv(port, creds.folder(clientapp(k))),
                       extra_env=self.client_env)
        return node

    def check_refusal(self, *, timeout: float = 60.0) -> dict:
        """Start a SuperNode with a fresh, unregistered key; it must be refused.

        Returns ``refused`` (it exited with an error, and the number of online SuperNodes did
        not change), its exit code and the SuperLink's and its own words about it.
        """
        key = self.workdir / "unregistered" / "auth.key"
        generate_auth_key(key)
        before = self.online_count()
        node = self.start_supernode(1, auth_key=key, max_retries=1)
        try:
            code = node.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        online = self.online_count()
        said = [line for line in node.log_tail(40).splitlines()
                if "Failed to activate" in line or "Exit Code" in line]
        link = [line for line in self.component("superlink").log_tail(400).splitlines()
                if "No SuperNode found with the given public key" in line]
        return {"refused": code not in (None, 0) and online == before, "exit_code": code,
                "online_before": before, "online_after": online,
                "supernode_log": said, "superlink_log": [line[:200] for line in link[-1:]]}

    def node_config(self, k: int) -> dict[str, object]:
        """Node config of SuperNode ``k``: the client's own rows (``data-path``), its index
        (``partition-id``, which seeds the client's pipeline as in the simulation), its privacy
        policy (:mod:`clients.policy`) and, when one is injected, its ``fault``
        (:mod:`clients.faults`)."""
        config: dict[str, object] = {"data-path": str(self.data_files[k - 1]),
                                     "partition-id": k - 1, **self.policy}
        if k - 1 in self.faults:
            fault = self.faults[k - 1]
            config[FAULT_KEY] = f"{fault.kind}@{fault.phase}"
        return config

    @staticmethod
    def executor_argv(port: int, folder: Path) -> list[str]:
        return [flower_executable("flower-superexec"),
                "--runtime-api-address", f"{LOOPBACK}:{port}",
                "--root-certificates", str(folder / "ca.crt"),
                "--superexec-auth-secret-file", str(folder / "superexec.secret")]

    # ------------------------------------------------------------------ waiting

    def wait_healthy(self, port: int, name: str) -> None:
        """Wait until ``https://127.0.0.1:port/health`` answers 200 over verified TLS."""
        context = ssl.create_default_context(cafile=str(self.credentials.ca_cert))
        url = f"https://{LOOPBACK}:{port}/health"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise DeploymentError(f"{name} did not answer on {url} within "
                                      f"{self.startup_timeout:g} s.")
            time.sleep(0.3)

    def online_count(self) -> int:
        """SuperNodes the SuperLink reports online."""
        nodes = self.flwr("supernode", "list", CONNECTION)["nodes"]
        return sum(n.get("status") == "online" for n in nodes)

    def wait_online(self, count: int) -> None:
        """Wait until ``count`` SuperNodes are online at the SuperLink."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self.check_alive()
            online = self.online_count()
            if online >= count:
                return
            if time.monotonic() > deadline:
                raise DeploymentError(f"only {online} of {count} SuperNodes came online within "
                                      f"{self.startup_timeout:g} s.")
            time.sleep(1.0)

    # ------------------------------------------------------------------ the flwr CLI

    def flwr(self, *args: str, timeout: float = 120.0) -> dict:
        """Run ``flwr ARGS --format json`` against this federation; the parsed answer."""
        code, stdout, stderr = self.run_cli([flower_executable("flwr"), *args, "--format",
                                             "json"], timeout=timeout)
        try:
            payload = json.loads(stdout)
        except json.JSONDecodeError as exc:
            raise DeploymentError(
                f"`flwr {' '.join(args)}` exited with code {code} without a JSON "
                f"answer:\n{(stdout + stderr)[-1500:]}"
            ) from exc
        if not payload.get("success", False):
            raise DeploymentError(f"`flwr {' '.join(args)}` failed: "
                                  f"{payload.get('error-message', payload)}")
        return payload

    def register(self, public_key: Path) -> int:
        """Register a SuperNode's public key with the SuperLink; its node ID."""
        return int(self.flwr("supernode", "register", str(public_key), CONNECTION)["node-id"])

    def submit(self, app: Path, run_config: Mapping[str, object], *, name: str) -> int:
        """``flwr run APP`` with ``run_config`` overrides (written to a TOML file); run ID."""
        overrides = self.workdir / "run-config" / f"{name}.toml"
        overrides.parent.mkdir(parents=True, exist_ok=True)
        overrides.write_text(toml_table(run_config))
        answer = self.flwr("run", str(app), CONNECTION, "--run-config", str(overrides))
        return int(answer["run-id"])

    def failure_report(self, run_id: int) -> str:
        """The end of the ServerApp's log (``flwr log --show``) and the last error line in
        each ClientApp executor's log — what a failed run's user needs first."""
        lines = []
        try:
            _, stdout, _ = self.run_cli([flower_executable("flwr"), "log", str(run_id),
                                         CONNECTION, "--show"], timeout=60)
            lines += ["ServerApp log (flwr log --show), last lines:",
                      *stdout.strip().splitlines()[-12:]]
        except DeploymentError as exc:
            lines.append(str(exc))
        for c in self.components:
            if c.name.startswith("clientapp-"):
                errors = [line for line in c.log_tail(400).splitlines()
                          if ERROR_LINE.match(line)]
                if errors:
                    lines.append(f"{c.name}: {errors[-1]}  (full log: {c.log})")
        return "\n".join(lines)

    def run_status(self, run_id: int) -> dict:
        runs = self.flwr("list", CONNECTION, "--run-id", str(run_id))["runs"]
        if not runs:
            raise DeploymentError(f"the SuperLink knows no run {run_id}.")
        return runs[0]

    def wait_for_run(self, run_id: int, *, timeout: float, result: Path | None = None,
                     poll: float = 20.0) -> dict:
        """Wait until run ``run_id`` has finished; its ``flwr list`` record.

        Asking ``flwr`` costs a CLI start (~1.5 s CPU), so while the ServerApp's ``result``
        file is absent the status is asked only every ``poll`` seconds.
        """
        deadline = time.monotonic() + timeout
        last_ask = -math.inf
        while True:
            self.check_alive()
            self.note_descendants()
            now = time.monotonic()
            if now - last_ask >= poll or (result is not None and result.exists()):
                last_ask = now
                record = self.run_status(run_id)
                if str(record.get("status", "")).startswith(FINISHED):
                    return record
            if now > deadline:
                raise DeploymentError(f"run {run_id} did not finish within {timeout:g} s; see "
                                      f"{self.logs}.")
            time.sleep(0.5)

