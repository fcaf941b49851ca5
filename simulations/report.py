"""A federation result as a table (``simulate`` and ``deploy`` print it)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from server.result import FederationResult, gap_text
from simulations.results import Table

COLUMNS = ["strategy", "model", "d", "acc %", "bal", "P(ŷ=1)", "|SPD|", "|EOD|", "rounds",
           "bytes up", "bytes down", "formula B", "ratio", "s"]


def result_table(result: FederationResult, *, wall: float | None = None) -> Table:
    """One row for ``result``: its metrics (each gap ± its standard error on these test rows),
    rounds, counted bytes against the formula, seconds."""
    m, t, f = result.metrics, result.traffic, result.formula_check()
    row = [result.strategy, result.model, str(result.params), f"{100 * m['accuracy']:.2f}",
           f"{m['balanced_accuracy']:.3f}", f"{m['positive_rate']:.3f}", gap_text(m, "spd"),
           gap_text(m, "eod"), str(result.rounds), f"{t['bytes_up']:,d}", f"{t['bytes_down']:,d}",
           f"{f['formula_bytes']:,d}", f"{f['ratio_bytes']:.3f}",
           f"{wall if wall is not None else result.seconds:.1f}"]
    return Table("the server's model on the pooled test rows", COLUMNS, [row])


def print_result(result: FederationResult, *, wall: float | None = None) -> None:
    """The table of ``result``, then one line per node."""
    print(result_table(result, wall=wall).markdown())
    for line in result.caveats() + result.node_lines():
        print(f"  {line}")


def deployment_table(summary: Mapping) -> Table:
    """One row per job of a deployment: Flower's recorded traffic against the app's count."""
    rows = []
    for name, r in summary["runs"].items():
        t, a, m = r["network_traffic"], r["app_traffic"], r["metrics"]
        counted = a.get("bytes_up", 0) + a.get("bytes_down", 0)
        rows.append([name, f"{r['wall_seconds']:.1f}", f"{t.get('inbound-bytes', 0):,}",
                     f"{t.get('outbound-bytes', 0):,}", f"{t.get('total-bytes', 0):,}",
                     f"{counted:,}", f"{100 * m.get('accuracy', math.nan):.2f}",
                     f"{m.get('spd', math.nan):.4f}", f"{m.get('eod', math.nan):.4f}"])
    s = summary["seconds"]
    return Table(f"{summary['clients']} SuperNodes on {summary['superlink']} (TLS, SuperNode "
                 f"authentication): end to end {s['end_to_end']:.1f} s (prepare "
                 f"{s['prepare']:.1f}, startup {s['startup']:.1f}, runs {s['runs']:.1f}, "
                 f"shutdown {s['shutdown']:.1f})",
                 ["strategy", "run s", "Flower in B", "Flower out B", "Flower total B",
                  "app-counted B", "acc %", "|SPD|", "|EOD|"], rows)
