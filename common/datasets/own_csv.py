"""A CSV file of your own (``--csv``): not a named dataset, so its schema is read from the
file (the roles of the columns come from the flags)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import DataError
from common.schema import Column, Schema, TabularData, binarise, from_frame


def load_csv(
    path: str | os.PathLike,
    *,
    sensitive: str,
    privileged: str | None,
    label: str,
    favourable: str | None,
    drop: Sequence[str] = (),
    categorical: Sequence[str] = (),
    name: str | None = None,
) -> TabularData:
    """Load any CSV: every column but the sensitive, label and dropped ones is a feature.

    Columns named in ``categorical`` (and any non-numeric column) are categorical, with the
    categories found in the file; all others are continuous. Bounds are left undeclared, so a
    DP generator must spend budget to learn them (it says so in its report).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass the path of a CSV file with --csv.")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV file ({exc}).") from exc
    unknown = [c for c in [*drop, *categorical] if c not in frame.columns]
    if unknown:
        raise DataError(
            f"--drop/--categorical name column(s) {unknown} that {path.name} does not have; "
            f"its columns are {list(frame.columns)}."
        )
    for role, col in (("sensitive", sensitive), ("label", label)):
        if col not in frame.columns:
            raise DataError(
                f"the {role} column {col!r} is not in {path.name}; its columns are "
                f"{list(frame.columns)}. Fix --{role}."
            )
    for role, col, value, which in (("sensitive", sensitive, privileged, "privileged"),
                                    ("label", label, favourable, "favourable")):
        if value is None:  # raises: names the values and the flag to pass
            binarise(frame[col], role=role, column=col, positive=None, which=which, flag=which)
    feats = []
    for col in frame.columns:
        if col in (sensitive, label) or col in drop:
            continue
        numeric = pd.to_numeric(frame[col], errors="coerce")
        text = (numeric.isna() & frame[col].notna()).to_numpy()
        if col not in categorical and text.any() and text.mean() < 0.5 * frame[col].notna().mean():
            # Mostly numbers with some text: a typo or a missing-value marker, not categories.
            row = int(np.argmax(text))
            raise DataError(
                f"column {col!r} is numeric except for {int(text.sum())} value(s) such as "
                f"{frame[col].iloc[row]!r} (row {row}). Fix or drop those rows, or declare the "
                f"column categorical with --categorical {col}."
            )
        is_cat = col in categorical or text.any()
        if is_cat:
            cats = tuple(sorted(frame[col].dropna().astype(str).str.strip().unique()))
            feats.append(Column(col, kind="categorical", categories=cats))
        else:
            feats.append(Column(col))
    if not feats:
        raise DataError(f"{path.name} has no feature columns left after --drop.")
    schema = Schema(
        name=name or path.stem, features=tuple(feats), sensitive=sensitive,
        privileged=str(privileged), label=label, favourable=str(favourable),
    )
    return from_frame(frame, schema)
