"""The ClientApp: what a client node runs when the server asks (Flower Message API).

Four handlers, each reading the run configuration once (:class:`common.run_config.RunConfig`)
and the node's own data (:func:`load_split`):

``query``
    One-shot release: run the configured pipeline (:func:`clients.pipeline.run_pipeline`) on
    the training split and reply with the rows (``ArrayRecord`` ``rows``, the float64 wire
    matrix of :meth:`common.schema.TabularData.to_array`), the schema and privacy report
    (``ConfigRecord`` ``meta``, JSON) and the timings (``MetricRecord`` ``metrics``).
``query.moments``
    Baselines: row count and per-column sums and sums of squares, from which the server pools
    one feature scaling for all clients (:func:`common.comm.encoder_from_moments`).
``train``
    Baselines: local minibatch SGD from the received global model (FedAvg's local step),
    optionally on reweighed rows (FairFed); replies with the new model, ``num-examples`` and,
    when asked, the received model's group statistics on the training rows (FairFed).
``evaluate``
    Apply the received model to the test split and reply with group statistics
    (:func:`common.comm.group_counts`), which the server pools into metrics on the union.

Data: in a simulation the node config holds ``partition-id`` and ``num-partitions`` and the
client takes its partition of the configured dataset; in a deployment it holds
``data-path``, a CSV with this client's rows only, in the dataset's own format, which the
client splits 80/20 itself.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from clients.faults import FAULT_KEY, Fault
from clients.pipeline import pipeline_config, run_pipeline
from common import comm, datasets, mlp
from common.encoding import Encoder
from common.errors import ConfigError, DataError, FairsynthError
from common.partition import ClientSplit, federated_split, train_test_split
from common.run_config import RunConfig
from common.schema import TabularData, from_frame

logger = logging.getLogger(__name__)

DATA_PATH = "data-path"
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"


# --------------------------------------------------------------------------- configuration


def read_config(context: Context, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """``context.run_config`` (then ``overrides``) as a validated :class:`RunConfig`."""
    return RunConfig.from_mapping({**dict(context.run_config), **dict(overrides or {})})


def client_seed(config: RunConfig, context: Context) -> int:
    """``seed + 1000·k`` for partition ``k`` (the node id stands in for it in a deployment)."""
    k = context.node_config.get(PARTITION_ID)
    k = int(k) if k is not None else int(context.node_id) % 1_000_003
    return config.seed + 1000 * k


# --------------------------------------------------------------------------- data


def load_dataset(config: RunConfig) -> TabularData:
    """The whole configured dataset (simulation: every node partitions it the same way)."""
    if config.csv:
        return _load_csv(config.csv, config)
    return datasets.load(config.dataset, root=config.data_dir or None,
                         sensitive=config.sensitive or None, seed=config.seed)


def _load_csv(path: str | Path, config: RunConfig) -> TabularData:
    missing = [k for k in ("sensitive", "label") if not getattr(config, k)]
    if missing:
        raise ConfigError(f"run config: csv needs {', '.join(missing)} as well.")
    names = config.name_list
    return datasets.load_csv(path, sensitive=config.sensitive,
                             privileged=config.privileged or None, label=config.label,
                             favourable=config.favourable or None,
                             drop=names["drop"], categorical=names["categorical"])


def read_client_file(path: str | Path, config: RunConfig) -> TabularData:
    """One client's rows from ``path``, in the configured dataset's own file format."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"the node's data-path {path} does not exist; point data-path at the "
                        "CSV with this client's rows.")
    if config.csv:
        return _load_csv(path, config)
    if config.dataset == "law_school":
        return from_frame(pd.read_csv(path), datasets.LAW_SCHOOL)
    if config.dataset == "adult":
        frame = pd.read_csv(path, header=None, names=datasets.ADULT_COLUMNS,
                            skipinitialspace=True, na_values="?", dtype=str)
        if list(frame.iloc[0]) == datasets.ADULT_COLUMNS:  # a file written with a header
            frame = frame.iloc[1:]
        frame["income"] = frame["income"].str.rstrip(".")
        frame = frame.dropna().reset_index(drop=True)
        return from_frame(frame, datasets.adult_schema(config.sensitive or "sex"))
    if config.dataset == "synthetic":
        return from_frame(pd.read_csv(path), datasets.synthetic_schema())
    raise ConfigError(
        f"unknown dataset {config.dataset!r}; choose one of {list(datasets.DATASETS)}."
    )


def load_split(node_config: Mapping[str, Any], config: RunConfig) -> ClientSplit:
    """This node's train/test rows (see the module docstring)."""
    if DATA_PATH in node_config:
        data = read_client_file(str(node_config[DATA_PATH]), config)
        # With its index k known, a client splits as partition k of a simulation does
        # (common.partition.federated_split), so a deployment reproduces the simulation.
        k = node_config.get(PARTITION_ID)
        seed = config.seed * 1000 + int(k) if k is not None else config.seed
        train, test = train_test_split(data, test_fraction=config.test_fraction, seed=seed)
        return ClientSplit(train=train, test=test)
    if PARTITION_ID not in node_config or NUM_PARTITIONS not in node_config:
        raise ConfigError(
            f"the node config has neither {DATA_PATH} (deployment) nor {PARTITION_ID} and "
            f"{NUM_PARTITIONS} (simulation); it has {sorted(node_config)}. Start the SuperNode "
            f"with --node-config \"{DATA_PATH}=/path/to/client.csv\"."
        )
    k, total = int(node_config[PARTITION_ID]), int(node_config[NUM_PARTITIONS])
    if not 0 <= k < total:
        raise ConfigError(f"{PARTITION_ID} = {k} is outside 0..{total - 1}.")
    splits = federated_split(load_dataset(config), clients=total, method=config.partition,
                             seed=config.seed, alpha=config.alpha,
                             column=config.partition_column or None,
                             test_fraction=config.test_fraction)
    return splits[k]


# --------------------------------------------------------------------------- payloads


def model_record(params: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Model parameters as an ``ArrayRecord`` (float64, names kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float64))
                        for k, v in params.items()})


def model_params(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def received_encoder(config: ConfigRecord, data: TabularData) -> Encoder:
    """The server's feature scaling, sent as ``encoder-mean`` / ``encoder-std`` lists."""
    mean = np.asarray(config.get("encoder-mean", []), dtype=np.float64)
    std = np.asarray(config.get("encoder-std", []), dtype=np.float64)
    n_cont = len(data.schema.continuous)
    if mean.shape != (n_cont,) or std.shape != (n_cont,) or np.any(std <= 0):
        raise ConfigError(
            f"the server's feature scaling has {mean.size} mean(s) and {std.size} std(s); this "
            f"client's data has {n_cont} continuous columns (and every std must be > 0)."
        )
    return Encoder(schema=data.schema, mean=mean, std=std)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True,
                      default=lambda v: v.item() if hasattr(v, "item") else str(v))


def release_content(train: TabularData, config: RunConfig, seed: int, *,
                    expected_digest: str = "") -> RecordDict:
    """Run the pipeline on ``train``; the reply content of a one-shot query.

    ``meta`` carries the schema's digest, and the schema itself only when it differs from
    ``expected_digest`` (the server's, sent with the query) or the server sent none; and the
    privacy report's summary (the whole report goes to this client's log).
    """
    start = time.perf_counter()
    result = run_pipeline(train, pipeline_config(config), seed=seed)
    rows = result.rows.to_array()
    seconds = time.perf_counter() - start
    metrics = {comm.NUM_EXAMPLES: len(rows), "seconds": seconds}
    if result.privacy.epsilon is None:  # a private order would disclose N with it
        metrics["train-rows"] = len(train)
    metrics.update({f"seconds-{k}": float(v) for k, v in result.seconds.items()})
    logger.info("released %d rows (%s) in %.2fs; privacy: %s", len(rows), config.order, seconds,
                _json(result.privacy.as_dict()))
    schema = result.rows.schema
    meta = {comm.SCHEMA_DIGEST: schema.digest(), comm.PRIVACY: _json(result.privacy.summary())}
    if schema.digest() != expected_digest:
        meta[comm.SCHEMA] = schema.to_json()
    return RecordDict({
        comm.ROWS: ArrayRecord({comm.ROWS: Array(np.ascontiguousarray(rows, dtype=np.float64))}),
        comm.META: ConfigRecord(meta),
        comm.METRICS: MetricRecord(metrics),
    })


def moments_content(train: TabularData) -> RecordDict:
    m = comm.moments(train)
    return RecordDict({
        comm.METRICS: MetricRecord({"n": m["n"], "sum": [float(v) for v in m["sum"]],
                                    "sumsq": [float(v) for v in m["sumsq"]]}),
        comm.META: ConfigRecord({"schema": train.schema.to_json()}),
    })


def train_content(train: TabularData, content: RecordDict, config: RunConfig, seed: int
                  ) -> RecordDict:
    """FedAvg/FairFed local step: SGD from the received model on the training rows."""
    cfg = content[comm.CONFIG]
    encoder = received_encoder(cfg, train)
    X = encoder.design(train)
    params = model_params(content[comm.MODEL])
    metrics: dict[str, float] = {comm.NUM_EXAMPLES: len(train)}
    if bool(cfg.get("fairness-stats", False)):  # FairFed: the received model's local gap
        metrics.update(comm.group_counts(train.y, mlp.decision(params, X), sensitive=train.s))
    weight = mlp.reweighing(train.s, train.y) if bool(cfg.get("reweigh", False)) else None
    round_ = int(cfg.get("server-round", 0))
    new = mlp.train(params, X, train.y, epochs=config.local_epochs, lr=config.local_lr,
                    batch_size=config.local_batch_size, l2=config.l2,
                    seed=seed + 7919 * round_, optimizer="sgd", sample_weight=weight)
    d = mlp.decision(new, X)
    margin = (2.0 * train.y - 1.0) * d
    metrics["train-loss"] = float(np.mean(np.logaddexp(0.0, -margin)))
    return RecordDict({comm.MODEL: model_record(new), comm.METRICS: MetricRecord(metrics)})


def evaluate_content(test: TabularData, content: RecordDict) -> RecordDict:
    """Group statistics of the received model on the test rows."""
    encoder = received_encoder(content[comm.CONFIG], test)
    d = mlp.decision(model_params(content[comm.MODEL]), encoder.design(test))
    counts = comm.group_counts(test.y, d, sensitive=test.s)
    return RecordDict({comm.METRICS: MetricRecord({comm.NUM_EXAMPLES: len(test), **counts})})


# --------------------------------------------------------------------------- the app


Handler = Callable[[Message, Context], Message]


def replying_user_errors(handler: Handler) -> Handler:
    """Turn an error the user can fix (:class:`FairsynthError`: a bad data file, node config or
    run config) into an error reply whose reason is the message alone, without a traceback;
    any other exception is left to the runtime, which replies with its own error."""
    @functools.wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except FairsynthError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            logger.error("node %s cannot answer %s: %s", context.node_id,
                         msg.metadata.message_type, reason)
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                           reply_to=msg)
    return wrapped


def node_fault(context: Context, faults: Mapping[int, Fault]) -> Fault | None:
    """The fault this node is to inject: its node config's ``fault``, else ``faults`` by
    partition id (what the in-process simulation passes)."""
    if FAULT_KEY in context.node_config:
        return Fault.parse(str(context.node_config[FAULT_KEY]))
    k = context.node_config.get(PARTITION_ID)
    return faults.get(int(k)) if k is not None else None


def make_client_app(overrides: Mapping[str, Any] | None = None, *,
                    faults: Mapping[int, Fault] | None = None) -> ClientApp:
    """A ClientApp whose run configuration is ``context.run_config`` updated by ``overrides``.

    ``flwr run`` uses :data:`app` (no overrides: the run config comes from pyproject.toml and
    ``--run-config``); the in-process simulation passes the configuration here, because its
    ``context.run_config`` is empty. ``faults`` makes the nodes of the given partition ids fail
    on purpose (:mod:`clients.faults`); a node config's ``fault`` key does the same.
    """
    app = ClientApp()
    faults = dict(faults or {})

    def prepare(context: Context, phase: str) -> tuple[RunConfig, ClientSplit]:
        config = read_config(context, overrides)
        split = load_split(context.node_config, config)
        fault = node_fault(context, faults)
        if fault is not None:
            fault.strike(phase)
        return config, split

    @app.query()
    @replying_user_errors
    def query(msg: Message, context: Context) -> Message:
        config, split = prepare(context, "query")
        expected = ""
        if comm.CONFIG in msg.content.config_records:
            expected = str(msg.content.config_records[comm.CONFIG].get(comm.SCHEMA_DIGEST, ""))
        content = release_content(split.train, config, client_seed(config, context),
                                  expected_digest=expected)
        return Message(content, reply_to=msg)

    @app.query(comm.MOMENTS_ACTION)
    @replying_user_errors
    def moments(msg: Message, context: Context) -> Message:
        config, split = prepare(context, "moments")
        return Message(moments_content(split.train), reply_to=msg)

    @app.train()
    @replying_user_errors
    def train(msg: Message, context: Context) -> Message:
        config, split = prepare(context, "train")
        content = train_content(split.train, msg.content, config, client_seed(config, context))
        return Message(content, reply_to=msg)

    @app.evaluate()
    @replying_user_errors
    def evaluate(msg: Message, context: Context) -> Message:
        config, split = prepare(context, "evaluate")
        return Message(evaluate_content(split.test, msg.content), reply_to=msg)

    return app


#: The ClientApp that ``flwr run`` loads (``clients.client_app:app``).
app = make_client_app()
