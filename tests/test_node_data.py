"""A node's data (clients/node_data.py): read and split once per process, not per message."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from federation_helpers import LocalGrid, open_app

from clients import node_data
from common import datasets, partition
from common.datasets.base import Dataset
from common.run_config import RunConfig
from server.baselines import run_baseline
from server.oneshot import run_oneshot
from server.traffic import CountingGrid

RUN = {"dataset": "synthetic", "seed": 3, "min-clients": 2}


@pytest.fixture(autouse=True)
def fresh_cache():
    node_data.clear_cache()
    yield
    node_data.clear_cache()


@pytest.fixture()
def reads(monkeypatch):
    """Counts of the dataset reads (whole dataset, one client's file) and federated splits."""
    counts = {"full": 0, "file": 0, "split": 0}

    def counting(kind, original):
        def wrapped(*args, **kwargs):
            counts[kind] += 1
            return original(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(Dataset, "read_frame", counting("full", Dataset.read_frame))
    monkeypatch.setattr(Dataset, "read_client_file",
                        counting("file", Dataset.read_client_file))
    monkeypatch.setattr(partition, "federated_split",
                        counting("split", partition.federated_split))
    return counts


def _arrays(split):
    return [split.train.to_array(), split.test.to_array()]


def test_every_node_of_a_process_shares_one_read_and_one_split(reads):
    config = RunConfig.from_mapping(RUN)
    clients = 4
    first = [node_data.load_split({"partition-id": k, "num-partitions": clients}, config)
             for k in range(clients)]
    for _ in range(3):  # later messages of every node
        for k in range(clients):
            again = node_data.load_split({"partition-id": k, "num-partitions": clients}, config)
            assert again is first[k]
    assert reads == {"full": 1, "file": 0, "split": 1}
    # the same rows as a split computed here from the dataset read afresh
    expected = partition.federated_split(datasets.load("synthetic", seed=3), clients=clients,
                                         seed=3)
    for got, want in zip(first, expected):
        for a, b in zip(_arrays(got), _arrays(want)):
            np.testing.assert_array_equal(a, b)


def test_the_cache_key_holds_every_data_setting_and_nothing_else(reads):
    config = RunConfig.from_mapping(RUN)
    node = {"partition-id": 0, "num-partitions": 2}
    base = node_data.load_split(node, config)
    # settings that do not touch the data: no new read, no new split
    assert node_data.load_split(node, config.replace(rho=3.0, rounds=7)) is base
    assert reads == {"full": 1, "file": 0, "split": 1}
    # another number of clients: a new split of the same dataset
    node_data.load_split({"partition-id": 0, "num-partitions": 3}, config)
    assert reads == {"full": 1, "file": 0, "split": 2}
    # split settings: new splits, same dataset
    other = node_data.load_split(node, config.replace(test_fraction=0.3))
    node_data.load_split(node, config.replace(partition="dirichlet"))
    assert reads == {"full": 1, "file": 0, "split": 4}
    assert len(other.test) != len(base.test)
    # the seed draws the synthetic dataset: a new read
    node_data.load_split(node, config.replace(seed=4))
    assert reads == {"full": 2, "file": 0, "split": 5}


def test_a_federation_run_reads_each_nodes_data_once(reads, task_identity):
    config = RunConfig.from_mapping({**RUN, "strategy": "fedavg", "rounds": 2})
    local = LocalGrid(open_app(config), 3)
    run_baseline(CountingGrid(local), config)
    # every node answers the moments query, a train message per round and the evaluation
    per_node = [sum(node == n for node, _ in local.delivered) for n in local.contexts]
    assert per_node == [1 + 2 + 1] * 3
    assert reads == {"full": 1, "file": 0, "split": 1}


@pytest.mark.parametrize("order", [
    "fair-only", pytest.param("fair-then-private", marks=pytest.mark.slow)])
def test_the_handlers_leave_the_shared_split_unchanged(task_identity, order):
    """The split is shared by every message of a node: no handler may change it."""
    config = RunConfig.from_mapping({**RUN, "order": order, "iterations": 20,
                                     "generator-options": '{"epochs": 1}',
                                     "strategy": "fairfed", "rounds": 2})
    splits = node_data.federation(config, 2)
    before = copy.deepcopy(splits)
    run_baseline(CountingGrid(LocalGrid(open_app(config), 2)), config)
    run_oneshot(CountingGrid(LocalGrid(open_app(config), 2)), config)
    assert node_data.federation(config, 2) is splits
    for got, want in zip(splits, before):
        for a, b in zip(_arrays(got), _arrays(want)):
            np.testing.assert_array_equal(a, b)
        for part, copied in ((got.train, want.train), (got.test, want.test)):
            assert part.features.equals(copied.features)


def test_a_deployed_node_reads_its_file_once_and_again_when_it_changes(reads, tmp_path):
    path = tmp_path / "client.csv"
    frame = datasets.synthetic_frame(200, seed=1)
    frame.to_csv(path, index=False)
    config = RunConfig.from_mapping(RUN)
    node = {"data-path": str(path), "partition-id": 1}
    first = node_data.load_split(node, config)
    for _ in range(4):
        assert node_data.load_split(node, config) is first
    assert reads == {"full": 0, "file": 1, "split": 0}
    assert len(first.train) + len(first.test) == 200
    frame.iloc[:150].to_csv(path, index=False)  # the file is rewritten: read anew
    rewritten = node_data.load_split(node, config)
    assert reads["file"] == 2
    assert len(rewritten.train) + len(rewritten.test) == 150
