"""What a named dataset is (:class:`Dataset`) and where its files live (:func:`data_dir`).

Data directory, in order: an explicit ``data_dir`` (``--data-dir``), the environment variable
``FAIRSYNTH_DATA_DIR``, else ``$XDG_CACHE_HOME/fairsynth`` (``~/.cache/fairsynth``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from common.errors import ConfigError, DataError
from common.schema import Schema, TabularData, from_frame

DATA_ENV = "FAIRSYNTH_DATA_DIR"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory (see the module docstring)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fairsynth"


def require_file(path: Path, dataset: str) -> Path:
    """``path``, or a :class:`DataError` that says how to fetch ``dataset``'s files."""
    if not path.is_file():
        raise DataError(
            f"{path} does not exist. Download it with `fairsynth data fetch {dataset}` "
            f"(or point --data-dir / {DATA_ENV} at a folder that holds {path.name})."
        )
    return path


@dataclasses.dataclass(frozen=True)
class Source:
    """One public file of a dataset: where it is published and its SHA-256 digest."""

    filename: str
    url: str
    sha256: str


#: ``(root, seed) -> frame``: the whole dataset in its own format (``seed`` draws a generated
#: dataset and is ignored by a dataset read from files).
FrameReader = Callable[[Path, int], pd.DataFrame]
#: ``path -> frame``: one file in the dataset's own format, with the columns named and the
#: values cleaned as :attr:`Dataset.frame_reader` cleans them.
FileReader = Callable[[Path], pd.DataFrame]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named dataset: its public schema, its files, and how to read them.

    Attributes
    ----------
    name : str
        The name used on the command line and in the run configuration.
    description : str
        One line for ``--help`` and the documentation.
    sensitive_columns : tuple of str
        The columns it offers as the sensitive attribute.
    default_sensitive : str
        The one used when none is named.
    schema_for : callable
        ``sensitive -> Schema``: the declared (public) schema with that sensitive column.
    frame_reader : callable
        See :data:`FrameReader`.
    file_reader : callable
        See :data:`FileReader`.
    sources : tuple of Source
        Its public files, fetched by ``fairsynth data fetch`` (empty: a generated dataset).
    header : bool
        Whether its own files start with a header row (Adult's do not); files written for
        clients (:meth:`read_frame`'s rows) should follow it.
    """

    name: str
    description: str
    sensitive_columns: tuple[str, ...]
    default_sensitive: str
    schema_for: Callable[[str], Schema] = dataclasses.field(repr=False)
    frame_reader: FrameReader = dataclasses.field(repr=False)
    file_reader: FileReader = dataclasses.field(repr=False)
    sources: tuple[Source, ...] = ()
    header: bool = True

    def __post_init__(self) -> None:
        if self.default_sensitive not in self.sensitive_columns:
            raise ValueError(f"{self.name}: the default sensitive column "
                             f"{self.default_sensitive!r} is not one it offers")

    def check_sensitive(self, sensitive: str | None) -> str:
        """``sensitive``, or the default when it is None or empty.

        Raises
        ------
        ConfigError
            When the dataset does not offer ``sensitive``; the message lists the ones it does.
        """
        if not sensitive:
            return self.default_sensitive
        if sensitive not in self.sensitive_columns:
            raise ConfigError(
                f"{self.name}'s sensitive column must be one of {list(self.sensitive_columns)}, "
                f"got {sensitive!r}. Fix --sensitive (or leave it empty for "
                f"{self.default_sensitive!r})."
            )
        return sensitive

    def schema(self, sensitive: str | None = None) -> Schema:
        """The public schema with ``sensitive`` (default: :attr:`default_sensitive`), known
        without reading any rows."""
        return self.schema_for(self.check_sensitive(sensitive))

    @property
    def files(self) -> tuple[str, ...]:
        """The names of its files in the data folder."""
        return tuple(source.filename for source in self.sources)

    def read_frame(self, root: str | os.PathLike, *, seed: int = 0) -> pd.DataFrame:
        """The whole dataset in its own format, from the data folder ``root``: row ``i`` is row
        ``i`` of :meth:`read_full` (so a partition of one indexes the other)."""
        return self.frame_reader(Path(root), seed)

    def read_full(self, root: str | os.PathLike, *, sensitive: str | None = None,
                  seed: int = 0) -> TabularData:
        """The whole dataset from the data folder ``root``, validated against its schema
        (``seed`` draws a generated dataset)."""
        schema = self.schema(sensitive)
        return from_frame(self.read_frame(root, seed=seed), schema)

    def read_client_file(self, path: str | os.PathLike, *, sensitive: str | None = None
                         ) -> TabularData:
        """One client's rows from ``path``, a CSV file in the dataset's own format.

        Raises
        ------
        DataError
            When the file is missing, not a readable CSV, or does not fit the schema.
        """
        schema = self.schema(sensitive)
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path} does not exist; expected a CSV file of {self.name} rows.")
        try:
            frame = self.file_reader(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(
                f"{path} is not a readable CSV file of {self.name} rows ({exc}); write it in "
                f"the dataset's own format ({'with' if self.header else 'without'} a header)."
            ) from exc
        return from_frame(frame, schema)
