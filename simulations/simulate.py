"""``fairsynth simulate``: one federation run on Flower's in-process simulation engine.

The ServerApp and ClientApp of the package run under ``flwr.simulation.run_simulation``
(Ray backend, one CPU per client, clients in parallel up to the machine's cores), with the run
configuration passed to both apps (the engine's ``context.run_config`` is empty). Default: the
paper's setup — Law School, 2 clients, race, SP, ρ = 10, fair-then-private, ε = 1, one shot.
Prints a results table and writes ``DIR/results.json`` (``--out``, default ``runs/simulate``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clients.client_app import load_dataset, make_client_app
from clients.faults import Fault, parse_assignments
from clients.pipeline import pipeline_config
from common import partition
from common.errors import ConfigError, FairsynthError
from common.run_config import MODELS, STRATEGIES, RunConfig
from server.result import FederationResult
from server.server_app import check_run, make_server_app
from simulations import options, processes
from simulations.results import write_json

logger = logging.getLogger(__name__)

#: Environment for the Flower/Ray runtime: no telemetry or update checks, a private FLWR_HOME,
#: and Ray's accelerator FutureWarning switched off (warnings are errors under pytest).
RUNTIME_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def register(sub) -> None:
    parser = sub.add_parser("simulate", help="one federation run on Flower's simulation engine")
    options.add_data_arguments(parser)
    options.add_stage1_arguments(parser, sweep=False)
    add_stage2_arguments(parser)
    add_federation_arguments(parser)
    add_fault_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("runs/simulate"),
                        help="output folder (default: runs/simulate)")
    parser.set_defaults(func=run)


def add_stage2_arguments(parser: argparse.ArgumentParser) -> None:
    d = RunConfig()
    g = parser.add_argument_group("stage 2 (differentially private generator)")
    g.add_argument("--order", default=d.order,
                   help=f"client pipeline order (default: {d.order})")
    g.add_argument("--epsilon", type=float, default=d.epsilon, help="privacy budget ε")
    g.add_argument("--delta", type=float, default=None, help="δ (default: 1/(N·√N))")
    g.add_argument("--stage2-fraction", type=float, default=d.stage2_fraction,
                   help="released rows Ñ₂/N (paper: 1.0 and 0.1)")
    g.add_argument("--generator", default=d.generator, help="DP generator name")
    g.add_argument("--generator-options", default="",
                   help="the generator's own options as a JSON object")


def add_federation_arguments(parser: argparse.ArgumentParser, *, strategy: bool = True) -> None:
    d = RunConfig()
    g = parser.add_argument_group("federation and server model")
    if strategy:
        g.add_argument("--strategy", default=d.strategy, choices=STRATEGIES,
                       help="one-shot scheme or a baseline (default: oneshot)")
    g.add_argument("--model", default=d.model, choices=MODELS,
                   help="server model (default: logistic)")
    g.add_argument("--mlp-hidden", default=d.mlp_hidden, help="MLP hidden widths, e.g. 320,320")
    g.add_argument("--mlp-epochs", type=int, default=d.mlp_epochs,
                   help="server-side MLP epochs (one-shot)")
    g.add_argument("--rounds", type=int, default=d.rounds, help="FedAvg/FairFed rounds R")
    g.add_argument("--local-epochs", type=int, default=d.local_epochs,
                   help="local epochs per round")
    g.add_argument("--local-lr", type=float, default=d.local_lr, help="local SGD step size")
    g.add_argument("--local-batch-size", type=int, default=d.local_batch_size)
    g.add_argument("--fairfed-beta", type=float, default=d.fairfed_beta, help="FairFed's β")
    g.add_argument("--no-fairfed-reweigh", action="store_true",
                   help="FairFed without local reweighing")
    g.add_argument("--min-clients", type=int, default=None,
                   help="fewest valid replies a round may keep (default: all clients)")
    g.add_argument("--max-rows", type=int, default=d.max_rows, help="row cap of one reply")
    g.add_argument("--timeout", type=float, default=d.timeout,
                   help="seconds to wait for the replies of one exchange")


def add_fault_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inject-fault", action="append", default=[], metavar="K:KIND[@PHASE]",
                        help="make the client of partition K fail on purpose (testing): KIND "
                             "raise, hang or die; PHASE query (default), train or evaluate; "
                             "repeatable")


def run_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The kebab-case run configuration that the command-line flags describe."""
    if args.clients < 1:
        raise ConfigError(f"--clients must be ≥ 1, got {args.clients}: a federation needs at "
                          "least one client.")
    mapping = {
        "dataset": args.dataset, "data-dir": args.data_dir or "",
        "sensitive": args.sensitive or "", "csv": args.csv or "",
        "privileged": args.privileged or "", "label": args.label or "",
        "favourable": args.favourable or "", "drop": ",".join(args.drop),
        "categorical": ",".join(args.categorical),
        "partition": args.partition, "alpha": args.alpha,
        "partition-column": args.partition_column or "", "seed": args.seed,
        "order": args.order, "measure": args.measure, "rho": args.rho,
        "tolerance": args.tolerance or 0.0, "lam-in": args.lam_in, "lam-out": args.lam_out,
        "lr": args.lr, "iterations": args.iterations, "stage1-fraction": args.stage1_fraction,
        "solver": args.solver, "anchor": args.anchor, "keep-moments": args.keep_moments,
        "lam-server": args.lam_server,
        "epsilon": args.epsilon, "delta": args.delta or 0.0,
        "stage2-fraction": args.stage2_fraction, "generator": args.generator,
        "generator-options": args.generator_options,
        "model": args.model, "mlp-hidden": args.mlp_hidden, "mlp-epochs": args.mlp_epochs,
        "rounds": args.rounds, "local-epochs": args.local_epochs, "local-lr": args.local_lr,
        "local-batch-size": args.local_batch_size, "fairfed-beta": args.fairfed_beta,
        "fairfed-reweigh": not args.no_fairfed_reweigh,
        "min-clients": args.min_clients or args.clients, "max-rows": args.max_rows,
        "timeout": args.timeout,
    }
    if getattr(args, "strategy", None):
        mapping["strategy"] = args.strategy
    return mapping


def check_setup(config: RunConfig, clients: int) -> None:
    """Fail fast, before the runtime starts, on what every client would fail on."""
    if clients < 1:
        raise ConfigError(f"--clients must be ≥ 1, got {clients}.")
    if config.min_clients > clients:
        raise ConfigError(
            f"min-clients = {config.min_clients} exceeds the {clients} clients; lower it."
        )
    check_run(config)
    data = load_dataset(config)
    data.check_measure(config.measure if config.strategy != "fedavg" else "sp")
    splits = partition.federated_split(data, clients=clients, method=config.partition,
                                       seed=config.seed, alpha=config.alpha,
                                       column=config.partition_column or None,
                                       test_fraction=config.test_fraction)
    if config.strategy == "oneshot":
        pipeline = pipeline_config(config)
        for split in splits:
            pipeline.check_delta(len(split.train))


class StuckClientStopper:
    """Ends ClientApp calls that are still running after the ServerApp has finished.

    Flower's simulation runtime waits for every ClientApp call in flight before it shuts down,
    so one that never returns (a hung client, which the server has already given up on after
    its ``timeout``) would keep the simulation from ending. Once the server is done, the runtime
    gets ``grace`` seconds to stop by itself; then the Ray actors
    still busy with a call (process title ``ray::ClientAppActor.run``, below this process) are
    killed. Each such call then ends as a failed message, and the runtime stops as usual.
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


def simulate(run_config: Mapping[str, Any], *, clients: int, verbose: bool = False,
             faults: Mapping[int, Fault] | None = None) -> FederationResult:
    """Run one federation in-process; returns the server's result.

    Parameters
    ----------
    run_config : kebab-case run-config keys (the rest take their defaults).
    clients : number of SuperNodes ``K`` (node ``k`` holds partition ``k``).
    verbose : let Ray forward the clients' logs.
    faults : partition id → a failure that node injects on purpose (:mod:`clients.faults`).

    Raises
    ------
    FairsynthError
        The server's own error when the run fails (e.g. fewer than ``min-clients`` valid
        replies), so that the caller sees its message.
    """
    from flwr.simulation import run_simulation

    config = RunConfig.from_mapping(run_config)
    check_setup(config, clients)
    for k in faults or {}:
        if not 0 <= k < clients:
            raise ConfigError(f"--inject-fault names partition {k}; the partitions are "
                              f"0..{clients - 1}.")
    mapping = config.to_mapping()
    results: list[FederationResult] = []
    errors: list[FairsynthError] = []
    stopper = StuckClientStopper()
    for key, value in RUNTIME_ENV.items():
        os.environ.setdefault(key, value)
    with tempfile.TemporaryDirectory(prefix="fairsynth-flwr-") as home:
        os.environ.setdefault("FLWR_HOME", home)
        # A ClientApp process that dies is restarted by Ray (max_restarts); without it, the dead
        # actor would stay in Flower's pool and fail every later message sent to it.
        backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0, "max_restarts": 4},
                   "init_args": {"num_cpus": max(1, min(clients, os.cpu_count() or 1)),
                                 "log_to_driver": verbose,
                                 "logging_level": "INFO" if verbose else "ERROR"}}
        start = time.perf_counter()

        def done(result: FederationResult) -> None:
            results.append(result)
            stopper.server_done()

        def failed(error: FairsynthError) -> None:
            errors.append(error)
            stopper.server_done()

        try:
            run_simulation(server_app=make_server_app(mapping, on_result=done, on_error=failed),
                           client_app=make_client_app(mapping, faults=faults),
                           num_supernodes=clients, backend_config=backend)
        finally:
            stopper.cancel()
        logger.info("simulation finished in %.1f s", time.perf_counter() - start)
        if os.environ.get("FLWR_HOME") == home:
            del os.environ["FLWR_HOME"]
    if errors:
        raise errors[0]
    if not results:
        raise ConfigError("the simulation ended without a result; rerun with -v for the log.")
    return results[0]


def quiet_flower(verbose: bool) -> None:
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


def run(args: argparse.Namespace) -> int:
    quiet_flower(args.verbose)
    mapping = run_config_from_args(args)
    faults = parse_assignments(args.inject_fault)
    start = time.perf_counter()
    result = simulate(mapping, clients=args.clients, verbose=args.verbose > 0, faults=faults)
    wall = time.perf_counter() - start
    payload = {**result.as_dict(), "clients_requested": args.clients, "wall_seconds": wall}
    path = args.out / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, payload)
    print_result(result, wall=wall)
    print(f"wrote {path}")
    return 0


def print_result(result: FederationResult, *, wall: float | None = None) -> None:
    m, t, f = result.metrics, result.traffic, result.formula_check()
    print(f"{'strategy':9} {'model':8} {'d':>7} {'acc %':>6} {'bal':>5} {'P(ŷ=1)':>6} "
          f"{'|SPD|':>7} {'|EOD|':>7} {'rounds':>6} {'bytes up':>12} {'bytes down':>12} "
          f"{'formula B':>12} {'ratio':>6} {'s':>6}")
    print(f"{result.strategy:9} {result.model:8} {result.params:7d} {100 * m['accuracy']:6.2f} "
          f"{m['balanced_accuracy']:5.3f} {m['positive_rate']:6.3f} "
          f"{m['spd']:7.4f} {m['eod']:7.4f} {result.rounds:6d} {t['bytes_up']:12,d} "
          f"{t['bytes_down']:12,d} {f['formula_bytes']:12,d} {f['ratio_bytes']:6.3f} "
          f"{wall if wall is not None else result.seconds:6.1f}")
    for c in result.clients:
        if "privacy" in c:
            p = c["privacy"]
            eps = "-" if p.get("epsilon") is None else f"{p['epsilon']:g}"
            delta = "-" if p.get("delta") is None else f"{p['delta']:.3g}"
            print(f"  node {c['node_id']}: {c['rows']} rows released, ε = {eps}, δ = {delta}; "
                  f"covers {p.get('covers')}")
    for r in result.rejected:
        print(f"  node {r['node_id']} skipped ({r['phase']}): {r['reason']}")
