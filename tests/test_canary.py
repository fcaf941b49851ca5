"""Canary: a unique real row never leaves a client, within tolerance, in the private orders.

A row with values far from every other row (but inside the schema's public bounds) is planted
in a client's training data; everything the client's one-shot reply carries (every array, and
every number in its JSON metadata) is searched for it. The non-private orders are the control:
there the canary does leave, so the search can find it.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from clients.client_app import release_content
from clients.policy import PrivacyPolicy
from common.datasets import make_synthetic
from common.run_config import RunConfig
from common.schema import TabularData

CANARY = np.array([6.5, -6.3, 5.7, -6.9])  # bulk is N(0, 1) per column; bounds are ±8
TOLERANCE = 0.75  # L∞ distance, in original units


def _client_with_canary() -> TabularData:
    data = make_synthetic(600, n_features=4, seed=21)
    features = pd.concat([data.features, pd.DataFrame([CANARY], columns=data.features.columns)],
                         ignore_index=True)
    return TabularData(schema=data.schema, features=features, s=np.r_[data.s, 0].astype(np.int8),
                       y=np.r_[data.y, 1].astype(np.int8))


def _nearest_canary_distance(content) -> float:
    """Smallest L∞ distance of any released row to the canary, over every array of the reply."""
    best = np.inf
    for record in content.array_records.values():
        for array in record.values():
            rows = np.asarray(array.numpy(), dtype=np.float64)
            if rows.ndim == 2 and rows.shape[1] >= len(CANARY):
                best = min(best, float(np.abs(rows[:, :len(CANARY)] - CANARY).max(axis=1).min()))
    return best


def _numbers_in_metadata(content) -> np.ndarray:
    numbers = []
    for record in content.config_records.values():
        for value in record.values():
            text = value if isinstance(value, str) else json.dumps(value)
            numbers += [float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)]
    return np.asarray(numbers)


def _release(order: str):
    # The penalty form with λ_in = 1 keeps stage 1's rows near the real rows, as the detection
    # check needs.
    config = RunConfig.from_mapping({"dataset": "synthetic", "order": order, "iterations": 40,
                                     "target": 0.0, "rho": 10.0, "epsilon": 1.0,
                                     "lam-in": 1.0})
    return release_content(_client_with_canary(), config, seed=0, policy=PrivacyPolicy.open())


@pytest.mark.parametrize("order", ["private-only", "fair-then-private", "private-then-fair"])
def test_canary_never_leaves_in_private_orders(order):
    content = _release(order)
    assert _nearest_canary_distance(content) > TOLERANCE
    numbers = _numbers_in_metadata(content).reshape(-1, 1)
    assert not np.isclose(numbers, CANARY[None, :], atol=1e-3).any()


@pytest.mark.parametrize("order", ["real", "fair-only"])
def test_canary_leaves_without_privacy(order):
    assert _nearest_canary_distance(_release(order)) <= TOLERANCE
