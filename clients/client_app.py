"""The ClientApp: what a client node runs when the server asks (Flower Message API).

Four handlers, each reading the run configuration once (:class:`common.run_config.RunConfig`)
and the node's own data (:func:`clients.node_data.load_split`):

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
    when asked, the received model's group statistics on the training rows (FairFed). Under
    DP-FedAvg, one round of DP-SGD within the run's (ε, δ) (:mod:`clients.dp_sgd`), its round
    count kept in the node's ``Context.state``.
``evaluate``
    Apply the received model to the test split and reply with group statistics
    (:func:`common.metrics.group_counts`), which the server pools into metrics on the union.

Data: in a simulation the node config holds ``partition-id`` and ``num-partitions`` and the
client takes its partition of the configured dataset; in a deployment it holds
``data-path``, a CSV with this client's rows only, in the dataset's own format, which the
client splits 80/20 itself. Either way a node process reads and splits its data once, not per
message (:mod:`clients.node_data`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

from flwr.app import (
    Context,
    Error,
    Message,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from clients.faults import FAULT_KEY, Fault
from clients.handlers import (
    dp_train_content,
    evaluate_content,
    moments_content,
    release_content,
    train_content,
)
from clients.node_data import PARTITION_ID, load_split, read_client_file  # noqa: F401 (re-export)
from clients.policy import PrivacyPolicy
from common import protocol
from common.errors import FairsynthError, public_reason
from common.partition import ClientSplit
from common.run_config import RunConfig

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- configuration


def read_config(context: Context) -> RunConfig:
    """``context.run_config`` as a validated :class:`RunConfig` (the Flower boundary)."""
    return RunConfig.from_mapping(context.run_config)


def client_seed(config: RunConfig, context: Context) -> int:
    """``seed + 1000·k`` for partition ``k`` (the node id stands in for it in a deployment)."""
    k = context.node_config.get(PARTITION_ID)
    k = int(k) if k is not None else int(context.node_id) % 1_000_003
    return config.seed + 1000 * k


# --------------------------------------------------------------------------- data
#
# A node's data lives in clients.node_data (read and split once per process); load_split and
# read_client_file are re-exported here for the callers that import them from the app.


# --------------------------------------------------------------------------- the app


Handler = Callable[[Message, Context], Message]


def replying_user_errors(handler: Handler) -> Handler:
    """Turn an error the user can fix (:class:`FairsynthError`: a bad data file, node config or
    run config, a request outside the privacy policy) into an error reply without a traceback.
    The reply carries a code and a generic sentence (:func:`common.errors.public_reason`: a
    message can quote a cell, a row number or a count); the full message goes to this client's
    log. Any other exception is left to the runtime, which replies with its own error."""
    @functools.wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except FairsynthError as exc:
            logger.error("node %s cannot answer %s: %s: %s", context.node_id,
                         msg.metadata.message_type, type(exc).__name__, exc)
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 reason=public_reason(exc)), reply_to=msg)
    return wrapped


def node_fault(context: Context, faults: Mapping[int, Fault]) -> Fault | None:
    """The fault this node is to inject: its node config's ``fault``, else ``faults`` by
    partition id (what the in-process simulation passes)."""
    if FAULT_KEY in context.node_config:
        return Fault.parse(str(context.node_config[FAULT_KEY]))
    k = context.node_config.get(PARTITION_ID)
    return faults.get(int(k)) if k is not None else None


def make_client_app(config: RunConfig | None = None, *,
                    faults: Mapping[int, Fault] | None = None,
                    policy: PrivacyPolicy | None = None) -> ClientApp:
    """A ClientApp that runs with ``config``, or reads ``context.run_config`` when it is None.

    Each node answers within its privacy policy (:mod:`clients.policy`): ``policy`` when given
    (an in-process simulation, where one user holds every client, states it for all of them),
    else the one its node config states (defaults where it is silent).

    ``flwr run`` uses :data:`app` (no config: the run config comes from pyproject.toml and
    ``--run-config``); the in-process simulation passes its :class:`RunConfig` here, because
    its ``context.run_config`` is empty. ``faults`` makes the nodes of the given partition ids fail
    on purpose (:mod:`clients.faults`); a node config's ``fault`` key does the same.
    """
    app = ClientApp()
    faults = dict(faults or {})

    def prepare(context: Context, phase: str
                ) -> tuple[RunConfig, ClientSplit, PrivacyPolicy]:
        run = config if config is not None else read_config(context)
        rules = policy if policy is not None else PrivacyPolicy.from_node_config(
            context.node_config)
        rules = rules.for_client(client_seed(run, context))  # this client's own noise stream
        split = load_split(context.node_config, run)
        fault = node_fault(context, faults)
        if fault is not None:
            fault.strike(phase)
        return run, split, rules

    @app.query()
    @replying_user_errors
    def query(msg: Message, context: Context) -> Message:
        config, split, rules = prepare(context, "query")
        content = release_content(split.train, config, client_seed(config, context),
                                  policy=rules,
                                  expected_digest=protocol.expected_digest(msg.content))
        return Message(content, reply_to=msg)

    @app.query(protocol.MOMENTS_ACTION)
    @replying_user_errors
    def moments(msg: Message, context: Context) -> Message:
        _, split, rules = prepare(context, "moments")
        return Message(moments_content(split.train, rules), reply_to=msg)

    @app.train()
    @replying_user_errors
    def train(msg: Message, context: Context) -> Message:
        config, split, rules = prepare(context, "train")
        seed = client_seed(config, context)
        if config.strategy == "dp-fedavg":
            content = dp_train_content(split.train, msg.content, config, seed, policy=rules,
                                       state=context.state)
        else:
            content = train_content(split.train, msg.content, config, seed, policy=rules)
        return Message(content, reply_to=msg)

    @app.evaluate()
    @replying_user_errors
    def evaluate(msg: Message, context: Context) -> Message:
        config, split, rules = prepare(context, "evaluate")
        content = evaluate_content(split.test, msg.content, config, policy=rules,
                                   run=(int(context.run_id), int(context.node_id)))
        return Message(content, reply_to=msg)

    return app


#: The ClientApp that ``flwr run`` loads (``clients.client_app:app``).
app = make_client_app()
