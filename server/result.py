"""The outcome of one federation run, as returned by every server flow."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from common.comm import BYTES_PER_NUMBER, Exchange, totals
from common.jsonio import write_json


@dataclasses.dataclass(frozen=True)
class FederationResult:
    """Metrics, traffic and bookkeeping of one run.

    Attributes
    ----------
    strategy, model : what ran (``oneshot``/``fedavg``/``fairfed``; ``logistic``/``mlp``).
    params : ``d``, the number of model parameters.
    columns : ``q``, the columns of a released row (features, ``s``, ``y``).
    metrics : pooled test metrics on the union of the clients' test rows.
    rounds : server↔clients exchanges before the final evaluation (one-shot: 1; FedAvg and
        FairFed: the feature-scaling exchange plus ``R`` training rounds).
    exchanges : every exchange with its counted bytes, including the final evaluation.
    formula_numbers : what METHOD.md's formula says the covered exchanges move.
    covered : the messages that carry what the formula counts, as ``(phase, direction)``
        pairs (direction ``"up"``: client → server, ``"down"``: server → client). One-shot:
        the replies to the query (the rows) and the model broadcast; FedAvg/FairFed: both
        directions of every training round.
    clients : per accepted client: node id, rows or examples, privacy report, timings.
    rejected : per skipped reply: node id, phase, reason.
    history : per-round strategy state (FairFed: gaps and weights).
    seconds : wall time of the server flow.
    config : the run configuration (kebab-case).
    runtime : where it ran (a simulation: the Ray address, or none for the embedded engine,
        and the cluster's nodes and resources).
    privacy : what the run's guarantee is and what it spent (DP-FedAvg; empty otherwise:
        one-shot's guarantees are per client, in ``clients``).
    model_params : the final model's arrays (not written to JSON).
    """

    strategy: str
    model: str
    params: int
    columns: int
    metrics: dict
    rounds: int
    exchanges: tuple[Exchange, ...]
    formula_numbers: dict
    covered: tuple[tuple[str, str], ...]
    clients: tuple[dict, ...] = ()
    rejected: tuple[dict, ...] = ()
    history: tuple[dict, ...] = ()
    seconds: float = 0.0
    config: dict = dataclasses.field(default_factory=dict)
    privacy: dict = dataclasses.field(default_factory=dict)
    runtime: dict = dataclasses.field(default_factory=dict)
    model_params: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def traffic(self) -> dict[str, int]:
        """Total bytes and payload in each direction, all exchanges."""
        return totals(self.exchanges)

    def formula_check(self) -> dict[str, float]:
        """Measured bytes of the covered messages against the formula's ``8 × numbers``.

        ``ratio_bytes`` compares whole serialised messages (with metadata, keys and array
        headers); ``ratio_payload`` the array elements alone; ``ratio_all`` every byte of the
        run (requests, the baselines' feature-scaling round, the evaluation statistics too).
        """
        measured = payload = 0
        for e in self.exchanges:
            for direction in ("up", "down"):
                if (e.phase, direction) in self.covered:
                    measured += getattr(e, f"bytes_{direction}")
                    payload += getattr(e, f"payload_{direction}")
        numbers = int(sum(self.formula_numbers.values()))
        expected = numbers * BYTES_PER_NUMBER
        every = self.traffic["bytes_up"] + self.traffic["bytes_down"]
        return {
            "formula_numbers": numbers,
            "formula_bytes": expected,
            "measured_bytes": measured,
            "measured_payload": payload,
            "all_bytes": every,
            "ratio_bytes": measured / expected if expected else math.nan,
            "ratio_payload": payload / expected if expected else math.nan,
            "ratio_all": every / expected if expected else math.nan,
        }

    def as_dict(self) -> dict:
        out = dataclasses.asdict(dataclasses.replace(self, model_params={}))
        del out["model_params"]
        out["exchanges"] = [e.as_dict() for e in self.exchanges]
        out["traffic"] = self.traffic
        out["formula_check"] = self.formula_check()
        return out

    def save(self, path: str | Path) -> Path:
        """Write :meth:`as_dict` as JSON (atomically)."""
        return write_json(path, self.as_dict())

    def summary_lines(self) -> list[str]:
        """A short human-readable summary: metrics, traffic, each node's release and privacy,
        and the nodes that failed."""
        m, t, f = self.metrics, self.traffic, self.formula_check()
        lines = [
            f"{self.strategy} ({self.model}, d = {self.params}): accuracy "
            f"{100 * m['accuracy']:.2f} % (balanced {m['balanced_accuracy']:.3f}, P(ŷ=1) "
            f"{m['positive_rate']:.3f}), |SPD| {gap_text(m, 'spd')}, |EOD| "
            f"{gap_text(m, 'eod')} on "
            f"{int(m['n'])} pooled test rows",
            f"{self.rounds} round(s) before evaluation; bytes up {t['bytes_up']:,}, down "
            f"{t['bytes_down']:,}; formula {f['formula_bytes']:,} B vs measured "
            f"{f['measured_bytes']:,} B (ratio {f['ratio_bytes']:.3f}) in the messages it "
            f"counts ({', '.join(f'{p} {d}' for p, d in self.covered)})",
        ]
        if self.privacy:
            p = self.privacy
            lines.append(f"privacy: {p['mechanism']}, ε = {p['epsilon']:.4g} spent (plan "
                         f"{p['epsilon_planned']:.4g}), δ = {p['delta']:.3g}; covers "
                         f"{p['covers']}")
        return lines + self.caveats() + self.node_lines()

    def caveats(self) -> list[str]:
        """What the metrics say against the model's use: a model no more accurate than a
        constant prediction on the same rows (a private evaluation's counts are noisy, so this
        is as noisy as the accuracy)."""
        m = self.metrics
        constant = m.get("constant_accuracy", math.nan)
        if not m.get("accuracy", math.nan) <= constant:  # False for NaN
            return []
        return [f"warning: the model is no more accurate than a constant prediction, which "
                f"scores {100 * constant:.2f} % on these rows (every row the majority label). "
                "With skewed labels a tight fairness target can cost that much (--utility "
                "balanced keeps the classes apart); on a small table the DP noise can (more "
                "rows a client or a larger ε help; docs/held-out.md, 'Six more tables never "
                "tuned on')."]

    def node_lines(self) -> list[str]:
        """Each node's release and privacy, then the nodes that failed, one line each."""
        lines = []
        for c in self.clients:
            if "privacy" in c:
                p = c["privacy"]
                eps = "-" if p.get("epsilon") is None else f"{p['epsilon']:g}"
                delta = "-" if p.get("delta") is None else f"{p['delta']:.3g}"
                lines.append(f"node {c['node_id']}: {c['rows']} rows released, order "
                             f"{p.get('order')}, ε = {eps}, δ = {delta}; covers "
                             f"{p.get('covers')}")
        for r in self.rejected:
            lines.append(f"node {r['node_id']} skipped ({r['phase']}): {r['reason']}")
        failed = sorted({r["node_id"] for r in self.rejected})
        if failed:
            lines.append(f"{len(failed)} node(s) failed or were rejected: "
                         f"{', '.join(str(n) for n in failed)}")
        return lines


def gap_text(metrics: dict, gap: str) -> str:
    """``"0.0588 ± 0.0123"``: a gap and the standard error that the test rows' size alone puts
    on it (:mod:`common.metrics`); the gap alone for a result written before it was reported."""
    se = metrics.get(f"{gap}_se")
    return f"{metrics[gap]:.4f}" + ("" if se is None or math.isnan(se) else f" ± {se:.4f}")
