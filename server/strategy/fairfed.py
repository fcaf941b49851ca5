r"""FairFed: FedAvg with fairness-aware aggregation weights (METHOD.md, § Baselines).

Ezzeldin, He, Wang, Zhang, Avestimehr. *FairFed: Enabling Group Fairness in Federated
Learning*, AAAI 2023, https://arxiv.org/abs/2110.00857.

Each round every client receives the global model ``w_t``, computes its group statistics on
its training rows (:func:`common.metrics.group_counts`) and trains locally (optionally on
reweighed rows). The server pools the statistics into the global gap ``F`` (signed SPD or EOD
of ``w_t`` on all clients' data), takes each client's local gap ``F_k`` and updates

.. math::

    \Delta_k = |F - F_k|, \qquad
    \omega_k \leftarrow \omega_k
        - \beta\,\bigl(\Delta_k - \tfrac{1}{K}\textstyle\sum_j \Delta_j\bigr),

clipped at 0 and renormalised, starting from ``ω_k = n_k / n``; the new global model is
``Σ_k ω_k w_k``. A client whose local gap is undefined (a group absent from its rows) gets
``Δ_k = mean Δ``, which leaves its weight unchanged. Extra traffic per round: the 16 numbers of
the statistics from each client.

Only what differs from Flower's FedAvg is overridden: :meth:`configure_train` asks the clients
for statistics (and reweighing), :meth:`aggregate_train` weighs by ``ω`` instead of ``n_k``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from common.errors import ConfigError, ReplyError
from common.metrics import check_counts, gap, pool

logger = logging.getLogger(__name__)

WEIGHT_KEY = "fairfed-weight"


def fairfed_weights(
    *,
    previous: Sequence[float | None],
    sizes: Sequence[float],
    local_gaps: Sequence[float],
    global_gap: float,
    beta: float,
) -> np.ndarray:
    """One FairFed weight update (see the module docstring).

    Parameters
    ----------
    previous : the clients' weights from the last round (``None`` for a client seen first:
        it starts at ``n_k / n``); renormalised over the clients present.
    sizes : ``n_k``, the clients' training rows.
    local_gaps : ``F_k`` (NaN where undefined).
    global_gap : ``F``.
    beta : the step ``β ≥ 0``.

    Returns
    -------
    ndarray
        The new weights ``ω`` (non-negative, summing to 1).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    if len(sizes) == 0 or np.any(sizes <= 0):
        raise ReplyError(f"FairFed needs a positive row count from every client, got {sizes}.")
    if beta < 0:
        raise ConfigError(f"FairFed's β must be ≥ 0, got {beta}.")
    start = sizes / sizes.sum()
    omega = np.array([s if p is None else p for p, s in zip(previous, start)], dtype=np.float64)
    omega = omega / omega.sum()
    delta = np.abs(global_gap - np.asarray(local_gaps, dtype=np.float64))
    defined = np.isfinite(delta)
    mean = float(delta[defined].mean()) if defined.any() else 0.0
    delta = np.where(defined, delta, mean)
    omega = np.maximum(omega - beta * (delta - mean), 0.0)
    if omega.sum() <= 0:  # every weight clipped: fall back to FedAvg's
        return start
    return omega / omega.sum()


class FairFed(FedAvg):
    """FairFed (see the module docstring); keyword arguments beyond its own go to FedAvg.

    Parameters
    ----------
    beta : float
        Weight step ``β`` (default 1).
    measure : {"sp", "eo"}
        The fairness gap: statistical parity or equal opportunity difference.
    reweigh : bool
        Ask clients to train on reweighed rows (Kamiran & Calders), the local debiasing the
        FairFed paper pairs the method with.
    """

    def __init__(self, *, beta: float = 1.0, measure: str = "sp", reweigh: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if measure not in ("sp", "eo"):
            raise ConfigError(f"FairFed's measure must be 'sp' or 'eo', got {measure!r}.")
        if not (math.isfinite(beta) and beta >= 0):
            raise ConfigError(f"FairFed's β must be a finite number ≥ 0, got {beta}.")
        self.beta, self.measure, self.reweigh = beta, measure, reweigh
        self.weights: dict[int, float] = {}
        self.history: list[dict] = []

    def summary(self) -> None:
        super().summary()
        logger.info("FairFed: beta=%g, measure=%s, local reweighing=%s", self.beta,
                    self.measure, self.reweigh)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        config["fairness-stats"] = True
        config["reweigh"] = self.reweigh
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        nodes, contents, stats = [], [], []
        for msg in valid:
            metrics = next(iter(msg.content.metric_records.values()))
            try:
                counts = check_counts(metrics)
            except ReplyError as exc:
                logger.warning("FairFed: skipped node %d: %s", msg.metadata.src_node_id, exc)
                continue
            nodes.append(msg.metadata.src_node_id)
            contents.append(msg.content)
            stats.append((float(metrics[self.weighted_by_key]), counts))
        if not nodes:
            return None, None
        global_gap = gap(pool(c for _, c in stats), self.measure)
        local_gaps = [gap(c, self.measure) for _, c in stats]
        omega = fairfed_weights(previous=[self.weights.get(n) for n in nodes],
                                sizes=[n for n, _ in stats], local_gaps=local_gaps,
                                global_gap=global_gap, beta=self.beta)
        self.weights.update(zip(nodes, omega.tolist()))
        self.history.append({"round": server_round, "global_gap": global_gap,
                             "local_gaps": dict(zip(nodes, local_gaps)),
                             "weights": dict(zip(nodes, omega.tolist()))})
        logger.info("FairFed round %d: global gap %.4f, weights %s", server_round, global_gap,
                    np.round(omega, 4).tolist())
        # Flower's weighted average, with ω in place of n_k as the weight.
        weighted = [RecordDict({**c.array_records, "w": MetricRecord({WEIGHT_KEY: float(w)})})
                    for c, w in zip(contents, omega)]
        arrays = aggregate_arrayrecords(weighted, WEIGHT_KEY)
        sizes = np.array([n for n, _ in stats])
        losses = [float(next(iter(c.metric_records.values())).get("train-loss", math.nan))
                  for c in contents]
        metrics = MetricRecord({"global-gap": global_gap,
                                "train-loss": float(np.dot(sizes, losses) / sizes.sum())})
        return arrays, metrics
