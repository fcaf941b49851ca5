"""The ServerApp: reads the run configuration once and runs the configured flow.

Flows (a registry keyed by the ``strategy`` run-config string):

* ``oneshot`` — :func:`server.oneshot.run_oneshot`, the proposed scheme;
* ``fedavg``, ``fairfed``, ``dp-fedavg`` — :func:`server.baselines.run_baseline`.

Every flow talks to the clients through a :class:`server.traffic.CountingGrid`, so the
serialised bytes of every message in both directions are counted, and returns a
:class:`server.result.FederationResult`, which the app logs, optionally writes to
``results-path`` and hands to ``on_result`` (the in-process simulation collects it there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.errors import ConfigError, FairsynthError
from common.run_config import RunConfig
from server.baselines import run_baseline
from server.oneshot import run_oneshot
from server.result import FederationResult
from server.traffic import CountingGrid

FLOWER_LOG = logging.getLogger("flwr")

Flow = Callable[[CountingGrid, RunConfig], FederationResult]
FLOWS: dict[str, Flow] = {"oneshot": run_oneshot, "fedavg": run_baseline,
                          "fairfed": run_baseline, "dp-fedavg": run_baseline}


def check_run(config: RunConfig) -> None:
    """What the server checks before any message: that it knows the flow ``strategy``. (What a
    client would fail on — its synthesizer and options — the clients check and report; the
    command line checks it too, before a simulation starts.)"""
    if config.strategy not in FLOWS:
        raise ConfigError(f"run config: strategy = {config.strategy!r} is invalid; use one of "
                          f"{sorted(FLOWS)}.")


def make_server_app(config: RunConfig | None = None, *,
                    on_result: Callable[[FederationResult], None] | None = None,
                    on_error: Callable[[FairsynthError], None] | None = None) -> ServerApp:
    """A ServerApp that runs with ``config``, or reads ``context.run_config`` when it is None.

    Parameters
    ----------
    config : the run configuration (the in-process simulation passes it; ``flwr run`` does
        not, and the app reads the context's, the Flower boundary).
    on_result : called with the run's :class:`FederationResult` when the flow ends.
    on_error : called with the error when the run fails on a user error (a bad run config,
        too few valid replies); the error is logged and re-raised either way, so the run ends
        as failed and nothing is written to ``results-path``.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run = config if config is not None else RunConfig.from_mapping(context.run_config)
            check_run(run)
            result = FLOWS[run.strategy](CountingGrid(grid), run)
        except FairsynthError as exc:
            FLOWER_LOG.error("fairsynth: the run failed: %s", exc)
            if on_error is not None:
                on_error(exc)
            raise
        for line in result.summary_lines():
            # Flower's own logger: its handler is what `flwr log` streams from this process.
            FLOWER_LOG.info("%s", line)
        if run.results_path:
            result.save(run.results_path)
        if on_result is not None:
            on_result(result)

    return app


#: The ServerApp that ``flwr run`` loads (``server.server_app:app``).
app = make_server_app()
