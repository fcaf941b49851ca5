"""The in-process simulation runtime: one federation on Flower's simulation engine (Ray).

:func:`simulate` runs the package's ServerApp and ClientApp under
``flwr.simulation.run_simulation`` (Ray backend, one CPU per client, clients in parallel up to
the machine's cores), with the :class:`RunConfig` handed to both apps as an object (the
engine's ``context.run_config`` is empty). :func:`preflight` checks, before the runtime
starts, what every client would fail on.

By default the engine starts its own Ray, inside this process tree, and stops it at the end.
Given the address of an existing Ray cluster (``ray_address``, or the ``RAY_ADDRESS``
environment variable), it connects to that cluster instead (:func:`connect_ray`): the
ClientApps then run as actors on the cluster's nodes, one CPU each, and the cluster keeps
running afterwards. Every node needs the same Python environment and the data at the same
path; the driver passes ``PYTHONPATH`` and ``FAIRSYNTH_DATA_DIR`` to the actors.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Mapping

from clients.client_app import make_client_app
from clients.faults import Fault
from clients.node_data import NUM_PARTITIONS, PARTITION_ID, load_split
from clients.policy import PrivacyPolicy
from clients.synthesizers import make_synthesizer
from common.datasets import DATA_ENV
from common.errors import ConfigError, FairsynthError, PolicyError
from common.run_config import RunConfig
from server.result import FederationResult
from server.server_app import check_run, make_server_app
from simulations import processes

logger = logging.getLogger(__name__)

#: Environment for the Flower/Ray runtime: no telemetry or update checks, a private FLWR_HOME,
#: and Ray's accelerator FutureWarning switched off (warnings are errors under pytest).
RUNTIME_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def preflight(config: RunConfig, clients: int, policy: PrivacyPolicy | None = None) -> None:
    """Fail fast, before the runtime starts, on what every client would fail on: the server's
    flow, the clients' privacy policy, the client synthesizer and its options, and each
    client's data (the split is read through the clients' own loader,
    :func:`clients.node_data.load_split`)."""
    check_run(config)
    try:
        (policy or PrivacyPolicy()).check_run(config)
    except PolicyError as exc:
        raise ConfigError(f"the clients would refuse this run: {exc} Change the clients' "
                          "policy (--allow-orders, --allow-epsilon, --allow-delta, "
                          "--allow-nonprivate) or the run.") from None
    if clients < 1:
        raise ConfigError(f"--clients must be ≥ 1, got {clients}.")
    if config.min_clients > clients:
        raise ConfigError(
            f"min-clients = {config.min_clients} exceeds the {clients} clients; lower it."
        )
    synthesizer = make_synthesizer(config) if config.strategy == "oneshot" else None
    measure = config.measure if config.strategy != "fedavg" else "sp"
    for k in range(clients):
        split = load_split({PARTITION_ID: k, NUM_PARTITIONS: clients}, config)
        if k == 0:
            split.train.check_measure(measure)
        if synthesizer is not None:
            synthesizer.check(split.train)


class StuckClientStopper:
    """Ends ClientApp calls that are still running after the ServerApp has finished.

    Flower's simulation runtime waits for every ClientApp call in flight before it shuts down,
    so one that never returns (a hung client, which the server has already given up on after
    its ``timeout``) would keep the simulation from ending. Once the server is done, the runtime
    gets ``grace`` seconds to stop by itself; then the Ray actors still busy with a call
    (process title ``ray::ClientAppActor.run``, below this process) are killed. Each such call
    then ends as a failed message, and the runtime stops as usual.
    """

    def __init__(self, grace: float = 2.0) -> None:
        self.grace = grace
        self._timer: threading.Timer | None = None
        self._flower_level: int | None = None

    def server_done(self, *_: object) -> None:
        self._timer = threading.Timer(self.grace, self._stop)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        """Stop the timer and give Flower's logger back its level."""
        if self._timer is not None:
            self._timer.cancel()
        if self._flower_level is not None:
            logging.getLogger("flwr").setLevel(self._flower_level)

    def _stop(self) -> None:
        pids = [pid for pid in processes.descendants(os.getpid())
                if processes.title(pid).startswith("ray::ClientAppActor.run")]
        if not pids:
            return
        logger.warning("%d ClientApp call(s) still running %g s after the server finished "
                       "(a hung client); stopping them.", len(pids), self.grace)
        flower = logging.getLogger("flwr")  # the runtime reports each stopped call as an error
        self._flower_level = flower.level
        flower.setLevel(logging.CRITICAL)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def ray_address(explicit: str | None = None) -> str | None:
    """The Ray cluster to run on: ``explicit``, else ``$RAY_ADDRESS``, else None (embedded)."""
    return explicit or os.environ.get("RAY_ADDRESS") or None


def connect_ray(address: str, *, verbose: bool = False) -> dict:
    """Connect this process to the existing Ray cluster at ``address``; returns what it is
    (address, nodes, total resources). Flower's Ray backend then uses this connection."""
    import ray

    paths = [p for p in [*sys.path, os.environ.get("PYTHONPATH", "")] if p]
    env = {**RUNTIME_ENV, "PYTHONPATH": os.pathsep.join(paths)}
    if os.environ.get(DATA_ENV):
        env[DATA_ENV] = os.environ[DATA_ENV]
    fix = ("start one with `ray start --head`, or drop --ray-address (and RAY_ADDRESS) to "
           "use the embedded engine.")
    host, _, port = address.rpartition(":")
    if host and port.isdigit():  # Ray itself would wait for minutes on a closed port
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except OSError as exc:
            raise ConfigError(f"cannot connect to the Ray cluster at {address!r} ({exc}); "
                              + fix) from None
    try:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=verbose,
                 logging_level="INFO" if verbose else "ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r} ({exc}); "
                          + fix) from None
    resources = {k: float(v) for k, v in ray.cluster_resources().items()
                 if not k.startswith("node:")}
    return {"ray_address": address, "embedded": False,
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "resources": resources}


def simulate(config: RunConfig, *, clients: int, verbose: bool = False,
             faults: Mapping[int, Fault] | None = None,
             policy: PrivacyPolicy | None = None,
             address: str | None = None) -> FederationResult:
    """Run one federation in-process; returns the server's result.

    Parameters
    ----------
    config : the run configuration (every app gets this object).
    clients : number of SuperNodes ``K`` (node ``k`` holds partition ``k``).
    verbose : let Ray forward the clients' logs.
    faults : partition id → a failure that node injects on purpose (:mod:`clients.faults`).
    policy : the privacy policy every client applies (:mod:`clients.policy`); None: the
        clients' default (private orders, ε ≤ 1, no non-private handlers).
    address : an existing Ray cluster to run on (:func:`ray_address`); None: the embedded one.
        The result's ``runtime`` says which ran, with the cluster's resources.

    Raises
    ------
    FairsynthError
        The server's own error when the run fails (e.g. fewer than ``min-clients`` valid
        replies), so that the caller sees its message.
    """
    from flwr.simulation import run_simulation

    policy = policy or PrivacyPolicy()
    address = ray_address(address)
    preflight(config, clients, policy)
    for k in faults or {}:
        if not 0 <= k < clients:
            raise ConfigError(f"--inject-fault names partition {k}; the partitions are "
                              f"0..{clients - 1}.")
    results: list[FederationResult] = []
    errors: list[FairsynthError] = []
    stopper = StuckClientStopper()
    for key, value in RUNTIME_ENV.items():
        os.environ.setdefault(key, value)
    with tempfile.TemporaryDirectory(prefix="fairsynth-flwr-") as home:
        os.environ.setdefault("FLWR_HOME", home)
        # A ClientApp process that dies is restarted by Ray (max_restarts); without it, the dead
        # actor would stay in Flower's pool and fail every later message sent to it.
        cpus = max(1, min(clients, os.cpu_count() or 1))
        backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0, "max_restarts": 4},
                   "init_args": {"num_cpus": cpus, "log_to_driver": verbose,
                                 "logging_level": "INFO" if verbose else "ERROR"}}
        if address:  # Flower's backend finds Ray initialised and uses this connection
            runtime = connect_ray(address, verbose=verbose)
        else:
            runtime = {"ray_address": None, "embedded": True, "nodes": 1,
                       "resources": {"CPU": float(cpus)}}
        start = time.perf_counter()

        def done(result: FederationResult) -> None:
            results.append(result)
            stopper.server_done()

        def failed(error: FairsynthError) -> None:
            errors.append(error)
            stopper.server_done()

        try:
            run_simulation(server_app=make_server_app(config, on_result=done, on_error=failed),
                           client_app=make_client_app(config, faults=faults, policy=policy),
                           num_supernodes=clients, backend_config=backend)
        finally:
            stopper.cancel()
            if address:
                import ray

                ray.shutdown()  # disconnects; the cluster keeps running
        logger.info("simulation finished in %.1f s", time.perf_counter() - start)
        if os.environ.get("FLWR_HOME") == home:
            del os.environ["FLWR_HOME"]
    if errors:
        raise errors[0]
    if not results:
        raise ConfigError("the simulation ended without a result; rerun with -v for the log.")
    return dataclasses.replace(results[0], runtime=runtime)


def quiet_flower(verbose: int) -> None:
    """Flower logs to its own console handler: show its lines with ``-v`` only (without, its
    warnings are the deprecation notice of ``run_simulation`` and the switched-off per-round
    evaluation, and its errors the tracebacks of failed clients, which the run's summary
    names with their reasons), and stop its records from reaching the root handler a second
    time."""
    from flwr.common.logger import update_console_handler

    update_console_handler(level=logging.DEBUG if verbose > 1 else
                           logging.INFO if verbose else logging.CRITICAL,
                           timestamps=False, colored=True)
    logging.getLogger("flwr").propagate = False
