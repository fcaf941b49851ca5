"""Deployment pieces without a running federation: the compose files, the credentials, the
per-client data files, the run-config files and the shutdown of process groups.

The compose files are validated by Debian's docker-compose (v1, no engine needed) and every
Flower command in them is parsed by Flower's own argument parsers. The certificates are
checked by OpenSSL through Python's ``ssl`` module in a real TLS handshake; the client files
by the ClientApp's own reader against :func:`common.partition.partition`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_ssh_private_key,
    load_ssh_public_key,
)

from clients.client_app import load_split, read_client_file
from common import datasets, partition
from common.errors import ConfigError, DataError
from common.run_config import RunConfig
from simulations import deploy
from simulations.cli import main
from simulations.deployment.client_files import split_to_csv
from simulations.deployment.credentials import SERVICE_FILES, Credentials, generate_credentials
from simulations.deployment.federation import LocalFederation
from simulations.deployment.flower_config import CONNECTION, app_dir, parse_overrides, toml_table
from simulations.processes import pid_alive, process_group_members

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 3  # docker-compose.yml's SuperNodes


# --------------------------------------------------------------------------- compose files


def compose_config(*files: str, settings: dict[str, str] | None = None) -> dict:
    """``docker-compose -f … config``: the merged, validated configuration (no -f: what
    ``docker-compose up`` reads by default), with the FAIRSYNTH_* ``settings`` only."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is absent (apt-get install -y --no-install-recommends "
                    "docker-compose)")
    args = [exe]
    for f in files:
        args += ["-f", str(ROOT / f)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRSYNTH_")}
    proc = subprocess.run([*args, "config"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**env, **(settings or {})})
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def flower_parser(program: str) -> argparse.ArgumentParser:
    """Flower 1.41's own argument parser of ``program``."""
    if program == "flower-superlink":
        from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
        return _parse_args_run_superlink()
    if program == "flower-supernode":
        from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode
        return _parse_args_run_supernode()
    if program == "flower-superexec":
        from flwr.supercore.cli.flower_superexec import _parse_args
        return _parse_args()
    raise AssertionError(f"unexpected program {program}")


def command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def mounts(service: dict) -> dict[str, str]:
    """Container path → host path (or ``tmpfs``) of a service's volumes."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source = v.get("source", v["type"])
            target = v["target"]
        out[target] = source
    return out


def flower_services(config: dict) -> dict[str, argparse.Namespace]:
    """Each service that runs a Flower program, with its command parsed by Flower."""
    parsed = {}
    for name, service in config["services"].items():
        argv = command(service)
        if argv and argv[0].startswith("flower-"):
            parsed[name] = flower_parser(argv[0]).parse_args(argv[1:])
    return parsed


def test_secure_compose_file_validates_and_wires_tls_auth_and_data(tmp_path):
    config = compose_config()  # docker-compose.yml with docker-compose.override.yml
    assert config == compose_config("docker-compose.yml", "docker-compose.override.yml")
    services = config["services"]
    expected = {"superlink", "serverapp", "register",
                *(f"supernode-{k}" for k in range(1, CLIENTS + 1)),
                *(f"clientapp-{k}" for k in range(1, CLIENTS + 1))}
    assert set(services) == expected
    parsed = flower_services(config)
    assert set(parsed) == expected - {"register"}

    link = parsed["superlink"]
    assert not link.insecure and link.enable_supernode_auth
    assert link.isolation == "process" and not link.runtime_dependency_install
    assert link.ssl_certfile and link.ssl_keyfile and link.ssl_ca_certfile
    for k in range(1, CLIENTS + 1):
        node, execu = parsed[f"supernode-{k}"], parsed[f"clientapp-{k}"]
        assert not node.insecure and node.root_certificates and node.auth_supernode_private_key
        assert node.isolation == "process" and node.superlink == f"superlink:{link.port}"
        assert not execu.insecure and execu.root_certificates
        assert execu.runtime_api_address == f"supernode-{k}:{node.port}"
        assert execu.superexec_auth_secret_file and node.superexec_auth_secret_file
    assert parsed["serverapp"].runtime_api_address == f"superlink:{link.port}"

    # Only the SuperLink publishes a port, on loopback unless FAIRSYNTH_PUBLISH says otherwise.
    published = {n: s["ports"] for n, s in services.items() if s.get("ports")}
    assert list(published) == ["superlink"]
    (port,) = published["superlink"]
    assert str(port).startswith(f"127.0.0.1:{link.port}:{link.port}")
    # Every network but `edge` is internal, and only the SuperLink is on `edge`.
    assert {n for n, v in config["networks"].items() if not (v or {}).get("internal")} == {"edge"}
    assert [n for n, s in services.items() if "edge" in s["networks"]] == ["superlink"]
    for k in range(1, CLIENTS + 1):
        assert set(services[f"clientapp-{k}"]["networks"]) == {f"client-{k}"}

    # Client k's data is mounted read-only into its ClientApp executor and nowhere else, and
    # its SuperNode's node config points there.
    data_mounts = {(n, t, src) for n, s in services.items() for t, src in mounts(s).items()
                   if "/deploy/data/" in src}
    assert data_mounts == {(f"clientapp-{k}", "/data", str(ROOT / "deploy" / "data" /
                                                           f"client-{k}"))
                           for k in range(1, CLIENTS + 1)}
    for k in range(1, CLIENTS + 1):
        assert f"{ROOT}/deploy/data/client-{k}:/data:ro" in services[f"clientapp-{k}"]["volumes"]
        node_config = tomllib.loads(parsed[f"supernode-{k}"].node_config.replace(" ", "\n"))
        assert node_config == {"data-path": "/data/client.csv", "partition-id": k - 1}

    # Every credential a command names exists in the folder `deploy-certs` makes for that
    # service, and no service sees another's folder or the CA's key.
    creds = generate_credentials(tmp_path / "certs", clients=CLIENTS)
    for name, service in services.items():
        for target, source in mounts(service).items():
            if "/deploy/certs/" not in source:
                continue
            relative = Path(source).relative_to(ROOT / "deploy" / "certs")
            assert (creds.root / relative).exists(), (name, source)
            if name == "register":  # the CA certificate and the SuperNodes' public keys
                assert relative.as_posix() == "ca/ca.crt" or relative.name == "auth.pub"
            else:
                assert relative == Path(name) and target == "/certs", (name, source)
            if target == "/certs":
                assert relative == Path(name)
                for token in command(service):
                    if token.startswith("/certs/"):
                        assert (creds.folder(name) / token.removeprefix("/certs/")).is_file()


def test_host_override_runs_every_service_on_loopback_with_the_given_ports():
    """What CI runs (tests/test_docker.py): host networking, 127.0.0.1, distinct ports, and
    the clients' policy from FAIRSYNTH_POLICY_k — the same TLS and authentication."""
    ports = {"FAIRSYNTH_SUPERLINK_PORT": "19091", "FAIRSYNTH_SUPERNODE_1_PORT": "19094",
             "FAIRSYNTH_SUPERNODE_2_PORT": "19095", "FAIRSYNTH_SUPERNODE_3_PORT": "19096"}
    config = compose_config(
        "docker-compose.yml", "deploy/docker-compose.host.yml",
        settings={"FAIRSYNTH_BIND": "127.0.0.1", **ports,
                  "FAIRSYNTH_POLICY_2": 'privacy-nonprivate=true privacy-orders="fair-only"'})
    services = config["services"]
    names = {f"supernode-{k}" for k in range(1, CLIENTS + 1)} | {"superlink"}
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert not service.get("networks") and not service.get("ports"), name
        hosts = service["extra_hosts"]  # compose v1 prints a mapping, v2 a list
        hosts = dict(h.split(":", 1) for h in hosts) if isinstance(hosts, list) else hosts
        assert hosts == dict.fromkeys(names, "127.0.0.1"), name
    assert "networks" not in config
    parsed = flower_services(config)
    link = parsed["superlink"]
    assert (link.host, link.port) == ("127.0.0.1", 19091)
    assert link.enable_supernode_auth and link.ssl_certfile and not link.insecure
    assert parsed["serverapp"].runtime_api_address == "superlink:19091"
    for k in range(1, CLIENTS + 1):
        node = parsed[f"supernode-{k}"]
        port = int(ports[f"FAIRSYNTH_SUPERNODE_{k}_PORT"])
        assert (node.host, node.port, node.superlink) == ("127.0.0.1", port, "superlink:19091")
        assert node.auth_supernode_private_key and not node.insecure
        assert parsed[f"clientapp-{k}"].runtime_api_address == f"supernode-{k}:{port}"
        policy = ({"privacy-nonprivate": True, "privacy-orders": "fair-only"} if k == 2 else {})
        assert tomllib.loads(node.node_config.replace(" ", "\n")) == {
            "data-path": "/data/client.csv", "partition-id": k - 1, **policy}
    register = " ".join(command(services["register"]))
    assert 'address = "superlink:19091"' in register


def test_insecure_override_turns_off_tls_and_needs_no_credentials():
    config = compose_config("docker-compose.yml", "docker-compose.override.yml",
                            "deploy/docker-compose.insecure.yml")
    parsed = flower_services(config)
    assert set(parsed) == set(config["services"]) - {"register"}
    for name, args in parsed.items():
        assert args.insecure, name
        assert not getattr(args, "enable_supernode_auth", False)
        assert not getattr(args, "auth_supernode_private_key", None)
    for name, service in config["services"].items():
        assert not any("/deploy/certs/" in src for src in mounts(service).values()), name
        assert "/certs" not in " ".join(command(service)), name
    assert config["services"]["register"]["entrypoint"] == ["true"]
    assert config["services"]["superlink"]["ports"] == ["127.0.0.1:9091:9091/tcp"]


# --------------------------------------------------------------------------- credentials


def tls_handshake(creds: Credentials, service: str, server_hostname: str) -> None:
    """Serve ``service``'s certificate on 127.0.0.1 and connect, trusting only the CA."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    folder = creds.folder(service)
    server_ctx.load_cert_chain(folder / "server.pem", folder / "server.key")
    client_ctx = ssl.create_default_context(cafile=str(creds.ca_cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve():
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                    tls.sendall(b"x")
        finally:
            thread.join(timeout=5)


def test_credentials_pass_a_tls_handshake_for_their_names_only(tmp_path):
    creds = generate_credentials(tmp_path, clients=2, hostnames=["fl.example.org",
                                                                "10.1.2.3"])
    for name in ("superlink", "localhost", "127.0.0.1", "fl.example.org", "10.1.2.3"):
        tls_handshake(creds, "superlink", name)
    for name in ("supernode-2", "localhost", "127.0.0.1"):
        tls_handshake(creds, "supernode-2", name)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(creds, "supernode-2", "superlink")  # a SuperNode cannot pose as it
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(creds, "superlink", "evil.example.org")
    other = generate_credentials(tmp_path / "other", clients=1)
    with pytest.raises(ssl.SSLCertVerificationError):  # another federation's CA: no trust
        tls_handshake(_with_ca(creds, other.ca_cert, tmp_path / "mixed"), "superlink",
                      "superlink")


def _with_ca(creds: Credentials, ca_cert: Path, root: Path) -> Credentials:
    """``creds``' SuperLink certificate with a foreign CA as the trust anchor."""
    shutil.copytree(creds.folder("superlink"), root / "superlink")
    (root / "ca").mkdir(parents=True)
    shutil.copy(ca_cert, root / "ca" / "ca.crt")
    return Credentials(root, creds.clients)


def test_supernode_keys_are_flower_readable_pairs_and_secrets_pair_up(tmp_path):
    creds = generate_credentials(tmp_path, clients=3)
    publics = set()
    for k in range(1, 4):
        private = load_ssh_private_key(creds.auth_key(k).read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)  # what flower-supernode loads
        public = load_ssh_public_key(creds.auth_pub(k).read_bytes())
        assert public.public_numbers() == private.public_key().public_numbers()
        publics.add(creds.auth_pub(k).read_text())
        assert creds.auth_key(k).stat().st_mode & 0o777 == 0o600
    assert len(publics) == 3
    pairs = [("superlink", "serverapp"), *((f"supernode-{k}", f"clientapp-{k}")
                                         for k in range(1, 4))]
    secrets = [(creds.folder(a) / "superexec.secret").read_bytes() for a, _ in pairs]
    for (_, b), secret in zip(pairs, secrets):
        copy = creds.folder(b) / "superexec.secret"
        assert copy.read_bytes() == secret and len(secret) == 64
        assert copy.stat().st_mode & 0o77 == 0
    assert len(set(secrets)) == len(pairs)
    assert not (creds.folder("superlink") / "ca.key").exists()
    assert Credentials.load(tmp_path, clients=3) == creds


def test_credentials_refuse_to_overwrite_and_name_what_is_missing(tmp_path):
    generate_credentials(tmp_path, clients=1)
    with pytest.raises(ConfigError, match="--force"):
        generate_credentials(tmp_path, clients=1)
    generate_credentials(tmp_path, clients=1, force=True)
    with pytest.raises(DataError, match=r"supernode-2.*deploy-certs --out .* --clients 2"):
        Credentials.load(tmp_path, clients=2)
    with pytest.raises(ConfigError, match="≥ 1"):
        generate_credentials(tmp_path / "x", clients=0)


def test_deploy_certs_command(tmp_path, capsys):
    assert main(["deploy-certs", "--out", str(tmp_path), "--clients", "2"]) == 0
    assert "supernode-*/auth.pub" in capsys.readouterr().out
    Credentials.load(tmp_path, clients=2)
    assert main(["deploy-certs", "--out", str(tmp_path), "--clients", "2"]) == 2  # no --force


# --------------------------------------------------------------------------- client files


def split_args(**kw) -> argparse.Namespace:
    defaults = dict(dataset="synthetic", data_dir=None, sensitive=None, csv=None,
                    privileged=None, label=None, favourable=None, drop=[], categorical=[],
                    clients=3, partition="iid", alpha=0.5, partition_column=None, seed=0)
    return argparse.Namespace(**{**defaults, **kw})


def split_config(args: argparse.Namespace) -> RunConfig:
    """The run configuration of ``fairsynth deploy-split``'s flags (``clients`` is not one; a
    command without ``--order`` runs no DP generator: ``options.ORDER_WITHOUT_FLAG``)."""
    return RunConfig.from_mapping(None, order="fair-only",
                                  **{k: "" if v is None else v for k, v in vars(args).items()
                                     if k not in ("clients", "drop", "categorical")})


def check_client_files(args: argparse.Namespace, tmp_path: Path) -> dict[Path, int]:
    """Each file, read by the ClientApp, is exactly its partition; together they are all rows."""
    written = split_to_csv(deploy.client_data(split_config(args), args.clients), tmp_path)
    data = datasets.load(args.dataset, root=args.data_dir, sensitive=args.sensitive,
                         seed=args.seed) if not args.csv else None
    if args.csv:
        data = datasets.load_csv(args.csv, sensitive=args.sensitive, privileged=args.privileged,
                                 label=args.label, favourable=args.favourable)
    parts = partition.partition(data, clients=args.clients, method=args.partition,
                                seed=args.seed, alpha=args.alpha, column=args.partition_column)
    config = RunConfig.from_mapping({"dataset": args.dataset, "sensitive": args.sensitive or "",
                                     "csv": args.csv or "", "privileged": args.privileged or "",
                                     "label": args.label or "",
                                     "favourable": args.favourable or "",
                                     "order": "fair-only"})  # no declared schema: not private
    assert [p.name for p in written] == ["client.csv"] * args.clients
    for k, (path, part) in enumerate(zip(written, parts), start=1):
        assert path.parent.name == f"client-{k}"
        got = read_client_file(path, config)
        np.testing.assert_array_equal(got.to_array(), part.to_array())
        assert written[path] == len(part)
    assert sum(written.values()) == len(data)
    return written


def test_law_school_client_files_are_raw_rows_of_their_partition(tmp_path, data_dir):
    args = split_args(dataset="law_school", data_dir=str(data_dir), partition="dirichlet")
    written = check_client_files(args, tmp_path)
    source = pd.read_csv(data_dir / "law_school_clean.csv")
    files = [pd.read_csv(p) for p in written]
    assert all(list(f.columns) == list(source.columns) for f in files)  # every column kept
    union = pd.concat(files).sort_values(list(source.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(union, source.sort_values(list(source.columns))
                                  .reset_index(drop=True))


def test_adult_client_files_are_headerless_like_adult_data(tmp_path, data_dir):
    if not (data_dir / "adult.data").is_file():
        pytest.skip("adult.data is not in the data folder")
    args = split_args(dataset="adult", data_dir=str(data_dir), clients=2, seed=4)
    written = check_client_files(args, tmp_path)
    first = next(iter(written)).read_text().splitlines()[0].split(",")
    assert len(first) == len(datasets.ADULT_COLUMNS) and first[-1] in ("<=50K", ">50K")


def test_synthetic_and_own_csv_client_files(tmp_path):
    check_client_files(split_args(seed=5), tmp_path / "synthetic")
    own = tmp_path / "own.csv"
    frame = datasets.make_synthetic(300, seed=1).features.assign(
        grp=np.where(np.arange(300) % 3 == 0, "a", "b"), out=np.arange(300) % 2)
    frame.to_csv(own, index=False)
    written = check_client_files(
        split_args(csv=str(own), sensitive="grp", privileged="a", label="out",
                   favourable="1", clients=2, partition="dirichlet", seed=2), tmp_path / "own")
    assert list(pd.read_csv(next(iter(written))).columns) == list(frame.columns)


def test_a_client_with_its_file_and_index_gets_the_simulation_split(tmp_path):
    args = split_args(partition="dirichlet", seed=2)
    written = list(split_to_csv(deploy.client_data(split_config(args), args.clients), tmp_path))
    config = RunConfig.from_mapping({"dataset": "synthetic", "partition": "dirichlet",
                                     "seed": 2})
    simulated = partition.federated_split(datasets.load("synthetic", seed=2), clients=3,
                                          method="dirichlet", seed=2)
    for k, (path, sim) in enumerate(zip(written, simulated)):
        deployed = load_split({"data-path": str(path), "partition-id": k}, config)
        simulation = load_split({"partition-id": k, "num-partitions": 3}, config)
        for got in (deployed, simulation):
            np.testing.assert_array_equal(got.train.to_array(), sim.train.to_array())
            np.testing.assert_array_equal(got.test.to_array(), sim.test.to_array())


def test_deploy_split_command(tmp_path, capsys):
    assert main(["deploy-split", "--dataset", "synthetic", "--clients", "2", "--seed", "1",
                 "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [str(tmp_path / f"client-{k}" / "client.csv")
                                                  for k in (1, 2)]
    assert sum(int(line.split()[1]) for line in lines) == 4000  # make_synthetic's rows


# --------------------------------------------------------------------------- config files


def test_run_config_file_is_what_flwr_reads(tmp_path):
    from flwr.common.config import parse_config_args

    values = {"strategy": "fedavg", "rho": 10.0, "iterations": 30, "fairfed-reweigh": False,
              "results-path": str(tmp_path / 'a b "quoted".json'),
              "generator-options": '{"epochs": 2}', "delta": 1e-07, "csv": "naïve.csv"}
    path = tmp_path / "overrides.toml"
    path.write_text(toml_table(values))
    assert parse_config_args([str(path)]) == values  # what `flwr run --run-config FILE` reads
    with pytest.raises(ConfigError, match="not a bool, number or string"):
        toml_table({"rounds": [1, 2]})


def test_parse_overrides_reads_toml_values_and_keeps_bare_words():
    assert parse_overrides(["iterations=50", "rho=1e3", "fairfed-reweigh=false",
                            "order=fair-only", 'csv="a b.csv"']) == {
        "iterations": 50, "rho": 1000.0, "fairfed-reweigh": False, "order": "fair-only",
        "csv": "a b.csv"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["iterations"])


def test_app_dir_is_this_tree_and_rejects_folders_without_a_flower_app(tmp_path):
    assert app_dir(None) == ROOT
    with pytest.raises(ConfigError, match="--app"):
        app_dir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"\[tool.flwr.app\]"):
        app_dir(tmp_path)


# --------------------------------------------------------------------------- shutdown

STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_stop_kills_process_groups_that_ignore_sigterm(tmp_path):
    fed = LocalFederation(workdir=tmp_path, credentials=Credentials(tmp_path, 1),
                          data_files=[tmp_path / "client.csv"], grace=1.0)
    fed.logs.mkdir(parents=True)
    polite = fed.spawn("polite", [sys.executable, "-c", "import time; time.sleep(120)"])
    stubborn = fed.spawn("stubborn", [sys.executable, "-c", STUBBORN])
    deadline = time.monotonic() + 30
    while not stubborn.log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(stubborn.log.read_text().split()[0])
    assert pid_alive(child)
    assert process_group_members({stubborn.pid}).keys() == {stubborn.pid, child}
    start = time.monotonic()
    assert fed.stop() == []
    assert time.monotonic() - start < 10
    for pid in (polite.pid, stubborn.pid, child):
        assert not pid_alive(pid, groups={polite.pid, stubborn.pid})
    assert polite.popen.returncode == -signal.SIGTERM
    assert stubborn.popen.returncode == -signal.SIGKILL
    assert child in fed.seen_pids


def test_failure_report_names_each_clients_last_error(tmp_path):
    fed = LocalFederation(workdir=tmp_path, credentials=Credentials(tmp_path, 1),
                          data_files=[tmp_path / "client.csv"], grace=1.0)
    fed.logs.mkdir(parents=True)
    fed.flwr_home.mkdir()
    crash = ("import sys; print('INFO: starting'); "
             "sys.exit(\"ValueError: stage 2 needs 10 rows, got 3\")")
    client = fed.spawn("clientapp-1", [sys.executable, "-c", crash])
    client.popen.wait(timeout=30)
    report = fed.failure_report(12345)  # no SuperLink runs: flwr log says so
    assert "ServerApp log" in report
    assert f"clientapp-1: ValueError: stage 2 needs 10 rows, got 3  (full log: {client.log})" \
        in report
    assert fed.stop() == []


def test_credential_folders_hold_exactly_their_files(tmp_path):
    creds = generate_credentials(tmp_path, clients=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ca", *creds.services()])
    assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == ["ca.crt", "ca.key"]
    for service in creds.services():
        files = sorted(p.name for p in creds.folder(service).iterdir())
        assert files == sorted(SERVICE_FILES[service.split("-")[0]]), service
        assert (creds.folder(service) / "ca.crt").read_bytes() == creds.ca_cert.read_bytes()


@pytest.mark.slow
def test_compose_register_script_and_healthcheck_against_a_real_superlink(tmp_path):
    """docker-compose.yml's key registration and health check, run as they are written (only
    the host names and paths of the containers replaced) against a SuperLink with TLS and
    authentication: fresh keys are registered, a second start accepts them as registered
    before, a malformed key fails the service."""
    services = compose_config("docker-compose.yml")["services"]
    creds = generate_credentials(tmp_path / "certs", clients=CLIENTS)
    keys = tmp_path / "keys"
    keys.mkdir()
    for k in range(1, CLIENTS + 1):
        shutil.copy(creds.auth_pub(k), keys / f"supernode-{k}.pub")
    fed = LocalFederation(workdir=tmp_path / "work", credentials=creds,
                          data_files=[tmp_path / "client.csv"] * CLIENTS)
    try:
        fed.start_superlink()
        host = {"superlink:9091": fed.address, "localhost:9091": fed.address,
                "/certs/ca.crt": str(creds.ca_cert), "/keys/": f"{keys}/"}

        def as_host(text: str) -> str:
            for container, here in host.items():
                text = text.replace(container, here)
            return text.replace("$$", "$")

        health = [as_host(a) for a in services["superlink"]["healthcheck"]["test"][1:]]
        assert subprocess.run(health, timeout=60).returncode == 0
        script = as_host(services["register"]["command"][0])
        env = {**fed.env, "FLWR_HOME": str(tmp_path / "register-home")}

        def register() -> subprocess.CompletedProcess:
            return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True,
                                  text=True, timeout=120)

        first, second = register(), register()
        assert first.returncode == 0 and first.stdout.count("registered /") == CLIENTS
        assert second.returncode == 0 and second.stdout.count("registered before") == CLIENTS
        nodes = fed.flwr("supernode", "list", CONNECTION)["nodes"]
        assert [n["status"] for n in nodes] == ["registered"] * CLIENTS
        (keys / "zz-malformed.pub").write_text("not a key\n")
        assert register().returncode != 0
    finally:
        assert fed.stop() == []


def test_signals_raise_but_wait_while_a_process_is_being_recorded(tmp_path):
    fed = LocalFederation(workdir=tmp_path, credentials=Credentials(tmp_path, 1),
                          data_files=[tmp_path / "client.csv"], grace=1.0)
    fed.logs.mkdir(parents=True)
    before = signal.getsignal(signal.SIGTERM)
    reached = []
    with pytest.raises(KeyboardInterrupt) as interrupted:
        with fed.handling_signals():
            with fed._holding_signals():  # as while Popen runs and its PID is recorded
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                reached.append("recorded")
    assert reached == ["recorded"] and interrupted.value.args == (signal.SIGTERM,)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        with fed.handling_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            reached.append("not reached")
    assert reached == ["recorded"] and interrupted.value.args == (signal.SIGTERM,)
    assert signal.getsignal(signal.SIGTERM) is before
    assert fed.stop() == []
