"""Shared fixtures: the data folder (``FAIRSYNTH_DATA_DIR``) and small seeded datasets."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity

from common import datasets


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the public datasets; tests that need it skip loudly without it."""
    value = os.environ.get(datasets.DATA_ENV)
    if not value or not (Path(value) / "law_school_clean.csv").is_file():
        pytest.skip(f"set {datasets.DATA_ENV} to a folder with law_school_clean.csv "
                    "(../shared/data)")
    return Path(value).resolve()


@pytest.fixture(scope="session")
def law_school(data_dir):
    return datasets.load("law_school", root=data_dir)


@pytest.fixture()
def toy():
    """A small biased dataset (600 rows, 4 features)."""
    return datasets.make_synthetic(600, seed=3)


@pytest.fixture()
def task_identity(monkeypatch):
    """Flower stamps new messages with the process's run and node ids; the runtime sets them,
    a test that builds messages without the runtime sets them here (and restores them)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture()
def flower_env(tmp_path, monkeypatch):
    """A private FLWR_HOME and no telemetry, for tests that start Flower's runtime.

    Ray's shutdown leaves file handles (``/dev/null``) for the garbage collector; collecting
    them here, while the test's own warning filters apply, keeps their ResourceWarning from
    surfacing in whichever test happens to run the collector next.
    """
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    yield
    gc.collect()

