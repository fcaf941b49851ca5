"""Train/test splits and client partitions.

Partitioning follows common federated-fairness practice:

* ``iid`` — rows shuffled and dealt out evenly;
* ``dirichlet`` — for each sensitive group, client shares drawn from ``Dir(α·1_K)``
  (Ezzeldin et al., FairFed), so small ``α`` gives clients very different group mixes;
* ``column`` — by a natural column (e.g. Law School ``tier``): each value goes whole to one
  client, values dealt largest first to the client with the fewest rows.

Each client then splits its own partition 80/20 into train/test, stratified by ``(s, y)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from common.errors import ConfigError, DataError
from common.schema import TabularData

PARTITIONS = ("iid", "dirichlet", "column")


@dataclasses.dataclass(frozen=True)
class ClientSplit:
    """One client's data."""

    train: TabularData
    test: TabularData


def train_test_split(data: TabularData, *, test_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[TabularData, TabularData]:
    """Seeded split, stratified by the ``(s, y)`` cell (each cell split in the same ratio)."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must lie in (0, 1), got {test_fraction}.")
    if len(data) < 2:
        raise DataError(f"cannot split {len(data)} row(s) into train and test; need at least 2.")
    rng = np.random.default_rng(seed)
    cell = 2 * data.s.astype(np.int64) + data.y
    test = []
    for c in np.unique(cell):
        idx = rng.permutation(np.flatnonzero(cell == c))
        test.append(idx[: int(round(test_fraction * len(idx)))])
    test_idx = np.sort(np.concatenate(test))
    if len(test_idx) == 0:  # tiny data: at least one test row
        test_idx = rng.choice(len(data), 1)
    train_mask = np.ones(len(data), dtype=bool)
    train_mask[test_idx] = False
    return data.subset(np.flatnonzero(train_mask)), data.subset(test_idx)


def partition(
    data: TabularData,
    *,
    clients: int,
    method: str = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    column: str | None = None,
    min_rows: int = 10,
) -> list[TabularData]:
    """Split ``data`` into ``clients`` disjoint partitions (see module docstring)."""
    if clients < 1:
        raise ConfigError(f"the number of clients must be ≥ 1, got {clients}.")
    if len(data) < clients * min_rows:
        raise ConfigError(
            f"{len(data)} rows cannot give {clients} clients {min_rows} rows each; use fewer "
            "clients or more data."
        )
    rng = np.random.default_rng(seed)
    if method == "iid":
        parts = np.array_split(rng.permutation(len(data)), clients)
    elif method == "dirichlet":
        if alpha <= 0:
            raise ConfigError(f"the Dirichlet α must be > 0, got {alpha}.")
        parts = _dirichlet(data.s, clients, alpha, rng, min_rows)
    elif method == "column":
        parts = _by_column(data, clients, column)
    else:
        raise ConfigError(f"unknown partition {method!r}; choose one of {list(PARTITIONS)}.")
    return [data.subset(np.sort(p)) for p in parts]


def _dirichlet(s: np.ndarray, k: int, alpha: float, rng: np.random.Generator,
               min_rows: int) -> list[np.ndarray]:
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        for group in (0, 1):
            idx = rng.permutation(np.flatnonzero(s == group))
            shares = rng.dirichlet(alpha * np.ones(k))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for j, chunk in enumerate(np.split(idx, cuts)):
                parts[j].append(chunk)
        merged = [np.concatenate(p) for p in parts]
        if min(len(p) for p in merged) >= min_rows:
            return merged
    raise ConfigError(
        f"could not draw a Dirichlet(α={alpha}) partition giving each of {k} clients at least "
        f"{min_rows} rows; raise α or use fewer clients."
    )


def _by_column(data: TabularData, k: int, column: str | None) -> list[np.ndarray]:
    if column is None:
        raise ConfigError("partition 'column' needs a column name (--partition-column).")
    if column not in data.features.columns:
        raise ConfigError(
            f"cannot partition by {column!r}: no such feature; features are "
            f"{list(data.features.columns)}."
        )
    values = data.features[column].astype(str).to_numpy()
    uniques, counts = np.unique(values, return_counts=True)
    if len(uniques) < k:
        raise ConfigError(
            f"column {column!r} has {len(uniques)} distinct values, fewer than {k} clients; use "
            "fewer clients or another column."
        )
    sizes = np.zeros(k, dtype=np.int64)
    owner = {}
    for u, c in sorted(zip(uniques, counts), key=lambda t: -t[1]):
        j = int(np.argmin(sizes))
        owner[u] = j
        sizes[j] += c
    who = np.array([owner[v] for v in values])
    return [np.flatnonzero(who == j) for j in range(k)]


def federated_split(
    data: TabularData,
    *,
    clients: int,
    method: str = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    column: str | None = None,
    test_fraction: float = 0.2,
) -> list[ClientSplit]:
    """Partition, then split each client's rows into train and test."""
    parts = partition(data, clients=clients, method=method, seed=seed, alpha=alpha, column=column)
    out = []
    for j, part in enumerate(parts):
        train, test = train_test_split(part, test_fraction=test_fraction, seed=seed * 1000 + j)
        out.append(ClientSplit(train=train, test=test))
    return out
