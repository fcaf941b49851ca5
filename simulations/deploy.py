"""``fairsynth deploy``: the federation as separate processes on 127.0.0.1, with TLS and
SuperNode authentication — the topology of ``docker-compose.yml``, without containers.

Topology (Flower 1.41 serves each component's APIs over HTTPS on one port)::

    flwr CLI ── Control API ──► SuperLink 127.0.0.1:P ◄── Runtime API ── ServerApp executor
                                    ▲ Fleet API: TLS + a registered EC key per SuperNode
                  ┌─────────────────┼─────────────────┐
              SuperNode 1      SuperNode 2   …    SuperNode K      (127.0.0.1:Pₖ: Runtime API)
                  ▲                 ▲                 ▲
           ClientApp exec. 1  ClientApp exec. 2   ClientApp exec. K  (reads client-k/client.csv)

Every SuperLink and SuperNode runs with ``--isolation process``: it only routes messages, and
a separate SuperExec (``flower-superexec``) starts the ServerApp or ClientApp processes. Each
SuperExec proves itself to its SuperLink/SuperNode with a shared secret
(``--superexec-auth-secret-file``); a SuperNode proves itself to the SuperLink with an EC key
whose public half was registered beforehand (``flwr supernode register``,
``--enable-supernode-auth``), so an unregistered SuperNode is refused.

Sub-commands:

* ``fairsynth deploy-certs`` — a CA, the TLS certificates, the SuperNode keys and the SuperExec
  secrets, one folder per service (:func:`generate_credentials`);
* ``fairsynth deploy-split`` — one CSV per client, in the dataset's own format
  (:func:`split_to_csv`);
* ``fairsynth deploy`` — both, then starts everything (:class:`LocalFederation`), runs the
  one-shot job and the FedAvg baseline with ``flwr run``, reads Flower's recorded traffic of
  each run (``flwr list --run-id``), stops every process by its PID (also on failure or a
  signal) and writes a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clients.faults import FAULT_KEY, Fault, parse_assignments
from common import datasets, partition
from common.errors import ConfigError, DataError, FairsynthError
from common.run_config import RunConfig
from common.schema import TabularData
from simulations import options
from simulations.results import write_json

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: Name of the ``flwr`` CLI connection written into ``$FLWR_HOME/config.toml``.
CONNECTION = "fairsynth-local"
#: Environment that keeps Flower from installing packages, phoning home or checking updates.
FLOWER_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
}
#: The last line of a Python traceback, e.g. ``ValueError: …``.
ERROR_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception)\b.*:")
#: Run statuses that ``flwr list`` reports for a run that is over.
FINISHED = "finished"
COMPLETED = "finished:completed"


class DeploymentError(FairsynthError):
    """A component did not start, a run failed, or a ``flwr`` command was refused."""


# =========================================================================== credentials
#
# One folder per service; each container (or process) sees only its own folder:
#
#   ca/            ca.crt, ca.key  (the key signs the certificates: keep it off every service)
#   superlink/     ca.crt, server.pem, server.key, superexec.secret
#   serverapp/     ca.crt, superexec.secret                  (the SuperLink's executor)
#   supernode-k/   ca.crt, server.pem, server.key, auth.key, auth.pub, superexec.secret
#   clientapp-k/   ca.crt, superexec.secret                  (SuperNode k's executor)

CERT_DAYS = 365
#: The files in each kind of service folder.
SERVICE_FILES = {
    "superlink": ("ca.crt", "server.pem", "server.key", "superexec.secret"),
    "serverapp": ("ca.crt", "superexec.secret"),
    "supernode": ("ca.crt", "server.pem", "server.key", "auth.key", "auth.pub",
                  "superexec.secret"),
    "clientapp": ("ca.crt", "superexec.secret"),
}


def supernode(k: int) -> str:
    """Service name of client ``k`` (1-based) — also its hostname in docker-compose.yml."""
    return f"supernode-{k}"


def clientapp(k: int) -> str:
    return f"clientapp-{k}"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where :func:`generate_credentials` put everything (see the layout above)."""

    root: Path
    clients: int

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    def folder(self, service: str) -> Path:
        return self.root / service

    def auth_key(self, k: int) -> Path:
        return self.folder(supernode(k)) / "auth.key"

    def auth_pub(self, k: int) -> Path:
        return self.folder(supernode(k)) / "auth.pub"

    def services(self) -> list[str]:
        """Every service folder, SuperLink side first."""
        return ["superlink", "serverapp",
                *(name for k in range(1, self.clients + 1) for name in (supernode(k),
                                                                          clientapp(k)))]

    @classmethod
    def load(cls, root: Path, *, clients: int) -> Credentials:
        """Check that ``root`` holds credentials for ``clients`` SuperNodes."""
        creds = cls(Path(root), clients)
        needed = [creds.ca_cert, *(creds.folder(s) / f for s in creds.services()
                                   for f in SERVICE_FILES[s.split("-")[0]])]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise DataError(
                f"{root} lacks credential file(s) {missing[:4]}{' …' if len(missing) > 4 else ''}"
                f". Create them with `fairsynth deploy-certs --out {root} --clients {clients}`."
            )
        return creds


def generate_credentials(out: Path, *, clients: int, hostnames: Sequence[str] = (),
                         days: int = CERT_DAYS, force: bool = False) -> Credentials:
    """Create a CA, TLS certificates, SuperNode authentication keys and SuperExec secrets.

    The CA and all keys are ECDSA on P-384; certificates are X.509 v3 signed with SHA-256.
    The SuperLink's certificate names ``superlink``, ``localhost``, ``127.0.0.1`` and every
    entry of ``hostnames`` (DNS names or IP addresses under which clients reach it);
    SuperNode ``k``'s names ``supernode-k``, ``localhost`` and ``127.0.0.1`` (its Runtime API
    is reached by its ClientApp executor only). SuperNode authentication keys are written in
    OpenSSH format, as ``flower-supernode --auth-supernode-private-key`` and
    ``flwr supernode register`` expect. Each SuperExec secret is 32 random bytes (hex).

    Parameters
    ----------
    out : Path
        Target folder; refused if it already holds a CA unless ``force``.
    clients : int
        Number of SuperNodes ``K``.
    hostnames : sequence of str
        Extra names for the SuperLink's certificate.
    days : int
        Validity of every certificate.
    force : bool
        Replace existing credentials.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if clients < 1:
        raise ConfigError(f"the number of clients must be ≥ 1, got {clients}.")
    if days < 1:
        raise ConfigError(f"certificates must be valid for ≥ 1 day, got {days}.")
    out = Path(out)
    creds = Credentials(out, clients)
    if creds.ca_cert.exists() and not force:
        raise ConfigError(
            f"{out} already holds credentials (a CA in {creds.ca_cert.parent}); pass --force to "
            "replace them all (every registered SuperNode key changes) or choose another --out."
        )
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    no_password = serialization.NoEncryption()

    def new_key():
        return ec.generate_private_key(ec.SECP384R1())

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fairsynth"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write(path: Path, data: bytes, *, private: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o600 if private else 0o644)

    ca_key = new_key()
    ca_name = name("fairsynth federation CA")
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(pem)
    write(creds.ca_cert, ca_pem, private=False)
    write(creds.root / "ca" / "ca.key", ca_key.private_bytes(pem, pkcs8, no_password),
          private=True)

    def server_cert(service: str, names: Sequence[str]) -> None:
        key = new_key()
        alt = []
        for n in dict.fromkeys(names):  # keep order, drop duplicates
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder().subject_name(name(service)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        folder = creds.folder(service)
        write(folder / "server.pem", cert.public_bytes(pem), private=False)
        write(folder / "server.key", key.private_bytes(pem, pkcs8, no_password), private=True)

    def secret_pair(service: str, executor: str) -> None:
        value = secrets.token_hex(32).encode()
        for s in (service, executor):
            write(creds.folder(s) / "ca.crt", ca_pem, private=False)
            write(creds.folder(s) / "superexec.secret", value, private=True)

    server_cert("superlink", ["superlink", "localhost", LOOPBACK, *hostnames])
    secret_pair("superlink", "serverapp")
    for k in range(1, clients + 1):
        server_cert(supernode(k), [supernode(k), "localhost", LOOPBACK])
        secret_pair(supernode(k), clientapp(k))
        generate_auth_key(creds.auth_key(k))
    logger.info("wrote a CA and credentials for the SuperLink and %d SuperNodes to %s",
                clients, out)
    return creds


def generate_auth_key(path: Path) -> Path:
    """A SuperNode authentication key pair: ``path`` (OpenSSH private), ``path.pub`` → returned.

    The public key file ends in ``.pub`` next to the private one, e.g. ``auth.key`` →
    ``auth.pub``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    pub = path.with_suffix(".pub")
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH) + b"\n")
    pub.chmod(0o644)
    return pub


# =========================================================================== processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _flower_executable(name: str) -> str:
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


def process_group_members(pgids: set[int]) -> dict[int, str]:
    """Live processes (not zombies) whose process group is in ``pgids``: ``{pid: command}``."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid pgrp …" — comm may hold spaces: split after the last ")".
            state, _ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
            if int(pgrp) in pgids and state != "Z":
                members[int(entry.name)] = stat[stat.index("(") + 1: stat.rindex(")")]
        except (OSError, ValueError):
            continue  # the process ended while we looked
    return members


def pid_alive(pid: int, *, groups: set[int] | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie and (if ``groups`` is given) belongs to one of
    those process groups — PIDs are reused, so a PID seen earlier is checked by its group."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state, _ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
    return state != "Z" and (groups is None or int(pgrp) in groups)


@dataclasses.dataclass
class Component:
    """One process started by :class:`LocalFederation` (leader of its own process group)."""

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


class LocalFederation:
    """A SuperLink, its ServerApp executor and ``K`` SuperNodes with their ClientApp
    executors, as processes on 127.0.0.1 with TLS and SuperNode authentication.

    Use as a context manager: leaving the ``with`` block — normally, by an exception or by
    ``KeyboardInterrupt`` — stops every process by its PID (SIGTERM to its process group, then
    SIGKILL after ``grace`` seconds). :meth:`stop` returns the processes that survived.

    Parameters
    ----------
    workdir : Path
        Logs (``logs/``), the ``flwr`` CLI home (``flwr-home/``) and node configs go here.
    credentials : Credentials
        From :func:`generate_credentials`.
    data_files : sequence of Path
        Client ``k``'s CSV file (``k = 1..K``); passed as node config ``data-path``.
    port : int
        SuperLink port (0: a free one).
    startup_timeout : float
        Seconds to wait for the SuperLink to answer and for all SuperNodes to come online.
    grace : float
        Seconds between SIGTERM and SIGKILL when stopping.
    """

    def __init__(self, *, workdir: Path, credentials: Credentials, data_files: Sequence[Path],
                 port: int = 0, startup_timeout: float = 120.0, grace: float = 10.0,
                 faults: Mapping[int, Fault] | None = None) -> None:
        if len(data_files) != credentials.clients:
            raise ConfigError(
                f"{len(data_files)} data files for {credentials.clients} SuperNodes; give one "
                "CSV file per client."
            )
        self.workdir = Path(workdir).resolve()
        self.credentials = credentials
        self.data_files = [Path(p).resolve() for p in data_files]
        self.faults = dict(faults or {})
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.grace = grace
        self.components: list[Component] = []
        self.components_started: list[Component] = []
        self.seen_pids: set[int] = set()
        self._starting_process = False  # see handling_signals()
        self._held_signal: int | None = None
        self.flwr_home = self.workdir / "flwr-home"
        self.logs = self.workdir / "logs"
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(self.flwr_home), "PATH": path}
        # K ClientApps share this machine's cores: one BLAS/torch thread each.
        self.client_env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                           **{k: v for k, v in os.environ.items()
                              if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}

    @property
    def address(self) -> str:
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
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\nroot-certificates = {json.dumps(str(creds.ca_cert))}\n'
        )
        link = creds.folder("superlink")
        self.spawn("superlink", [
            _flower_executable("flower-superlink"),
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
            _flower_executable("flower-supernode"),
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
        (``partition-id``, which seeds the client's pipeline as in the simulation) and, when
        one is injected, its ``fault`` (:mod:`clients.faults`)."""
        config: dict[str, object] = {"data-path": str(self.data_files[k - 1]),
                                     "partition-id": k - 1}
        if k - 1 in self.faults:
            fault = self.faults[k - 1]
            config[FAULT_KEY] = f"{fault.kind}@{fault.phase}"
        return config

    @staticmethod
    def executor_argv(port: int, folder: Path) -> list[str]:
        return [_flower_executable("flower-superexec"),
                "--runtime-api-address", f"{LOOPBACK}:{port}",
                "--root-certificates", str(folder / "ca.crt"),
                "--superexec-auth-secret-file", str(folder / "superexec.secret")]

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
    def handling_signals(self) -> Iterator[LocalFederation]:
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
                _signal_group(c.pid, signal.SIGTERM)
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
                _signal_group(pgid, signal.SIGKILL)
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
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def note_descendants(self) -> None:
        """Remember the PIDs of the processes the executors started (for the final check)."""
        self.seen_pids |= set(process_group_members({c.pid for c in self.components}))

    # ------------------------------------------------------------------ waiting

    def check_alive(self) -> None:
        """Raise if a started component has exited (with the end of its log)."""
        for c in self.components:
            if c.critical and c.popen.poll() is not None:
                raise DeploymentError(
                    f"{c.name} exited with code {c.popen.returncode}; the end of {c.log}:\n"
                    f"{c.log_tail()}"
                )

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
        code, stdout, stderr = self.run_cli([_flower_executable("flwr"), *args, "--format",
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
            _, stdout, _ = self.run_cli([_flower_executable("flwr"), "log", str(run_id),
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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def toml_table(values: Mapping[str, object]) -> str:
    """``key = value`` lines (bool, int, float, str) — a run or node config override file."""
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, str):
            text = json.dumps(value)  # a JSON string is a TOML basic string
        else:
            raise ConfigError(f"run config {key!r}: {value!r} is not a bool, number or string.")
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def parse_overrides(pairs: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings → a mapping; a value is read as TOML, else kept as a string."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--run-config expects KEY=VALUE pairs, got {pair!r}.")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key.strip()] = value
    return out


# =========================================================================== per-client data

#: Column that tags each row with its position while the rows are partitioned.
_ROW = "__fairsynth_row__"


def source_frame(args: argparse.Namespace) -> pd.DataFrame:
    """The dataset's rows in its own file format, row ``i`` being row ``i`` of
    :func:`simulations.options.load_data` (which drops nothing except Adult's rows with ``?``).

    Law School and ``--csv``: the file's rows, every column. Adult: ``adult.data`` and
    ``adult.test`` pooled, as the loader pools them (``?`` rows dropped, the test file's ``.``
    after the label removed), headerless like ``adult.data``. Synthetic: features, ``group``,
    ``label``.
    """
    if args.csv:
        return pd.read_csv(args.csv, skipinitialspace=True)
    root = datasets.data_dir(args.data_dir)
    if args.dataset == "law_school":
        return pd.read_csv(root / "law_school_clean.csv")
    if args.dataset == "adult":
        frames = [pd.read_csv(root / name, header=None, names=datasets.ADULT_COLUMNS,
                              skiprows=skip, skipinitialspace=True, na_values="?", dtype=str)
                  for name, skip in (("adult.data", 0), ("adult.test", 1))]
        frame = pd.concat(frames, ignore_index=True)
        frame["income"] = frame["income"].str.rstrip(".")
        return frame.dropna().reset_index(drop=True)
    data = options.load_data(args, seed=args.seed)
    frame = data.features.copy()
    frame[data.schema.sensitive], frame[data.schema.label] = data.s, data.y
    return frame


def client_rows(data: TabularData, args: argparse.Namespace) -> list[np.ndarray]:
    """Row positions of each client's partition — the partition ``fairsynth simulate`` uses
    (same method, seed, α and column), in increasing order."""
    tagged = TabularData(data.schema, data.features.assign(**{_ROW: np.arange(len(data))}),
                         data.s, data.y)
    parts = partition.partition(tagged, clients=args.clients, method=args.partition,
                                seed=args.seed, alpha=args.alpha, column=args.partition_column)
    return [part.features[_ROW].to_numpy() for part in parts]


def split_to_csv(args: argparse.Namespace, out: Path) -> dict[Path, int]:
    """Write client ``k``'s rows to ``out/client-k/client.csv`` (``k = 1..K``).

    Each file holds one client's partition only, in the dataset's own format
    (:func:`source_frame`), so that a SuperNode's ClientApp can be given its file alone
    (node config ``data-path``); the client splits it 80/20 itself. Returns each file with its
    number of rows.
    """
    data = options.load_data(args, seed=args.seed)
    frame = source_frame(args)
    if len(frame) != len(data):
        raise DataError(f"the source file has {len(frame)} rows but the loader kept {len(data)};"
                        " the per-client files cannot be matched to the partition.")
    headerless = args.dataset == "adult" and not args.csv
    written = {}
    for k, rows in enumerate(client_rows(data, args), start=1):
        path = Path(out) / f"client-{k}" / "client.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.iloc[rows].to_csv(path, index=False, header=not headerless)
        written[path] = len(rows)
    logger.info("wrote %d client files to %s", len(written), out)
    return written


# =========================================================================== the command

STRATEGIES_DEFAULT = ("oneshot", "fedavg")


def app_dir(explicit: Path | None) -> Path:
    """The Flower app to run: ``explicit``, else this source tree (its pyproject.toml)."""
    root = Path(explicit) if explicit else Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    try:
        config = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject} is missing or unreadable ({exc}); pass --app with the "
                          "folder of fairsynth's pyproject.toml.") from exc
    if "app" not in config.get("tool", {}).get("flwr", {}):
        raise ConfigError(f"{pyproject} has no [tool.flwr.app] table; pass --app with the "
                          "folder of fairsynth's pyproject.toml.")
    return root.resolve()


def register(sub) -> None:
    from simulations.simulate import (add_fault_argument, add_federation_arguments,
                                      add_stage2_arguments)

    parser = sub.add_parser(
        "deploy", help="SuperLink + one SuperNode per client as processes on 127.0.0.1 (TLS, "
        "node authentication); runs the one-shot job and FedAvg with `flwr run`")
    options.add_data_arguments(parser)
    options.add_stage1_arguments(parser, sweep=False)
    add_stage2_arguments(parser)
    add_federation_arguments(parser, strategy=False)
    add_fault_argument(parser)
    g = parser.add_argument_group("deployment")
    g.add_argument("--strategies", nargs="+", default=list(STRATEGIES_DEFAULT),
                   choices=["oneshot", "fedavg", "fairfed"],
                   help="runs to submit, in order (default: oneshot fedavg)")
    g.add_argument("--run-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further run-config overrides (TOML values), e.g. iterations=50")
    g.add_argument("--out", type=Path, default=Path("runs/deploy"),
                   help="work folder: data/, certs/, logs/, results/, summary.json "
                   "(default: runs/deploy)")
    g.add_argument("--certs", type=Path,
                   help="use these credentials (from deploy-certs) instead of new ones")
    g.add_argument("--port", type=int, default=0, help="SuperLink port (default: a free one)")
    g.add_argument("--run-timeout", type=float, default=3600.0,
                   help="seconds one run may take (default: 3600)")
    g.add_argument("--app", type=Path, help="the Flower app folder (default: this source tree)")
    parser.set_defaults(func=run)

    certs = sub.add_parser("deploy-certs", help="CA, TLS certificates, SuperNode keys and "
                           "SuperExec secrets, one folder per service")
    certs.add_argument("--out", type=Path, default=Path("deploy/certs"),
                       help="target folder (default: deploy/certs)")
    certs.add_argument("--clients", type=int, default=3, help="number of SuperNodes K")
    certs.add_argument("--hostname", nargs="*", default=[],
                       help="extra DNS names / IPs under which SuperNodes reach the SuperLink")
    certs.add_argument("--days", type=int, default=CERT_DAYS, help="certificate validity")
    certs.add_argument("--force", action="store_true", help="replace existing credentials")
    certs.set_defaults(func=_certs_command)

    split = sub.add_parser("deploy-split", help="one CSV per client (client-k/client.csv), "
                           "the partition `fairsynth simulate` uses")
    options.add_data_arguments(split)
    split.add_argument("--seed", type=int, default=0, help="partition seed")
    split.add_argument("--out", type=Path, default=Path("deploy/data"),
                       help="target folder (default: deploy/data)")
    split.set_defaults(func=_split_command)


def _certs_command(args: argparse.Namespace) -> int:
    creds = generate_credentials(args.out, clients=args.clients, hostnames=args.hostname,
                                 days=args.days, force=args.force)
    print(f"wrote credentials for the SuperLink and {args.clients} SuperNodes to {creds.root}")
    print(f"  CA certificate (for the flwr CLI): {creds.ca_cert}")
    print(f"  SuperNode public keys to register: {creds.root}/supernode-*/auth.pub")
    return 0


def _split_command(args: argparse.Namespace) -> int:
    for path, rows in split_to_csv(args, args.out).items():
        print(f"{path}  {rows} rows")
    return 0


def deploy(args: argparse.Namespace) -> dict:
    """Split, credentials, start, run each strategy, stop; the summary (see module docstring)."""
    from simulations.simulate import check_setup, run_config_from_args

    start = time.perf_counter()
    out = Path(args.out).resolve()
    app = app_dir(args.app)
    base = {**run_config_from_args(args), **parse_overrides(args.run_config)}
    configs = {}
    for strategy in args.strategies:
        mapping = {**base, "strategy": strategy,
                   "results-path": str(out / "results" / f"{strategy}.json")}
        config = RunConfig.from_mapping(mapping)  # fail fast, before any process starts
        configs[strategy] = config.to_mapping()
    check_setup(RunConfig.from_mapping(configs[args.strategies[0]]), args.clients)
    faults = parse_assignments(getattr(args, "inject_fault", []))
    for k in faults:
        if not 0 <= k < args.clients:
            raise ConfigError(f"--inject-fault names partition {k}; the partitions are "
                              f"0..{args.clients - 1}.")
    for stale in (out / "results").glob("*.json") if (out / "results").is_dir() else ():
        stale.unlink()
    data_files = list(split_to_csv(args, out / "data"))
    if args.certs:
        creds = Credentials.load(args.certs, clients=args.clients)
    else:
        creds = generate_credentials(out / "certs", clients=args.clients, force=True)
    prepared = time.perf_counter()
    runs: dict[str, dict] = {}
    federation = LocalFederation(workdir=out, credentials=creds, data_files=data_files,
                                 port=args.port, faults=faults)
    with federation.handling_signals():
        try:
            federation.start()
            started = time.perf_counter()
            refusal = federation.check_refusal()
            if not refusal["refused"]:
                raise DeploymentError(f"a SuperNode with an unregistered key was not refused: "
                                      f"{refusal}")
            checked = time.perf_counter()
            for strategy, mapping in configs.items():
                runs[strategy] = run_one(federation, app, strategy, mapping,
                                         timeout=args.run_timeout)
        finally:
            stopping = time.perf_counter()
            left = federation.stop()
    end = time.perf_counter()
    return {
        "clients": args.clients,
        "superlink": federation.address,
        "tls": True,
        "supernode_authentication": True,
        "isolation": "process",
        "seconds": {"prepare": prepared - start, "startup": started - prepared,
                    "refusal_check": checked - started,
                    "runs": stopping - checked, "shutdown": end - stopping,
                    "end_to_end": end - start},
        "unregistered_supernode": refusal,
        "runs": runs,
        "pids": sorted(federation.seen_pids),
        "process_groups": sorted(c.pid for c in federation.components_started),
        "pids_left": left,
        "run_config": base,
        "logs": str(federation.logs),
    }


def run_one(federation: LocalFederation, app: Path, strategy: str, mapping: Mapping,
            *, timeout: float) -> dict:
    """Submit one run, wait for it, and collect Flower's record and the ServerApp's result."""
    result_path = Path(mapping["results-path"])
    t0 = time.perf_counter()
    run_id = federation.submit(app, mapping, name=strategy)
    logger.info("submitted %s as run %d", strategy, run_id)
    record = federation.wait_for_run(run_id, timeout=timeout, result=result_path)
    wall = time.perf_counter() - t0
    if record.get("status") != COMPLETED:
        raise DeploymentError(
            f"run {run_id} ({strategy}) ended with status {record.get('status')!r}.\n"
            + federation.failure_report(run_id)
        )
    result = json.loads(result_path.read_text())
    return {
        "run_id": run_id,
        "status": record["status"],
        "wall_seconds": wall,
        "flower_elapsed_seconds": record.get("elapsed"),
        "network_traffic": record.get("network-traffic", {}),
        "compute_time": record.get("compute-time", {}),
        "app_traffic": result.get("traffic", {}),
        "metrics": result.get("metrics", {}),
        "rounds": result.get("rounds"),
        "clients": [{k: c.get(k) for k in ("node_id", "rows", "rows_sha256")}
                    for c in result.get("clients", [])],
        "rejected": result.get("rejected", []),
        "result_path": str(result_path),
    }


def run(args: argparse.Namespace) -> int:
    try:
        summary = deploy(args)
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        print(f"fairsynth deploy: stopped by signal {int(signum)}; the federation's processes "
              "were stopped.", file=sys.stderr)
        return 128 + int(signum)
    path = write_json(Path(args.out) / "summary.json", summary)
    print_summary(summary)
    print(f"wrote {path}")
    return 0 if not summary["pids_left"] else 1


def print_summary(summary: Mapping) -> None:
    s = summary["seconds"]
    print(f"{summary['clients']} SuperNodes on {summary['superlink']} (TLS, SuperNode "
          f"authentication): end to end {s['end_to_end']:.1f} s (prepare {s['prepare']:.1f}, "
          f"startup {s['startup']:.1f}, runs {s['runs']:.1f}, shutdown {s['shutdown']:.1f})")
    print(f"{'strategy':9} {'run s':>7} {'Flower in B':>12} {'Flower out B':>12} "
          f"{'Flower total B':>14} {'app-counted B':>13} {'acc %':>6} {'|SPD|':>7} {'|EOD|':>7}")
    for name, r in summary["runs"].items():
        t, a, m = r["network_traffic"], r["app_traffic"], r["metrics"]
        counted = a.get("bytes_up", 0) + a.get("bytes_down", 0)
        print(f"{name:9} {r['wall_seconds']:7.1f} {t.get('inbound-bytes', 0):12,} "
              f"{t.get('outbound-bytes', 0):12,} {t.get('total-bytes', 0):14,} {counted:13,} "
              f"{100 * m.get('accuracy', math.nan):6.2f} {m.get('spd', math.nan):7.4f} "
              f"{m.get('eod', math.nan):7.4f}")
    for name, r in summary["runs"].items():
        for rej in r.get("rejected", []):
            print(f"  {name}: node {rej['node_id']} skipped ({rej['phase']}): {rej['reason']}")
    if summary["pids_left"]:
        print(f"WARNING: processes still alive: {summary['pids_left']}")
