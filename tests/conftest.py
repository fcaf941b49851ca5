"""Shared fixtures: the data folder (``FAIRSYNTH_DATA_DIR``) and small seeded datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common import datasets


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the public datasets; tests that need it skip loudly without it."""
    value = os.environ.get(datasets.DATA_ENV)
    if not value or not (Path(value) / "law_school_clean.csv").is_file():
        pytest.skip(f"set {datasets.DATA_ENV} to a folder with law_school_clean.csv (../shared/data)")
    return Path(value).resolve()


@pytest.fixture(scope="session")
def law_school(data_dir):
    return datasets.load("law_school", root=data_dir)


@pytest.fixture()
def toy():
    """A small biased dataset (600 rows, 4 features)."""
    return datasets.make_synthetic(600, seed=3)
