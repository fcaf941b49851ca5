"""Dataset loaders with declared public schemas, a bring-your-own-CSV loader, and fetching.

Data directory, in order: an explicit ``data_dir`` (``--data-dir``), the environment variable
``FAIRSYNTH_DATA_DIR``, else ``$XDG_CACHE_HOME/fairsynth`` (``~/.cache/fairsynth``).
``fairsynth data fetch law_school|adult`` downloads the public files and checks their SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import ConfigError, DataError
from common.schema import Column, Schema, TabularData, binarise, from_frame

logger = logging.getLogger(__name__)

DATA_ENV = "FAIRSYNTH_DATA_DIR"

#: Public sources and their SHA-256 digests (shared/data/SHA256SUMS).
SOURCES: dict[str, dict[str, tuple[str, str]]] = {
    "law_school": {
        "law_school_clean.csv": (
            "https://raw.githubusercontent.com/tailequy/fairness_dataset/main/experiments/data/"
            "law_school_clean.csv",
            "23c1b173f3480beb7afc4957b107a9917dfc4a8dc9d87ea6034ec35222152452",
        ),
    },
    "adult": {
        name: (f"https://archive.ics.uci.edu/ml/machine-learning-databases/adult/{name}", digest)
        for name, digest in (
            ("adult.data", "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d"),
            ("adult.test", "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05"),
            ("adult.names", "c248284c0b5de30c9e1958d6cdd168a34a654758b620e68f46aefa83fc0a576a"),
        )
    },
}

DATASETS = ("law_school", "adult", "synthetic")


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory (see module docstring)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fairsynth"


def _require(path: Path, dataset: str) -> Path:
    if not path.is_file():
        raise DataError(
            f"{path} does not exist. Download it with `fairsynth data fetch {dataset}` "
            f"(or point --data-dir / {DATA_ENV} at a folder that holds {path.name})."
        )
    return path


# --------------------------------------------------------------------------- Law School

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


def load_law_school(root: Path) -> TabularData:
    path = _require(root / "law_school_clean.csv", "law_school")
    return from_frame(pd.read_csv(path), LAW_SCHOOL)


# --------------------------------------------------------------------------- Adult

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
]
_ADULT_CATEGORIES = {
    "workclass": "Private, Self-emp-not-inc, Self-emp-inc, Federal-gov, Local-gov, State-gov, "
    "Without-pay, Never-worked",
    "marital-status": "Married-civ-spouse, Divorced, Never-married, Separated, Widowed, "
    "Married-spouse-absent, Married-AF-spouse",
    "occupation": "Tech-support, Craft-repair, Other-service, Sales, Exec-managerial, "
    "Prof-specialty, Handlers-cleaners, Machine-op-inspct, Adm-clerical, Farming-fishing, "
    "Transport-moving, Priv-house-serv, Protective-serv, Armed-Forces",
    "relationship": "Wife, Own-child, Husband, Not-in-family, Other-relative, Unmarried",
    "race": "White, Asian-Pac-Islander, Amer-Indian-Eskimo, Other, Black",
    "sex": "Female, Male",
}
_ADULT_PRIVILEGED = {"sex": "Male", "race": "White"}


def adult_schema(sensitive: str = "sex") -> Schema:
    """Adult with ``sex`` (Male privileged) or ``race`` (White privileged) as sensitive column.

    ``education`` is dropped (``education-num`` encodes it) and so is ``native-country``
    (41 sparse categories that add little to a linear model).
    """
    if sensitive not in _ADULT_PRIVILEGED:
        raise ConfigError(
            f"Adult's sensitive column must be one of {sorted(_ADULT_PRIVILEGED)}, got {sensitive!r}."
        )
    other = "race" if sensitive == "sex" else "sex"
    cats = {k: tuple(v.split(", ")) for k, v in _ADULT_CATEGORIES.items()}
    return Schema(
        name="adult",
        features=(
            Column("age", bounds=(17.0, 90.0), integer=True),
            Column("workclass", kind="categorical", categories=cats["workclass"]),
            Column("fnlwgt", bounds=(1.0e4, 1.5e6), integer=True),
            Column("education-num", bounds=(1.0, 16.0), integer=True),
            Column("marital-status", kind="categorical", categories=cats["marital-status"]),
            Column("occupation", kind="categorical", categories=cats["occupation"]),
            Column("relationship", kind="categorical", categories=cats["relationship"]),
            Column(other, kind="categorical", categories=cats[other]),
            Column("capital-gain", bounds=(0.0, 99999.0), integer=True),
            # Dollar amounts in a five-digit census field (capital gains are top-coded at its
            # maximum, 99999): the field's range, not the data's.
            Column("capital-loss", bounds=(0.0, 99999.0), integer=True),
            Column("hours-per-week", bounds=(1.0, 99.0), integer=True),
        ),
        sensitive=sensitive,
        privileged=_ADULT_PRIVILEGED[sensitive],
        label="income",
        favourable=">50K",
    )


def load_adult(root: Path, sensitive: str = "sex") -> TabularData:
    """UCI Adult (train and test files pooled; rows with a ``?`` are dropped, as is usual)."""
    frames = []
    for name, skip in (("adult.data", 0), ("adult.test", 1)):
        path = _require(root / name, "adult")
        frame = pd.read_csv(
            path, header=None, names=ADULT_COLUMNS, skiprows=skip, skipinitialspace=True,
            na_values="?", dtype=str,
        )
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["income"] = frame["income"].str.rstrip(".")
    before = len(frame)
    frame = frame.dropna().reset_index(drop=True)
    logger.info("adult: dropped %d of %d rows with missing values", before - len(frame), before)
    return from_frame(frame, adult_schema(sensitive))


# --------------------------------------------------------------------------- synthetic


def make_synthetic(
    n: int = 4000,
    *,
    n_features: int = 4,
    privileged_share: float = 0.7,
    bias: float = 1.0,
    label_bias: float = 0.8,
    seed: int = 0,
) -> TabularData:
    r"""A seeded, biased toy dataset for offline demos and property tests.

    ``s ~ Bernoulli(privileged_share)``; ``z ~ N(bias · s · 1/√k, I)`` (features shifted for
    the privileged group); ``y ~ Bernoulli(σ(zᵀβ + label_bias · (2s − 1)))`` (labels favour the
    privileged group directly). ``bias = label_bias = 0`` gives a fair dataset.
    """
    if n < 8:
        raise ConfigError(f"the synthetic dataset needs n ≥ 8 rows, got {n}.")
    if not 0.0 < privileged_share < 1.0:
        raise ConfigError(f"privileged_share must lie in (0, 1), got {privileged_share}.")
    rng = np.random.default_rng(seed)
    s = (rng.random(n) < privileged_share).astype(np.int8)
    z = rng.normal(size=(n, n_features)) + bias * s[:, None] / np.sqrt(n_features)
    beta = np.linspace(1.0, -0.5, n_features)
    logits = z @ beta + label_bias * (2 * s - 1)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int8)
    schema = synthetic_schema(n_features)
    names = schema.feature_names
    frame = pd.DataFrame(z, columns=names)
    frame["group"], frame["label"] = s, y
    return from_frame(frame, schema)


def public_schema(name: str, *, sensitive: str | None = None) -> Schema:
    """The declared schema of a named dataset, known without reading any rows (the server
    checks every client's release against it)."""
    if name == "law_school":
        return LAW_SCHOOL
    if name == "adult":
        return adult_schema(sensitive or "sex")
    if name == "synthetic":
        return synthetic_schema()
    raise ConfigError(f"unknown dataset {name!r}; choose one of {list(DATASETS)} or use --csv.")


def synthetic_schema(n_features: int = 4) -> Schema:
    """The schema of :func:`make_synthetic`."""
    return Schema(
        name="synthetic",
        features=tuple(Column(f"x{j}", bounds=(-8.0, 8.0)) for j in range(n_features)),
        sensitive="group", privileged="1", label="label", favourable="1",
    )


# --------------------------------------------------------------------------- your own CSV


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


# --------------------------------------------------------------------------- entry points


def load(name: str, *, root: str | os.PathLike | None = None, sensitive: str | None = None,
         seed: int = 0) -> TabularData:
    """Load a named dataset (``law_school``, ``adult`` or ``synthetic``)."""
    if name == "law_school":
        if sensitive not in (None, "race"):
            raise ConfigError("Law School's sensitive attribute is 'race'.")
        return load_law_school(data_dir(root))
    if name == "adult":
        return load_adult(data_dir(root), sensitive or "sex")
    if name == "synthetic":
        return make_synthetic(seed=seed)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {list(DATASETS)} or use --csv.")


def fetch(name: str, *, root: str | os.PathLike | None = None,
          base_url: str | None = None) -> list[Path]:
    """Download ``name``'s files into the data directory and verify their SHA-256.

    ``base_url`` replaces each file's public folder (e.g. a ``file://`` mirror). A file that is
    already present with the right digest is kept. A digest mismatch deletes the download and
    raises, so nothing unverified is left behind.
    """
    if name not in SOURCES:
        raise ConfigError(f"nothing to fetch for {name!r}; choose one of {list(SOURCES)}.")
    target = data_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for filename, (url, digest) in SOURCES[name].items():
        dest = target / filename
        if dest.is_file() and _sha256(dest) == digest:
            out.append(dest)
            continue
        if base_url:
            url = base_url.rstrip("/") + "/" + filename
        logger.info("fetching %s", url)
        with tempfile.NamedTemporaryFile(dir=target, delete=False) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (public https/file)
                    shutil.copyfileobj(resp, tmp)
            except OSError as exc:
                tmp.close()
                os.unlink(tmp.name)
                raise DataError(f"could not download {url} ({exc}); check the network or --base-url.") from exc
        got = _sha256(Path(tmp.name))
        if got != digest:
            os.unlink(tmp.name)
            raise DataError(
                f"{filename} from {url} has SHA-256 {got}, expected {digest}; the download was "
                "discarded. The source may have changed: fetch it by hand and compare."
            )
        os.replace(tmp.name, dest)
        out.append(dest)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
