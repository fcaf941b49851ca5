"""A node's data: which rows it holds, read and split once per process.

Simulation: the node config holds ``partition-id`` and ``num-partitions``; the node takes
partition ``k`` of the configured dataset's federated split
(:func:`common.partition.federated_split`), the same split every node computes. Deployment:
the node config holds ``data-path``, a CSV file with this client's rows only, in the dataset's
own format (:meth:`common.datasets.Dataset.read_client_file`), which the client splits into
train and test itself; with ``partition-id`` as well it splits as partition ``k`` of a
simulation does, so a deployment reproduces the simulation.

Flower calls the ClientApp once per message (a FedAvg round, an evaluation, ...), and in a
simulation one Ray actor process serves many nodes. So that K nodes cost one read and one split
per process rather than one per message, this module keeps three small least-recently-used
memos per process:

* the whole dataset (:func:`load_dataset`), by its data settings: at most
  :data:`DATASETS_KEPT`;
* its federated split (:func:`federation`), by the data settings, the split settings and the
  number of clients: at most :data:`FEDERATIONS_KEPT`;
* a deployment node's split of its own file, by the file (path, modification time, size), the
  settings that read it, its partition id, the seed and the test fraction: at most
  :data:`CLIENT_FILES_KEPT`.

A key holds every setting that determines the value, and a file's modification time and size
(the data file's, and a declared schema file's), so a changed setting or a rewritten file is
read anew. The values are shared between messages and nodes: **read-only**.
:class:`~common.schema.TabularData` is frozen, but its frame and arrays are not; the client's
handlers and synthesizers only read them (they copy before they change anything), and so must
any new caller. :func:`clear_cache` empties the memos.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from common import datasets, partition
from common.errors import ConfigError, DataError
from common.partition import ClientSplit
from common.run_config import RunConfig
from common.schema import TabularData

logger = logging.getLogger(__name__)

DATA_PATH = "data-path"
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"

#: How many whole datasets, federated splits and client-file splits a process keeps.
DATASETS_KEPT = 2
FEDERATIONS_KEPT = 4
CLIENT_FILES_KEPT = 4

V = TypeVar("V")


class _Memo(Generic[V]):
    """At most ``size`` values by key, the least recently used dropped first (thread-safe)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: collections.OrderedDict[Hashable, V] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The value of ``key``, computed (once) by ``compute`` when it is not kept."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            value = compute()  # an exception leaves nothing behind
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


_DATASETS: _Memo[TabularData] = _Memo(DATASETS_KEPT)
_FEDERATIONS: _Memo[tuple[ClientSplit, ...]] = _Memo(FEDERATIONS_KEPT)
_CLIENT_FILES: _Memo[ClientSplit] = _Memo(CLIENT_FILES_KEPT)


def clear_cache() -> None:
    """Forget every dataset and split this process has kept."""
    for memo in (_DATASETS, _FEDERATIONS, _CLIENT_FILES):
        memo.clear()


# --------------------------------------------------------------------------- reading


def read_dataset(config: RunConfig) -> TabularData:
    """The whole configured dataset, read now (a named dataset or your own CSV)."""
    if config.csv:
        return _load_csv(config.csv, config)
    return datasets.load(config.dataset, root=config.data_dir or None,
                         sensitive=config.sensitive or None, seed=config.seed)


def _load_csv(path: str | Path, config: RunConfig) -> TabularData:
    """The CSV at ``path`` read as ``config`` says: held to the declared schema file
    (``schema``) when one is set, else with its schema read from the rows."""
    missing = [k for k in ("sensitive", "label") if not getattr(config, k)]
    if missing and not config.schema:
        raise ConfigError(f"run config: csv needs {', '.join(missing)} as well (or a declared "
                          "schema, schema, that names them).")
    names = config.name_list
    return datasets.load_csv(path, sensitive=config.sensitive or None,
                             privileged=config.privileged or None, label=config.label or None,
                             favourable=config.favourable or None,
                             drop=names["drop"], categorical=names["categorical"],
                             schema=config.schema or None)


def read_client_file(path: str | Path, config: RunConfig) -> TabularData:
    """One client's rows from ``path``, in the configured dataset's own file format (or, with
    ``csv`` set, read as that CSV is)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"the node's data-path {path} does not exist; point data-path at the "
                        "CSV with this client's rows.")
    if config.csv:
        return _load_csv(path, config)
    return datasets.get(config.dataset).read_client_file(path, sensitive=config.sensitive or None)


# --------------------------------------------------------------------------- cache keys


def _stamp(path: str | Path) -> tuple:
    """A file's identity for a cache key: its resolved path, modification time and size."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return (str(path.resolve()),)  # missing: reading it raises, and nothing is kept
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _format_key(config: RunConfig) -> tuple:
    """The settings that turn a file into rows (with the declared schema file's identity)."""
    if config.csv:
        declared = _stamp(config.schema) if config.schema else None
        return ("csv", config.sensitive, config.privileged, config.label, config.favourable,
                config.drop, config.categorical, declared)
    return ("dataset", config.dataset, config.sensitive)


def _dataset_key(config: RunConfig) -> tuple:
    """Everything that determines the whole dataset: the settings that read it, the files it
    is read from (in the resolved data folder) and the seed (which draws ``synthetic``)."""
    if config.csv:
        files: tuple = (config.csv,)
    else:
        root = datasets.data_dir(config.data_dir or None)
        files = tuple(root / name for name in datasets.get(config.dataset).files)
    return (_format_key(config), tuple(_stamp(f) for f in files), config.seed)


# --------------------------------------------------------------------------- cached loading


def load_dataset(config: RunConfig) -> TabularData:
    """The whole configured dataset, read once per process (shared: read-only)."""
    return _DATASETS.get(_dataset_key(config), lambda: read_dataset(config))


def federation(config: RunConfig, clients: int) -> tuple[ClientSplit, ...]:
    """The configured dataset's split into ``clients`` train/test splits, computed once per
    process (shared: read-only); split ``k`` is what node ``k`` of a simulation holds."""
    key = (_dataset_key(config), config.partition, config.alpha, config.partition_column,
           config.test_fraction, config.seed, clients)

    def split() -> tuple[ClientSplit, ...]:
        return tuple(partition.federated_split(
            load_dataset(config), clients=clients, method=config.partition, seed=config.seed,
            alpha=config.alpha, column=config.partition_column or None,
            test_fraction=config.test_fraction))

    return _FEDERATIONS.get(key, split)


def _file_split(path: Path, k: int | None, config: RunConfig) -> ClientSplit:
    data = read_client_file(path, config)
    # With its index k known, a client splits as partition k of a simulation does
    # (common.partition.federated_split), so a deployment reproduces the simulation.
    seed = config.seed * 1000 + k if k is not None else config.seed
    train, test = partition.train_test_split(data, test_fraction=config.test_fraction,
                                             seed=seed)
    return ClientSplit(train=train, test=test)


def load_split(node_config: Mapping[str, Any], config: RunConfig) -> ClientSplit:
    """This node's train/test rows (see the module docstring), loaded and split once per
    process (shared: read-only).

    Raises
    ------
    ConfigError
        When the node config names no data, or a partition id outside ``0..K-1``.
    DataError
        When the node's file or the dataset cannot be read.
    """
    if DATA_PATH in node_config:
        path = Path(str(node_config[DATA_PATH]))
        if not path.is_file():
            raise DataError(f"the node's data-path {path} does not exist; point data-path at "
                            "the CSV with this client's rows.")
        k = node_config.get(PARTITION_ID)
        k = int(k) if k is not None else None
        key = (_stamp(path), _format_key(config), k, config.seed, config.test_fraction)
        return _CLIENT_FILES.get(key, lambda: _file_split(path, k, config))
    if PARTITION_ID not in node_config or NUM_PARTITIONS not in node_config:
        raise ConfigError(
            f"the node config has neither {DATA_PATH} (deployment) nor {PARTITION_ID} and "
            f"{NUM_PARTITIONS} (simulation); it has {sorted(node_config)}. Start the SuperNode "
            f"with --node-config \"{DATA_PATH}=/path/to/client.csv\"."
        )
    k, total = int(node_config[PARTITION_ID]), int(node_config[NUM_PARTITIONS])
    if not 0 <= k < total:
        raise ConfigError(f"{PARTITION_ID} = {k} is outside 0..{total - 1}.")
    return federation(config, total)[k]
