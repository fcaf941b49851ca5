"""The outcome of one federation run, as returned by every server flow."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from common.comm import BYTES_PER_NUMBER, Exchange, totals


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
        """Write :meth:`as_dict` as JSON (atomically: a temp file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2, default=_jsonable) + "\n")
        tmp.replace(path)
        return path


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
