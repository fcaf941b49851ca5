"""``fairsynth deploy``: the federation as separate processes on 127.0.0.1, with TLS and
SuperNode authentication — the topology of ``docker-compose.yml``, without containers. The
runtime is :mod:`simulations.deployment`.

Sub-commands:

* ``fairsynth deploy-certs`` — a CA, the TLS certificates, the SuperNode keys and the SuperExec
  secrets, one folder per service
  (:func:`~simulations.deployment.credentials.generate_credentials`);
* ``fairsynth deploy-split`` — one CSV per client, in the dataset's own format
  (:func:`~simulations.deployment.client_files.split_to_csv`);
* ``fairsynth deploy`` — both, then starts everything, runs the one-shot job and the FedAvg
  baseline with ``flwr run``, reads Flower's recorded traffic of each run, stops every process
  by its PID (also on failure or a signal) and writes a JSON summary
  (:func:`~simulations.deployment.run.deploy_federation`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from clients.faults import parse_assignments
from common.jsonio import write_json
from common.run_config import RunConfig
from simulations import options, report
from simulations.deployment.client_files import ClientData, split_to_csv
from simulations.deployment.credentials import CERT_DAYS, generate_credentials
from simulations.deployment.flower_config import app_dir, parse_overrides
from simulations.deployment.run import check_faults, deploy_federation, run_configs

STRATEGIES_DEFAULT = ("oneshot", "fedavg")


def register(sub) -> None:
    parser = sub.add_parser(
        "deploy", help="SuperLink + one SuperNode per client as processes on 127.0.0.1 (TLS, "
        "node authentication); runs the one-shot job and FedAvg with `flwr run`")
    options.add_clients(parser)
    options.add_settings(parser, skip=("strategy", "results_path"))
    options.add_policy(parser, nonprivate=True)
    options.add_fault(parser)
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
    options.add_clients(split)
    options.add_settings(split, ("data",), include=("seed",))
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
    options.check_clients(args.clients)
    for path, rows in split_to_csv(client_data(options.run_config(args), args.clients),
                                   args.out).items():
        print(f"{path}  {rows} rows")
    return 0


def client_data(config: RunConfig, clients: int) -> ClientData:
    """The dataset and partition that ``config`` names, loaded as the other commands load
    them."""
    return ClientData(data=options.load_data(config), dataset=config.dataset, clients=clients,
                      data_dir=config.data_dir or None, csv=config.csv or None,
                      partition=config.partition, alpha=config.alpha,
                      partition_column=config.partition_column or None, seed=config.seed)


def _deploy(args: argparse.Namespace) -> dict:
    """Check the flags (the run configs and what every client would fail on) before any file
    is written, then deploy; the summary."""
    from simulations.engine import preflight

    start = time.perf_counter()
    options.check_clients(args.clients)
    out = Path(args.out).resolve()
    app = app_dir(args.app)
    config = options.run_config(args, **options.min_clients_default(args))
    base = {**config.to_mapping(), **parse_overrides(args.run_config)}
    configs = run_configs(base, args.strategies, results=out / "results")
    rules = options.policy(args)
    for strategy in args.strategies:
        preflight(RunConfig.from_mapping(configs[strategy]), args.clients, rules)
    faults = parse_assignments(args.inject_fault)
    check_faults(faults, args.clients)
    return deploy_federation(out=out, app=app, run_config=base, strategies=args.strategies,
                             client_data=client_data(RunConfig.from_mapping(base), args.clients),
                             faults=faults, policy=rules.to_node_config(), certs=args.certs,
                             port=args.port,
                             run_timeout=args.run_timeout, started=start)


def run(args: argparse.Namespace) -> int:
    try:
        summary = _deploy(args)
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
    print(report.deployment_table(summary).markdown())
    for name, r in summary["runs"].items():
        for rej in r.get("rejected", []):
            print(f"  {name}: node {rej['node_id']} skipped ({rej['phase']}): {rej['reason']}")
    if summary["pids_left"]:
        print(f"WARNING: processes still alive: {summary['pids_left']}")
