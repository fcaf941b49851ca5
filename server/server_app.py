"""The ServerApp: reads the run configuration once and runs the configured flow.

Flows (a registry keyed by the ``strategy`` run-config string):

* ``oneshot`` — :func:`server.oneshot.run_oneshot`, the proposed scheme;
* ``fedavg``, ``fairfed`` — :func:`server.baselines.run_baseline`.

Every flow talks to the clients through a :class:`server.traffic.CountingGrid`, so the
serialised bytes of every message in both directions are counted, and returns a
:class:`server.result.FederationResult`, which the app logs, optionally writes to
``results-path`` and hands to ``on_result`` (the in-process simulation collects it there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from clients.pipeline import pipeline_config
from common.errors import FairsynthError
from common.run_config import RunConfig
from server.baselines import run_baseline
from server.oneshot import run_oneshot
from server.result import FederationResult
from server.traffic import CountingGrid

FLOWER_LOG = logging.getLogger("flwr")

Flow = Callable[[CountingGrid, RunConfig], FederationResult]
FLOWS: dict[str, Flow] = {"oneshot": run_oneshot, "fedavg": run_baseline,
                          "fairfed": run_baseline}


def summary_lines(result: FederationResult) -> list[str]:
    """A short human-readable summary of ``result``."""
    m, t, f = result.metrics, result.traffic, result.formula_check()
    lines = [
        f"{result.strategy} ({result.model}, d = {result.params}): accuracy "
        f"{100 * m['accuracy']:.2f} % (balanced {m['balanced_accuracy']:.3f}, P(ŷ=1) "
        f"{m['positive_rate']:.3f}), |SPD| {m['spd']:.4f}, |EOD| {m['eod']:.4f} on "
        f"{int(m['n'])} pooled test rows",
        f"{result.rounds} round(s) before evaluation; bytes up {t['bytes_up']:,}, down "
        f"{t['bytes_down']:,}; formula {f['formula_bytes']:,} B vs measured "
        f"{f['measured_bytes']:,} B (ratio {f['ratio_bytes']:.3f}) in the messages it "
        f"counts ({', '.join(f'{p} {d}' for p, d in result.covered)})",
    ]
    for c in result.clients:
        if "privacy" in c:
            p = c["privacy"]
            lines.append(f"node {c['node_id']}: {c['rows']} rows, order {p.get('order')}, "
                         f"ε = {p.get('epsilon')}, δ = {p.get('delta')}, covers "
                         f"{p.get('covers')}")
    for r in result.rejected:
        lines.append(f"node {r['node_id']} skipped ({r['phase']}): {r['reason']}")
    failed = sorted({r["node_id"] for r in result.rejected})
    if failed:
        lines.append(f"{len(failed)} node(s) failed or were rejected: "
                     f"{', '.join(str(n) for n in failed)}")
    return lines


def check_run(config: RunConfig) -> None:
    """What every client would fail on, checked before any message: the pipeline's order,
    generator and its options (one-shot)."""
    if config.strategy == "oneshot":
        pipeline_config(config).stage2.check_options()


def make_server_app(overrides: Mapping[str, Any] | None = None, *,
                    on_result: Callable[[FederationResult], None] | None = None,
                    on_error: Callable[[FairsynthError], None] | None = None) -> ServerApp:
    """A ServerApp whose configuration is ``context.run_config`` updated by ``overrides``.

    Parameters
    ----------
    overrides : run-config keys (kebab-case) that replace the context's values.
    on_result : called with the run's :class:`FederationResult` when the flow ends.
    on_error : called with the error when the run fails on a user error (a bad run config,
        too few valid replies); the error is logged and re-raised either way, so the run ends
        as failed and nothing is written to ``results-path``.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            config = RunConfig.from_mapping({**dict(context.run_config), **dict(overrides or {})})
            check_run(config)
            result = FLOWS[config.strategy](CountingGrid(grid), config)
        except FairsynthError as exc:
            FLOWER_LOG.error("fairsynth: the run failed: %s", exc)
            if on_error is not None:
                on_error(exc)
            raise
        for line in summary_lines(result):
            # Flower's own logger: its handler is what `flwr log` streams from this process.
            FLOWER_LOG.info("%s", line)
        if config.results_path:
            result.save(config.results_path)
        if on_result is not None:
            on_result(result)

    return app


#: The ServerApp that ``flwr run`` loads (``server.server_app:app``).
app = make_server_app()
