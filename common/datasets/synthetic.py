"""A seeded, biased toy dataset for offline demos and property tests (nothing to fetch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.datasets.base import Dataset
from common.errors import ConfigError
from common.schema import Column, Schema, TabularData, from_frame


def synthetic_schema(n_features: int = 4) -> Schema:
    """The schema of :func:`make_synthetic`."""
    return Schema(
        name="synthetic",
        features=tuple(Column(f"x{j}", bounds=(-8.0, 8.0)) for j in range(n_features)),
        sensitive="group", privileged="1", label="label", favourable="1",
    )


def synthetic_frame(
    n: int = 4000,
    *,
    n_features: int = 4,
    privileged_share: float = 0.7,
    bias: float = 1.0,
    label_bias: float = 0.8,
    seed: int = 0,
) -> pd.DataFrame:
    r"""The rows of :func:`make_synthetic` as a frame: ``x0..``, ``group``, ``label``.

    ``s ~ Bernoulli(privileged_share)``; ``z ~ N(bias · s · 1/√k, I)`` (features shifted for
    the privileged group); ``y ~ Bernoulli(σ(zᵀβ + label_bias · (2s − 1)))`` (labels favour the
    privileged group directly). ``bias = label_bias = 0`` gives a fair dataset.
    """
    if n < 8:
        raise ConfigError(f"the synthetic dataset needs n ≥ 8 rows, got {n}.")
    if not 0.0 < privileged_share < 1.0:
        raise ConfigError(f"privileged_share must lie in (0, 1), got {privileged_share}.")
    rng = np.random.default_rng(seed)
    s = (rng.random(n) < privileged_share).astype(np.int8)
    z = rng.normal(size=(n, n_features)) + bias * s[:, None] / np.sqrt(n_features)
    beta = np.linspace(1.0, -0.5, n_features)
    logits = z @ beta + label_bias * (2 * s - 1)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int8)
    frame = pd.DataFrame(z, columns=[f"x{j}" for j in range(n_features)])
    frame["group"], frame["label"] = s, y
    return frame


def make_synthetic(n: int = 4000, **options) -> TabularData:
    """A seeded, biased toy dataset for offline demos and property tests: the rows of
    :func:`synthetic_frame` (same keyword options: ``n_features``, ``privileged_share``,
    ``bias``, ``label_bias``, ``seed``) with their schema."""
    frame = synthetic_frame(n, **options)
    return from_frame(frame, synthetic_schema(options.get("n_features", 4)))


def _schema(sensitive: str) -> Schema:
    return synthetic_schema()


def _read_frame(root: Path, seed: int) -> pd.DataFrame:
    return synthetic_frame(seed=seed)


DATASET = Dataset(
    name="synthetic",
    description="a seeded, biased toy dataset (4,000 rows, 4 features; drawn with the run's "
                "seed, nothing to fetch); sensitive: group",
    sensitive_columns=("group",),
    default_sensitive="group",
    schema_for=_schema,
    frame_reader=_read_frame,
    file_reader=pd.read_csv,
)
