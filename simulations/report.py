"""Printing a federation result as a table (the commands' one printer)."""

from __future__ import annotations

from server.result import FederationResult

HEADER = (f"{'strategy':9} {'model':8} {'d':>7} {'acc %':>6} {'bal':>5} {'P(ŷ=1)':>6} "
          f"{'|SPD|':>7} {'|EOD|':>7} {'rounds':>6} {'bytes up':>12} {'bytes down':>12} "
          f"{'formula B':>12} {'ratio':>6} {'s':>6}")


def result_row(result: FederationResult, *, wall: float | None = None) -> str:
    """One table row of ``result`` (columns as in :data:`HEADER`)."""
    m, t, f = result.metrics, result.traffic, result.formula_check()
    return (f"{result.strategy:9} {result.model:8} {result.params:7d} "
            f"{100 * m['accuracy']:6.2f} {m['balanced_accuracy']:5.3f} "
            f"{m['positive_rate']:6.3f} {m['spd']:7.4f} {m['eod']:7.4f} {result.rounds:6d} "
            f"{t['bytes_up']:12,d} {t['bytes_down']:12,d} {f['formula_bytes']:12,d} "
            f"{f['ratio_bytes']:6.3f} {wall if wall is not None else result.seconds:6.1f}")


def print_result(result: FederationResult, *, wall: float | None = None) -> None:
    """The table row of ``result`` under its header, then one line per node."""
    print(HEADER)
    print(result_row(result, wall=wall))
    for line in result.node_lines():
        print(f"  {line}")
