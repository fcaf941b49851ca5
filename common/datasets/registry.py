"""The named datasets, by name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from common.datasets import adult, law_school, synthetic
from common.datasets.base import Dataset
from common.errors import ConfigError

#: Every named dataset, by name (read-only).
DATASETS: Mapping[str, Dataset] = MappingProxyType(
    {d.name: d for d in (law_school.DATASET, adult.DATASET, synthetic.DATASET)}
)


def names() -> tuple[str, ...]:
    """The names of the named datasets (e.g. for argparse ``choices``)."""
    return tuple(DATASETS)


def get(name: str) -> Dataset:
    """The named dataset ``name``.

    Raises
    ------
    ConfigError
        On an unknown name; the message lists the valid ones.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of {list(names())}, or give a CSV file of "
            "your own (--csv)."
        ) from None


def fetchable() -> tuple[str, ...]:
    """The names of the datasets with public files to fetch."""
    return tuple(name for name, d in DATASETS.items() if d.sources)
