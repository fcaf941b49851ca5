"""The compose federation for real: ``docker-compose.yml`` on a Docker engine.

The image (``deploy/build-image.sh``, built if absent), the credentials and the per-client data
are made as docs/containers.md says ("What CI runs, step by step"); the SuperLink, the three
SuperNodes and every executor start with TLS and SuperNode authentication, on the host's
network on 127.0.0.1 (``deploy/docker-compose.host.yml``, distinct ports). From the host,
``flwr run`` submits the one-shot job and FedAvg (R = 3), whose metrics must equal
``fairsynth simulate``'s for the same split and seeds (non-private order and exact evaluation:
the compose clients' policy allows it, so the comparison is exact). Then: a SuperNode with an
unregistered key is refused; the services run non-root and listen on loopback only; client k's
data is mounted only in ``clientapp-k``; a SuperNode killed mid-round costs the server Flower's
liveness window, not its timeout; ``down -v`` leaves no container, volume or process.

Marker ``docker``: runs when an engine answers ``docker info`` (``.ci/run`` starts one), and is
skipped otherwise — unless ``FAIRSYNTH_REQUIRE_DOCKER=1``, which makes a missing engine a
failure (CI sets it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from simulations.deployment.credentials import generate_auth_key
from simulations.deployment.supervisor import flower_executable, free_port
from simulations.processes import stat

REPO = Path(__file__).resolve().parents[1]
IMAGE = "fairsynth:latest"
#: The image's own user (Dockerfile: USER 49999:49999).
IMAGE_USER = (49999, 49999)
CLIENTS = 3
#: The clients' privacy policy (node config): the non-private order and exact statistics, so
#: that the deployed runs must give exactly the simulation's metrics.
POLICY = 'privacy-nonprivate=true privacy-orders="fair-only"'
#: The one-shot job: fair-only stage 1 with few iterations, its penalty in the paper's form.
ONESHOT = {"order": "fair-only", "iterations": 20, "target": 0.0, "rho": 10.0}
ONESHOT_FLAGS = ["--order", "fair-only", "--iterations", "20", "--target", "0", "--rho", "10",
                 "--allow-orders", "fair-only", "--allow-nonprivate"]
#: Flower 1.41: a SuperNode heartbeats every 30 s and is offline after 2 missed intervals.
LIVENESS_WINDOW = 2 * 30.0


def engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


REQUIRED = os.environ.get("FAIRSYNTH_REQUIRE_DOCKER") == "1"
pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,  # minutes, and an image build when there is none: not in -m "not slow"
    pytest.mark.skipif(not REQUIRED and not engine_answers(),
                       reason="no Docker engine answers `docker info` (docs/containers.md; "
                              "FAIRSYNTH_REQUIRE_DOCKER=1 makes this a failure)"),
]


def run(argv: list[str], *, timeout: float, env: dict | None = None, check: bool = True
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{' '.join(map(str, argv))}` exited with {proc.returncode}:\n"
                             f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def compose_command() -> list[str]:
    """``docker compose`` (v2) where the plugin exists, else Debian's ``docker-compose`` (v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed")


class Compose:
    """One compose project: its folder (certificates, data, results), ports and commands."""

    def __init__(self, root: Path, data_dir: Path) -> None:
        self.root, self.data_dir = root, data_dir
        self.project = f"fsci{uuid.uuid4().hex[:8]}"
        # The services run as the owner of the credentials, never as root: as root (CI), the
        # folder is handed to the image's own non-root user first (prepare()).
        self.uid, self.gid = (IMAGE_USER if os.getuid() == 0 else (os.getuid(), os.getgid()))
        ports = set()
        while len(ports) < 1 + CLIENTS:
            ports.add(free_port())
        self.link_port, *self.node_ports = sorted(ports)
        self.env = {
            **os.environ,
            # dockerd answers slowly on a loaded 2-core machine (removing a container on the
            # vfs storage driver deletes a full copy of the image): compose's 60 s per request
            # is too short there, and the step's own timeout still bounds the wait.
            "COMPOSE_HTTP_TIMEOUT": "300", "DOCKER_CLIENT_TIMEOUT": "300",
            "FAIRSYNTH_BIND": "127.0.0.1",
            "FAIRSYNTH_SUPERLINK_PORT": str(self.link_port),
            "FAIRSYNTH_UID": str(self.uid), "FAIRSYNTH_GID": str(self.gid),
            **{f"FAIRSYNTH_SUPERNODE_{k}_PORT": str(p)
               for k, p in enumerate(self.node_ports, start=1)},
            **{f"FAIRSYNTH_POLICY_{k}": POLICY for k in range(1, CLIENTS + 1)},
        }
        self.flwr_home = root / "flwr"
        self.flwr_env = {**os.environ, "FLWR_HOME": str(self.flwr_home)}
        self.base = [*compose_command(), "--project-directory", str(root), "-p", self.project,
                     "-f", str(REPO / "docker-compose.yml"),
                     "-f", str(REPO / "deploy" / "docker-compose.host.yml")]

    # -- the steps of docs/containers.md
    def prepare(self) -> None:
        cli = [sys.executable, "-m", "simulations.cli"]
        run([*cli, "deploy-certs", "--out", str(self.root / "deploy" / "certs"),
             "--clients", str(CLIENTS)], timeout=120)
        run([*cli, "deploy-split", "--clients", str(CLIENTS), "--data-dir", str(self.data_dir),
             "--out", str(self.root / "deploy" / "data")], timeout=300)
        (self.root / "results" / "deploy").mkdir(parents=True)
        self.flwr_home.mkdir()
        ca = self.root / "deploy" / "certs" / "ca" / "ca.crt"
        (self.flwr_home / "config.toml").write_text(
            '[superlink]\ndefault = "fairsynth-docker"\n\n[superlink.fairsynth-docker]\n'
            f'address = "127.0.0.1:{self.link_port}"\nroot-certificates = "{ca}"\n')
        if os.getuid() == 0:
            for path in [self.root, *self.root.rglob("*")]:
                os.chown(path, self.uid, self.gid)

    def compose(self, *args: str, timeout: float = 300, check: bool = True):
        return run([*self.base, *args], timeout=timeout, env=self.env, check=check)

    def up(self) -> float:
        start = time.monotonic()
        proc = self.compose("up", "-d", "--no-build", check=False)
        if proc.returncode != 0:
            logs = self.compose("logs", "--tail", "30", check=False)
            raise AssertionError(f"compose up failed:\n{proc.stderr[-2000:]}\n{logs.stdout}")
        self.wait_online(CLIENTS, timeout=180)
        return time.monotonic() - start

    # -- the flwr CLI on the host
    def flwr(self, *args: str, timeout: float = 120) -> dict:
        proc = run([flower_executable("flwr"), *args, "--format", "json"], timeout=timeout,
                   env=self.flwr_env, check=False)
        try:
            answer = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"flwr {' '.join(args)}: "
                                 f"{(proc.stdout + proc.stderr)[-2000:]}") from None
        assert answer.get("success"), answer
        return answer

    def online(self) -> int:
        nodes = self.flwr("supernode", "list", "fairsynth-docker")["nodes"]
        return sum(n.get("status") == "online" for n in nodes)

    def wait_online(self, count: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (online := self.online()) < count:
            assert time.monotonic() < deadline, f"only {online} of {count} SuperNodes online"
            time.sleep(2)

    def submit(self, name: str, config: dict) -> tuple[int, Path]:
        """``flwr run . fairsynth-docker --run-config ...``; the run ID and its result file."""
        result = self.root / "results" / "deploy" / f"{name}.json"
        overrides = {**config, "results-path": f"/results/{name}.json"}
        text = " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
        answer = self.flwr("run", str(REPO), "fairsynth-docker", "--run-config", text)
        return int(answer["run-id"]), result

    def wait_finished(self, run_id: int, result: Path, *, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            if result.exists():
                (record,) = self.flwr("list", "fairsynth-docker", "--run-id", str(run_id))["runs"]
                if str(record["status"]).startswith("finished"):
                    assert record["status"] == "finished:completed", record
                    return json.loads(result.read_text())
            assert time.monotonic() < deadline, (
                f"run {run_id} did not finish within {timeout:g} s:\n"
                + run([flower_executable("flwr"), "log", str(run_id), "fairsynth-docker",
                       "--show"], timeout=60, env=self.flwr_env, check=False).stdout[-3000:])
            time.sleep(1)

    # -- the containers
    def containers(self, service: str | None = None) -> list[str]:
        argv = ["docker", "ps", "-aq", "--no-trunc", "--filter",
                f"label=com.docker.compose.project={self.project}"]
        if service:
            argv += ["--filter", f"label=com.docker.compose.service={service}"]
        return run(argv, timeout=60).stdout.split()

    def inspect(self, ids: list[str]) -> list[dict]:
        return json.loads(run(["docker", "inspect", *ids], timeout=60).stdout) if ids else []


@pytest.fixture(scope="module")
def federation(tmp_path_factory, data_dir):
    if not engine_answers():
        pytest.fail("FAIRSYNTH_REQUIRE_DOCKER=1 but no Docker engine answers `docker info`")
    if run(["docker", "image", "inspect", IMAGE], timeout=60, check=False).returncode != 0:
        run([str(REPO / "deploy" / "build-image.sh"), "--tag", IMAGE], timeout=3600)
    fed = Compose(tmp_path_factory.mktemp("compose"), data_dir)
    fed.prepare()
    try:
        fed.up_seconds = fed.up()
        yield fed
    finally:
        fed.compose("down", "-v", "--remove-orphans", check=False)
        run(["docker", "rm", "-f", f"{fed.project}_unregistered"], timeout=60, check=False)


def processes_of(container_ids: list[str]) -> list[int]:
    """Host PIDs of processes inside these containers (their cgroup paths name the IDs)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cgroup = (entry / "cgroup").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if any(i in cgroup for i in container_ids):
            found.append(int(entry.name))
    return found


def simulate(tmp_path: Path, data_dir: Path, *flags: str) -> dict:
    out = tmp_path / "simulate"
    run([sys.executable, "-m", "simulations.cli", "simulate", "--clients", str(CLIENTS),
         "--data-dir", str(data_dir), "--out", str(out), *flags], timeout=900)
    return json.loads((out / "results.json").read_text())


def assert_same_metrics(deployed: dict, simulated: dict) -> None:
    for key in ("accuracy", "balanced_accuracy", "spd", "eod", "n"):
        assert deployed["metrics"][key] == pytest.approx(simulated["metrics"][key], abs=1e-9), key


def test_oneshot_job_in_containers_gives_the_simulations_metrics(federation, tmp_path, data_dir):
    start = time.monotonic()
    run_id, path = federation.submit("oneshot", {"min-clients": CLIENTS, **ONESHOT})
    result = federation.wait_finished(run_id, path, timeout=600)
    seconds = time.monotonic() - start
    assert len(result["clients"]) == CLIENTS and not result["rejected"]
    assert_same_metrics(result, simulate(tmp_path, data_dir, *ONESHOT_FLAGS))
    # Flower's own traffic record carries the released rows up.
    (record,) = federation.flwr("list", "fairsynth-docker", "--run-id", str(run_id))["runs"]
    assert record["network-traffic"]["inbound-bytes"] >= result["traffic"]["payload_up"] > 0
    print(f"\ncompose up {federation.up_seconds:.1f} s; one-shot run {seconds:.1f} s; "
          f"traffic {record['network-traffic']}")


def test_fedavg_three_rounds_in_containers_gives_the_simulations_metrics(federation, tmp_path,
                                                                         data_dir):
    run_id, path = federation.submit("fedavg", {"min-clients": CLIENTS, "strategy": "fedavg",
                                                "rounds": 3})
    result = federation.wait_finished(run_id, path, timeout=600)
    simulated = simulate(tmp_path, data_dir, "--strategy", "fedavg", "--rounds", "3",
                         "--allow-nonprivate")
    assert result["rounds"] == simulated["rounds"] and len(result["clients"]) == CLIENTS
    assert_same_metrics(result, simulated)


def test_a_supernode_with_an_unregistered_key_is_refused(federation, tmp_path):
    before = federation.online()
    key = tmp_path / "fresh" / "auth.key"
    generate_auth_key(key)
    for path in (key.parent, key, key.with_suffix(".pub")):
        os.chown(path, federation.uid, federation.gid)
    certs = federation.root / "deploy" / "certs" / "supernode-1"
    proc = run(["docker", "run", "--rm", "--name", f"{federation.project}_unregistered",
                "--network", "host", "--add-host", "superlink:127.0.0.1",
                "--user", f"{federation.uid}:{federation.gid}",
                "-v", f"{certs}:/certs:ro", "-v", f"{key.parent}:/fresh:ro", IMAGE,
                "flower-supernode", "--superlink", f"superlink:{federation.link_port}",
                "--root-certificates", "/certs/ca.crt",
                "--auth-supernode-private-key", "/fresh/auth.key", "--max-retries", "1",
                "--isolation", "process",
                "--superexec-auth-secret-file", "/certs/superexec.secret",
                "--host", "127.0.0.1", "--port", str(free_port())],
               timeout=180, check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert federation.online() == before == CLIENTS
    (link,) = federation.containers("superlink")
    logs = run(["docker", "logs", link], timeout=60)
    assert "No SuperNode found with the given public key" in logs.stdout + logs.stderr, (
        f"the SuperLink did not log the refusal; the SuperNode said:\n{proc.stderr[-2000:]}")


def test_the_image_and_every_service_run_as_a_non_root_user(federation):
    (image,) = json.loads(run(["docker", "image", "inspect", IMAGE], timeout=60).stdout)
    assert image["Config"]["User"] == "{}:{}".format(*IMAGE_USER)
    for info in federation.inspect(federation.containers()):
        if not info["State"]["Running"]:  # the one-shot `register` service has exited
            continue
        status = Path(f"/proc/{info['State']['Pid']}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid) == federation.uid != 0, info["Name"]


def listening_sockets(pids: list[int]) -> set[tuple[str, int]]:
    """``(address, port)`` of every TCP socket these processes listen on, from ``/proc``
    (host networking: the containers share the host's network namespace)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # the process ended meanwhile
            continue
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]  # little-endian words
            ip = socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6,
                                  b"".join(words))
            found.add((ip, int(port, 16)))
    return found


def test_every_service_listens_on_loopback_only(federation):
    sockets = listening_sockets(processes_of(federation.containers()))
    assert sockets, "no listening socket found for the federation's processes"
    assert {ip for ip, _ in sockets} <= {"127.0.0.1", "::1"}, sockets
    assert {port for _, port in sockets} >= {federation.link_port, *federation.node_ports}


def test_each_clients_data_is_mounted_only_in_its_own_clientapp(federation):
    data = federation.root / "deploy" / "data"
    mounted: dict[str, set[str]] = {}
    for info in federation.inspect(federation.containers()):
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        for mount in info["Mounts"]:
            source = Path(mount.get("Source", ""))
            if source == data or data in source.parents:
                mounted.setdefault(str(source.relative_to(data)), set()).add(service)
                assert not mount["RW"], f"{service} mounts {source} writable"
    assert mounted == {f"client-{k}": {f"clientapp-{k}"} for k in range(1, CLIENTS + 1)}


def test_a_dead_supernode_costs_the_liveness_window_not_the_timeout(federation):
    """SuperNode 3 is killed (SIGKILL: no goodbye to the SuperLink) as soon as its ClientApp
    has started on the one-shot query. The SuperLink marks it offline after 2 missed heartbeats
    and answers in its place; the server rejects it by name and proceeds with the two others,
    long before its timeout."""
    timeout = 600
    run_id, path = federation.submit("dead", {"min-clients": 2, "timeout": timeout,
                                              **ONESHOT, "iterations": 400})
    (executor,) = federation.containers("clientapp-3")
    deadline = time.monotonic() + 180
    while "flwr-clientapp" not in {s.command for p in processes_of([executor]) if (s := stat(p))}:
        assert time.monotonic() < deadline, "client 3's ClientApp did not start on the query"
        time.sleep(0.2)
    (node,) = federation.containers("supernode-3")
    run(["docker", "kill", node], timeout=60)
    killed = time.monotonic()
    result = federation.wait_finished(run_id, path, timeout=timeout + 120)
    finished = time.monotonic() - killed
    assert len(result["clients"]) == 2
    (rejected,) = result["rejected"]
    assert rejected["phase"] == "query" and "went offline" in rejected["reason"]
    (query,) = [e for e in result["exchanges"] if e["phase"] == "query"]
    print(f"\ndead SuperNode: run finished {finished:.1f} s after the kill (query exchange "
          f"{query['seconds']:.1f} s; timeout {timeout} s)")
    assert finished < LIVENESS_WINDOW + 60 < timeout


def test_down_leaves_no_container_volume_or_process(federation):
    ids = federation.containers()
    assert ids and processes_of(ids), "the federation's processes are not visible"
    federation.compose("down", "-v", "--remove-orphans", timeout=900)
    assert federation.containers() == []
    volumes = run(["docker", "volume", "ls", "-q", "--filter",
                   f"label=com.docker.compose.project={federation.project}"], timeout=60)
    assert volumes.stdout.split() == []
    assert processes_of(ids) == []
    for port in (federation.link_port, *federation.node_ports):  # every port is free again
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
