"""Bad input, everywhere it enters: every case of ``docs/bad-input.md``, run for real.

The table in ``docs/bad-input.md`` is the specification: each row names a case (its id), what
the error says and the fix it names. This module runs every case and checks that

* the error carries both the row's "says" and "fix" text (read from the table, so the table
  and the behaviour cannot drift apart), and every case of the table is run here and vice
  versa;
* a command-line case exits with code 2, prints one ``fairsynth …: error:`` line and no
  traceback, and writes nothing (its output folder is not created).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from clients.client_app import load_split, read_client_file
from clients.faults import Fault
from common import datasets, protocol
from common.errors import FairsynthError
from common.run_config import RunConfig
from common.schema import Column, Schema
from server.validation import accept_releases, parse_release
from simulations.cli import main

pytestmark = pytest.mark.usefixtures("task_identity")

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"




# --------------------------------------------------------------------------- inputs


def good_frame(n: int = 80, seed: int = 0) -> pd.DataFrame:
    """A small, valid CSV table: two numeric features, a categorical one, sensitive, label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(n),
        "age": rng.integers(18, 70, n),
        "score": rng.normal(50, 10, n).round(2),
        "region": rng.choice(["north", "south", "east"], n),
        "gender": rng.choice(["F", "M"], n),
        "outcome": rng.integers(0, 2, n),
    })


def csv(tmp: Path, frame: pd.DataFrame, name: str = "data.csv") -> Path:
    path = tmp / name
    frame.to_csv(path, index=False)
    return path


def csv_args(path: Path, *extra: str, privileged: str | None = "F",
             favourable: str | None = "1", sensitive: str = "gender",
             label: str = "outcome") -> list[str]:
    args = ["--csv", str(path), "--sensitive", sensitive, "--label", label, "--drop", "id"]
    if privileged is not None:
        args += ["--privileged", privileged]
    if favourable is not None:
        args += ["--favourable", favourable]
    return [*args, *extra]


# --------------------------------------------------------------------------- runners


def run_cli(tmp: Path, argv: list[str]) -> str:
    """Run ``fairsynth argv --out tmp/out``; the error line. Asserts the CLI contract."""
    out = tmp / "out"
    if argv[0] in ("simulate", "stage1-sweep", "stage2-sweep"):
        argv = [*argv, "--out", str(out)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    text = err.getvalue()
    assert code == 2, f"exit code {code}: {text}"
    assert "Traceback" not in text, text
    assert re.search(r"^fairsynth[\w -]*: error: ", text, re.M), text
    assert not out.exists(), f"{argv[0]} wrote {sorted(out.rglob('*'))} before failing"
    return text


def simulate_with(*flags: str) -> Callable[[Path], str]:
    """A case: ``fairsynth simulate`` on the built-in synthetic dataset with ``flags``."""
    return lambda tmp: run_cli(tmp, ["simulate", "--dataset", "synthetic", *flags])


def raised(fn: Callable[[], object]) -> str:
    """The message of the user error ``fn`` raises."""
    with pytest.raises(FairsynthError) as info:
        fn()
    return str(info.value)


def request(node: int = 7) -> Message:
    msg = Message(RecordDict(), dst_node_id=node, message_type="query")
    msg.metadata.__dict__["_message_id"] = f"q{node}"
    return msg


TOY = datasets.make_synthetic(40, seed=2)


def reply(rows: np.ndarray | None = None, *, schema: Schema = TOY.schema, node: int = 7,
          meta: dict | None = None) -> Message:
    """A one-shot reply as the ClientApp lays it out, with ``rows`` in place of the toy's."""
    rows = TOY.to_array() if rows is None else rows
    content = RecordDict({
        protocol.ROWS: ArrayRecord({protocol.ROWS: Array(rows)}),
        protocol.META: ConfigRecord(
            meta or {protocol.SCHEMA: schema.to_json(), protocol.PRIVACY: "{}"}),
        protocol.METRICS: MetricRecord({protocol.NUM_EXAMPLES: len(rows)}),
    })
    return Message(content, reply_to=request(node))


def rejected(message: Message, **kw) -> str:
    kw.setdefault("max_rows", 1000)
    kw.setdefault("schema", TOY.schema)
    return raised(lambda: parse_release(message, **kw))


def with_column(column: int, value: float) -> np.ndarray:
    rows = TOY.to_array()
    rows[:, column] = value
    return rows


# --------------------------------------------------------------------------- the cases


def _no_majority():
    other = datasets.make_synthetic(40, seed=2, n_features=3)
    replies = [reply(node=1), reply(other.to_array(), schema=other.schema, node=2)]
    return accept_releases(replies, queried=[1, 2], max_rows=1000, min_clients=1)


def _empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


CASES: dict[str, Callable[[Path], str]] = {
    # command line: files and columns
    "csv-missing": lambda t: run_cli(t, ["stage1-sweep", *csv_args(t / "nowhere.csv")]),
    "dataset-file-missing": lambda t: run_cli(
        t, ["simulate", "--data-dir", str(_empty_dir(t))]),
    "column-misspelled": lambda t: run_cli(
        t, ["stage1-sweep", *csv_args(csv(t, good_frame()), sensitive="gendr")]),
    "drop-column-unknown": lambda t: run_cli(
        t, ["stage1-sweep", *csv_args(csv(t, good_frame()), "--categorical", "regionn")]),
    "csv-nan": lambda t: run_cli(t, ["stage1-sweep", *csv_args(
        csv(t, good_frame().assign(score=lambda f: f.score.mask(f.index == 4))))]),
    "csv-inf": lambda t: run_cli(t, ["stage1-sweep", *csv_args(
        csv(t, good_frame().assign(score=lambda f: f.score.mask(f.index == 9, np.inf))))]),
    "csv-nan-columns": lambda t: run_cli(t, ["stage1-sweep", *csv_args(
        csv(t, good_frame().assign(score=lambda f: f.score.mask(f.index < 3),
                                   region=lambda f: f.region.mask(f.index == 7))))]),
    "csv-identifier": lambda t: run_cli(t, ["stage1-sweep", *csv_args(
        csv(t, good_frame().assign(name=lambda f: [f"person {i}" for i in f.index])))]),
    "csv-text-in-numeric": lambda t: run_cli(t, ["stage1-sweep", *csv_args(
        csv(t, good_frame().astype({"age": object}).assign(
            age=lambda f: f.age.mask(f.index == 3, "forty"))))]),
    "csv-unreadable": lambda t: run_cli(t, ["stage1-sweep", *csv_args(
        _binary_file(t))]),
    "sensitive-constant": lambda t: run_cli(
        t, ["stage1-sweep", *csv_args(csv(t, good_frame().assign(gender="F")))]),
    "label-constant": lambda t: run_cli(
        t, ["stage1-sweep", *csv_args(csv(t, good_frame().assign(outcome=1)))]),
    "sensitive-three-values": lambda t: run_cli(t, ["stage1-sweep", *csv_args(
        csv(t, good_frame().assign(gender=np.resize(["F", "M", "X"], 80))),
        privileged=None)]),
    "label-two-values-unnamed": lambda t: run_cli(
        t, ["stage1-sweep", *csv_args(csv(t, good_frame()), favourable=None)]),
    "privileged-absent": lambda t: run_cli(
        t, ["stage1-sweep", *csv_args(csv(t, good_frame()), privileged="Martian")]),
    "eo-undefined": lambda t: run_cli(t, ["stage1-sweep", "--measure", "eo", *csv_args(
        csv(t, good_frame().assign(outcome=lambda f: np.where(f.gender == "M", 0, f.outcome))))]),
    # command line: your own CSV under a private order, and its declared schema
    "csv-private-without-schema": lambda t: run_cli(
        t, ["simulate", *csv_args(csv(t, good_frame()))]),
    "schema-still-draft": lambda t: run_cli(t, ["simulate", *csv_args(
        csv(t, good_frame()), "--schema", str(_schema_file(t, draft=True)))]),
    "schema-category-undeclared": lambda t: run_cli(t, ["simulate", *csv_args(
        csv(t, good_frame().assign(region=lambda f: f.region.mask(f.index == 5, "west"))),
        "--schema", str(_schema_file(t)))]),
    "schema-value-out-of-bounds": lambda t: run_cli(t, ["simulate", *csv_args(
        csv(t, good_frame().assign(age=lambda f: f.age.mask(f.index == 7, 150))),
        "--schema", str(_schema_file(t)))]),
    "fewer-rows-than-clients": simulate_with("--clients", "500"),
    "clients-zero": simulate_with("--clients", "0"),
    "partition-column-unknown": simulate_with("--partition", "column", "--partition-column", "x9"),
    # command line: hyperparameters
    "rho-negative": simulate_with("--target", "0", "--rho", "-1"),
    "rho-without-target-off": simulate_with("--rho", "100"),
    "target-too-large": simulate_with("--target", "1.5"),
    "sweep-target-zero": lambda t: run_cli(
        t, ["stage1-sweep", "--dataset", "synthetic", "--target", "0.05", "0"]),
    "sweep-rho-negative-late": lambda t: run_cli(
        t, ["stage1-sweep", "--dataset", "synthetic", "--rho", "0", "10", "-1"]),
    "iterations-negative": simulate_with("--iterations", "-5"),
    "stage1-fraction-zero": simulate_with("--stage1-fraction", "0"),
    "epsilon-not-positive": simulate_with("--epsilon", "0"),
    "delta-too-large": simulate_with("--delta", "0.01", "--allow-delta", "0.5"),
    "order-outside-policy": simulate_with("--order", "real"),
    "epsilon-above-policy": simulate_with("--epsilon", "4"),
    "baseline-without-nonprivate": simulate_with("--strategy", "fedavg"),
    "noise-seed-from-the-server": simulate_with("--generator-options", '{"noise_seed": 1}'),
    "fraction-out-of-range": simulate_with("--stage2-fraction", "1.5"),
    "repair-stage1-balanced": simulate_with("--repair", "stage1", "--utility", "balanced"),
    "safes-column-unknown": simulate_with("--synthesizer", "safes", "--safes-columns", "nope"),
    "safes-eta-out-of-range": simulate_with("--synthesizer", "safes", "--safes-eta", "1.5"),
    "fadm-domain-unknown": simulate_with("--synthesizer", "fadm", "--fadm-domain", "nope"),
    "sweep-fraction-zero": lambda t: run_cli(
        t, ["stage2-sweep", "--dataset", "synthetic", "--fraction", "1.0", "0"]),
    "alpha-not-positive": simulate_with("--partition", "dirichlet", "--alpha", "0"),
    "unknown-order": simulate_with("--order", "fair-first"),
    "unknown-strategy": simulate_with("--strategy", "fedsgd"),
    "unknown-generator": simulate_with("--generator", "gan"),
    "generator-options-not-json": simulate_with("--generator-options", "{epochs: 3"),
    "generator-option-unknown": simulate_with("--generator-options", '{"epochz": 3}'),
    "generator-option-reserved": simulate_with("--generator-options", '{"epsilon": 5}'),
    "min-clients-above-clients": simulate_with("--min-clients", "3"),
    "inject-fault-malformed": simulate_with("--inject-fault", "1:explode"),
    "fetch-checksum-mismatch": lambda t: run_cli(t, [
        "data", "fetch", "law_school", "--data-dir", str(t / "fetched"),
        "--base-url", _corrupt_mirror(t)]),
    # run config (flwr run --run-config, pyproject.toml)
    "run-config-unknown-key": lambda t: raised(lambda: RunConfig.from_mapping({"rhoo": 1.0})),
    "run-config-wrong-type": lambda t: raised(lambda: RunConfig.from_mapping({"rho": "ten"})),
    "run-config-bad-value": lambda t: raised(
        lambda: RunConfig.from_mapping({"partition": "random"})),
    # node config (flower-supernode --node-config)
    "node-config-without-data": lambda t: raised(lambda: load_split({}, RunConfig())),
    "node-data-path-missing": lambda t: raised(
        lambda: load_split({"data-path": str(t / "client.csv")}, RunConfig())),
    "node-partition-out-of-range": lambda t: raised(lambda: load_split(
        {"partition-id": 2, "num-partitions": 2}, RunConfig(dataset="synthetic"))),
    "node-fault-malformed": lambda t: raised(lambda: Fault.parse("explode")),
    # a client's own data file, against the dataset's declared schema
    "client-file-unknown-category": lambda t: raised(lambda: read_client_file(
        _adult_file(t, workclass="Astronaut"), RunConfig(dataset="adult"))),
    "client-file-text-in-numeric": lambda t: raised(lambda: read_client_file(
        _law_school_file(t), RunConfig(dataset="law_school"))),
    # a client's reply to the server
    "reply-error": lambda t: rejected(Message(
        Error(code=3, reason="<class 'MemoryError'>:<'cannot allocate 2 GiB'>"),
        reply_to=request())),
    "reply-nan": lambda t: rejected(reply(with_column(1, np.nan))),
    "reply-wrong-shape": lambda t: rejected(reply(TOY.to_array()[:, 1:])),
    "reply-wrong-dtype": lambda t: rejected(reply(TOY.to_array().astype(np.float32))),
    "reply-labels-not-binary": lambda t: rejected(reply(with_column(-1, 2.0))),
    "reply-too-many-rows": lambda t: rejected(reply(), max_rows=10),
    "reply-out-of-range": lambda t: rejected(reply(with_column(0, 1e6))),
    "reply-schema-mismatch": lambda t: rejected(
        reply(schema=datasets.synthetic_schema(5))),
    "reply-schema-digest-unknown": lambda t: rejected(
        reply(meta={protocol.SCHEMA_DIGEST: "0" * 64, protocol.PRIVACY: "{}"})),
    "reply-schemas-without-majority": lambda t: raised(_no_majority),
}


def _binary_file(tmp: Path) -> Path:
    path = tmp / "data.csv"
    path.write_bytes(b"\xff\xfe\x00\x81 not a table \x00" * 50)
    return path


#: The schema of :func:`good_frame`, declared from domain knowledge (not read from its rows).
GOOD_SCHEMA = Schema(
    name="data", sensitive="gender", privileged="F", label="outcome", favourable="1",
    features=(Column("age", bounds=(0.0, 120.0), integer=True),
              Column("score", bounds=(0.0, 100.0)),
              Column("region", kind="categorical", categories=("east", "north", "south"))))


def _schema_file(tmp: Path, *, draft: bool = False) -> Path:
    """``GOOD_SCHEMA`` as a reviewed schema file, or (``draft``) as ``schema draft`` marks it."""
    path = tmp / "schema.json"
    path.write_text(datasets.draft_text(GOOD_SCHEMA, "data.csv") if draft
                    else GOOD_SCHEMA.to_json())
    return path


def _corrupt_mirror(tmp: Path) -> str:
    mirror = tmp / "mirror"
    mirror.mkdir()
    (mirror / "law_school_clean.csv").write_text("lsat,ugpa\n1,2\n")
    return mirror.as_uri()


def _adult_file(tmp: Path, **change) -> Path:
    row = ["39", "State-gov", "77516", "Bachelors", "13", "Never-married", "Adm-clerical",
           "Not-in-family", "White", "Male", "2174", "0", "40", "United-States", "<=50K"]
    other = [*row[:9], "Female", *row[10:14], ">50K"]
    frame = pd.DataFrame([row, other] * 5, columns=datasets.ADULT_COLUMNS)
    for key, value in change.items():
        frame.loc[3, key] = value
    path = tmp / "client.csv"
    frame.to_csv(path, index=False, header=False)
    return path


def _law_school_file(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({c: rng.integers(1, 5, 20).astype(float)
                          for c in datasets.LAW_SCHOOL.feature_names})
    frame["race"] = np.resize(["White", "Black"], 20)
    frame["pass_bar"] = np.resize([1, 0, 1], 20)
    frame = frame.astype({"lsat": object})
    frame.loc[6, "lsat"] = "forty"
    path = tmp / "client.csv"
    frame.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- the table


def documented_cases() -> dict[str, tuple[str, str]]:
    """``id → (says, fix)`` from the table of docs/bad-input.md (backticked cells)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`[\w-]+`", cells[0]):
            says, fix = (re.fullmatch(r"`(.*)`", c) for c in cells[3:5])
            assert says and fix, f"the says/fix cells of {cells[0]} must be `quoted`"
            rows[cells[0].strip("`")] = (says.group(1), fix.group(1))
    return rows


def test_the_table_lists_exactly_the_cases_run_here():
    documented = documented_cases()
    assert len(documented) >= 20
    assert sorted(documented) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_input_names_the_problem_and_the_fix(case, tmp_path):
    says, fix = documented_cases()[case]
    message = CASES[case](tmp_path)
    assert says in message, f"{case}: {says!r} not in {message!r}"
    assert fix in message, f"{case}: {fix!r} not in {message!r}"
