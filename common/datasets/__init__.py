"""Datasets: a registry of named datasets, a bring-your-own-CSV loader, and fetching.

Each named dataset is a :class:`Dataset` (``common/datasets/<name>.py``): its declared
public schema, the sensitive columns it offers, how to read it whole from the data folder, in
its own raw format (for per-client files), and one client's own file; and its public files
with their SHA-256. :data:`DATASETS` maps names to them; :func:`get` looks one up.

Data directory, in order: an explicit ``data_dir`` (``--data-dir``), the environment variable
``FAIRSYNTH_DATA_DIR``, else ``$XDG_CACHE_HOME/fairsynth`` (``~/.cache/fairsynth``).
``fairsynth data fetch law_school|adult`` downloads the public files and checks their SHA-256.
A CSV file of your own (:func:`load_csv`) is a separate source, not a named dataset; its
public schema is the one its owner declares in a JSON file (:func:`read_schema`), drafted from
the rows by :func:`draft_schema` and :func:`draft_text` for the owner to review.
"""

from __future__ import annotations

import os

from common.datasets.adult import ADULT_COLUMNS, adult_schema
from common.datasets.base import DATA_ENV, Dataset, Source, data_dir
from common.datasets.fetching import fetch, sha256
from common.datasets.law_school import LAW_SCHOOL
from common.datasets.own_csv import draft_schema, draft_text, load_csv, read_schema
from common.datasets.registry import DATASETS, fetchable, get, names
from common.datasets.synthetic import make_synthetic, synthetic_frame, synthetic_schema
from common.schema import Schema, TabularData

__all__ = [
    "ADULT_COLUMNS", "DATASETS", "DATA_ENV", "LAW_SCHOOL", "Dataset", "Source", "adult_schema",
    "data_dir", "draft_schema", "draft_text", "fetch", "fetchable", "get", "load", "load_csv",
    "make_synthetic", "names", "public_schema", "read_schema", "sha256", "synthetic_frame",
    "synthetic_schema",
]


def load(name: str, *, root: str | os.PathLike | None = None, sensitive: str | None = None,
         seed: int = 0) -> TabularData:
    """Load the named dataset ``name`` whole, from the data folder (:func:`data_dir` of
    ``root``); ``seed`` draws a generated dataset (``synthetic``)."""
    return get(name).read_full(data_dir(root), sensitive=sensitive, seed=seed)


def public_schema(name: str, *, sensitive: str | None = None) -> Schema:
    """The declared schema of a named dataset, known without reading any rows (the server
    checks every client's release against it)."""
    return get(name).schema(sensitive)
