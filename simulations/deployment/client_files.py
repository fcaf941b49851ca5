"""Per-client data files of a deployment (``fairsynth deploy-split``): client ``k``'s rows of
the partition ``fairsynth simulate`` uses, in the dataset's own file format, in
``client-k/client.csv`` — the file a SuperNode's ClientApp is given (node config
``data-path``)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from common import datasets, partition
from common.errors import DataError
from common.schema import TabularData

logger = logging.getLogger(__name__)

#: Column that tags each row with its position while the rows are partitioned.
_ROW = "__fairsynth_row__"


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ClientData:
    """A loaded dataset and how it is split among the clients: what :func:`split_to_csv`
    writes.

    Parameters
    ----------
    data : TabularData
        The rows as the loader returns them; row ``i`` must be row ``i`` of
        :func:`source_frame`.
    dataset : str
        The named dataset (``law_school``, ``adult``, ``synthetic``); ignored with ``csv``.
    clients : int
        Number of clients ``K``.
    data_dir : str or Path, optional
        Folder of the named dataset (default: :func:`common.datasets.data_dir`'s).
    csv : str or Path, optional
        Your own CSV file instead of ``dataset``.
    partition : str
        How the rows are split among the clients (:data:`common.partition.PARTITIONS`).
    alpha : float
        Dirichlet α over the sensitive attribute (``partition="dirichlet"``).
    partition_column : str, optional
        The natural column (``partition="column"``).
    seed : int
        Partition seed.
    """

    data: TabularData
    dataset: str
    clients: int
    data_dir: str | Path | None = None
    csv: str | Path | None = None
    partition: str = "iid"
    alpha: float = 0.5
    partition_column: str | None = None
    seed: int = 0

    @property
    def headerless(self) -> bool:
        """A dataset whose own files have no header row (Adult) gets client files without one."""
        return not self.csv and not datasets.get(self.dataset).header


def source_frame(source: ClientData) -> pd.DataFrame:
    """The dataset's rows in its own file format, row ``i`` being row ``i`` of
    ``source.data``: your own CSV as it is; a named dataset as its reader gives it
    (:meth:`common.datasets.Dataset.read_frame`: Adult's two files pooled, its ``?`` rows
    dropped; the synthetic dataset generated from ``seed``)."""
    if source.csv:
        return pd.read_csv(source.csv, skipinitialspace=True)
    return datasets.get(source.dataset).read_frame(datasets.data_dir(source.data_dir),
                                                   seed=source.seed)


def client_rows(source: ClientData) -> list[np.ndarray]:
    """Row positions of each client's partition — the partition ``fairsynth simulate`` uses
    (same method, seed, α and column), in increasing order."""
    data = source.data
    tagged = TabularData(data.schema, data.features.assign(**{_ROW: np.arange(len(data))}),
                         data.s, data.y)
    parts = partition.partition(tagged, clients=source.clients, method=source.partition,
                                seed=source.seed, alpha=source.alpha,
                                column=source.partition_column)
    return [part.features[_ROW].to_numpy() for part in parts]


def split_to_csv(source: ClientData, out: Path) -> dict[Path, int]:
    """Write client ``k``'s rows to ``out/client-k/client.csv`` (``k = 1..K``).

    Each file holds one client's partition only, in the dataset's own format
    (:func:`source_frame`), so that a SuperNode's ClientApp can be given its file alone
    (node config ``data-path``); the client splits it 80/20 itself. Returns each file with its
    number of rows.
    """
    frame = source_frame(source)
    if len(frame) != len(source.data):
        raise DataError(f"the source file has {len(frame)} rows but the loader kept "
                        f"{len(source.data)}; the per-client files cannot be matched to the "
                        "partition.")
    written = {}
    for k, rows in enumerate(client_rows(source), start=1):
        path = Path(out) / f"client-{k}" / "client.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.iloc[rows].to_csv(path, index=False, header=not source.headerless)
        written[path] = len(rows)
    logger.info("wrote %d client files to %s", len(written), out)
    return written
