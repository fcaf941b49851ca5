"""Law School (LSAC National Longitudinal Bar Passage Study, as cleaned by Le Quy et al.):
one CSV with a header row; race (White privileged) is the sensitive column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from common.datasets.base import Dataset, Source, require_file
from common.schema import Column, Schema

FILENAME = "law_school_clean.csv"

LAW_SCHOOL = Schema(
    name="law_school",
    features=(
        Column("decile1b", bounds=(1.0, 10.0), integer=True),
        Column("decile3", bounds=(1.0, 10.0), integer=True),
        Column("lsat", bounds=(10.0, 48.0)),  # the 10-48 LSAT scale of 1991
        Column("ugpa", bounds=(0.0, 4.0)),
        Column("zfygpa", bounds=(-7.0, 7.0)),  # z-scores
        Column("zgpa", bounds=(-7.0, 7.0)),
        Column("fulltime", bounds=(1.0, 2.0), integer=True),
        Column("fam_inc", bounds=(1.0, 5.0), integer=True),
        Column("male", bounds=(0.0, 1.0), integer=True),
        Column("tier", bounds=(1.0, 6.0), integer=True),
    ),
    sensitive="race",
    privileged="White",
    label="pass_bar",
    favourable="1",
)


def _schema(sensitive: str) -> Schema:
    return LAW_SCHOOL


def _read_frame(root: Path, seed: int) -> pd.DataFrame:
    return pd.read_csv(require_file(root / FILENAME, "law_school"))


DATASET = Dataset(
    name="law_school",
    description="Law School bar passage (20,798 students); sensitive: race (White privileged)",
    sensitive_columns=("race",),
    default_sensitive="race",
    schema_for=_schema,
    frame_reader=_read_frame,
    file_reader=pd.read_csv,
    sources=(Source(
        FILENAME,
        "https://raw.githubusercontent.com/tailequy/fairness_dataset/main/experiments/data/"
        + FILENAME,
        "23c1b173f3480beb7afc4957b107a9917dfc4a8dc9d87ea6034ec35222152452",
    ),),
)
