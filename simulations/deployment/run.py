"""One deployment end to end (:func:`deploy_federation`, behind ``fairsynth deploy``): the
per-client files and the credentials, the federation started (:class:`LocalFederation`), a
SuperNode with an unregistered key refused, each strategy run with ``flwr run`` and Flower's
record of it read (``flwr list --run-id``), every process stopped by its PID — also on failure
or a signal — and a summary of it all."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from clients.faults import Fault
from common.errors import ConfigError
from common.run_config import RunConfig
from simulations.deployment import DeploymentError
from simulations.deployment.client_files import ClientData, split_to_csv
from simulations.deployment.credentials import Credentials, generate_credentials
from simulations.deployment.federation import COMPLETED, LocalFederation

logger = logging.getLogger(__name__)


def run_configs(run_config: Mapping[str, object], strategies: Sequence[str], *,
                results: Path) -> dict[str, dict[str, object]]:
    """One checked run config per strategy, in order: ``run_config`` (kebab-case keys) with
    ``strategy`` set and ``results-path`` = ``results/STRATEGY.json``.

    Raises
    ------
    ConfigError
        A value that :class:`RunConfig` refuses — before any process starts.
    """
    configs = {}
    for strategy in strategies:
        mapping = {**run_config, "strategy": strategy,
                   "results-path": str(Path(results) / f"{strategy}.json")}
        configs[strategy] = RunConfig.from_mapping(mapping).to_mapping()
    return configs


def check_faults(faults: Mapping[int, Fault], clients: int) -> None:
    """Each injected fault must name one of the ``clients`` partitions."""
    for k in faults:
        if not 0 <= k < clients:
            raise ConfigError(f"--inject-fault names partition {k}; the partitions are "
                              f"0..{clients - 1}.")


def deploy_federation(*, out: Path, app: Path, run_config: Mapping[str, object],
                      strategies: Sequence[str], client_data: ClientData,
                      faults: Mapping[int, Fault] | None = None,
                      policy: Mapping[str, object] | None = None, certs: Path | None = None,
                      port: int = 0, run_timeout: float = 3600.0,
                      started: float | None = None) -> dict:
    """Split, credentials, start, run each strategy, stop; the summary.

    Parameters
    ----------
    out : Path
        Work folder: ``data/`` (the client files), ``certs/``, ``logs/``, ``flwr-home/``,
        ``results/`` (one JSON file per strategy; earlier ones are removed).
    app : Path
        The Flower app folder (:func:`simulations.deployment.flower_config.app_dir`).
    run_config : mapping
        Kebab-case run config shared by every run.
    strategies : sequence of str
        The runs to submit, in order.
    client_data : ClientData
        The dataset and its partition; client ``k`` gets the ``k``-th part.
    faults : mapping of int to Fault, optional
        Partition id → a failure that client injects on purpose (:mod:`clients.faults`).
    policy : mapping, optional
        The clients' privacy policy as node-config entries (every SuperNode's node config).
    certs : Path, optional
        Credentials from :func:`generate_credentials` to use; default: new ones in
        ``out/certs`` (replacing what is there).
    port : int
        SuperLink port (0: a free one).
    run_timeout : float
        Seconds one run may take.
    started : float, optional
        ``time.perf_counter()`` when the caller began (its checks count as preparation);
        default: now.

    Returns
    -------
    dict
        Timings, the refusal check, each run's record and result, every PID seen and those
        still alive after stopping (``pids_left``: empty when all went well).

    Raises
    ------
    KeyboardInterrupt
        On SIGINT or SIGTERM, with the signal number as its argument, after every process was
        stopped.
    """
    start = time.perf_counter() if started is None else started
    out = Path(out).resolve()
    configs = run_configs(run_config, strategies, results=out / "results")
    faults = dict(faults or {})
    check_faults(faults, client_data.clients)
    for stale in (out / "results").glob("*.json") if (out / "results").is_dir() else ():
        stale.unlink()
    data_files = list(split_to_csv(client_data, out / "data"))
    if certs:
        creds = Credentials.load(certs, clients=client_data.clients)
    else:
        creds = generate_credentials(out / "certs", clients=client_data.clients, force=True)
    prepared = time.perf_counter()
    runs: dict[str, dict] = {}
    federation = LocalFederation(workdir=out, credentials=creds, data_files=data_files,
                                 port=port, faults=faults, policy=policy)
    with federation.handling_signals():
        try:
            federation.start()
            up = time.perf_counter()
            refusal = federation.check_refusal()
            if not refusal["refused"]:
                raise DeploymentError(f"a SuperNode with an unregistered key was not refused: "
                                      f"{refusal}")
            checked = time.perf_counter()
            for strategy, mapping in configs.items():
                runs[strategy] = run_one(federation, app, strategy, mapping,
                                         timeout=run_timeout)
        finally:
            stopping = time.perf_counter()
            left = federation.stop()
    end = time.perf_counter()
    return {
        "clients": client_data.clients,
        "superlink": federation.address,
        "tls": True,
        "supernode_authentication": True,
        "isolation": "process",
        "seconds": {"prepare": prepared - start, "startup": up - prepared,
                    "refusal_check": checked - up,
                    "runs": stopping - checked, "shutdown": end - stopping,
                    "end_to_end": end - start},
        "unregistered_supernode": refusal,
        "runs": runs,
        "pids": sorted(federation.seen_pids),
        "process_groups": sorted(c.pid for c in federation.components_started),
        "pids_left": left,
        "run_config": dict(run_config),
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

