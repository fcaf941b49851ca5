"""Test helpers for the federation: a Grid that runs the ClientApp in this process, and the
mark of tests that run Flower's simulation engine.

Importable from every test module (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import uuid

import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class LocalGrid(Grid):
    """Delivers every message to ``app`` in this process, one Context per node.

    ``tamper(partition_id, request, reply)`` may replace a reply (a misbehaving client) or
    return None (no reply: a client that hung or died). ``node_config`` adds keys to every
    node's config (a function of the partition id). Each grid is a run of its own (a fresh run
    id), as each ``flwr run`` is.
    """

    def __init__(self, app: ClientApp, clients: int, *, tamper=None, node_config=None):
        self.app, self.tamper = app, tamper
        self.run_id = uuid.uuid4().int >> 65
        self.contexts = {
            1000 + k: Context(run_id=self.run_id, node_id=1000 + k,
                              node_config={"partition-id": k, "num-partitions": clients,
                                           **(node_config(k) if node_config else {})},
                              state=RecordDict(), run_config={})
            for k in range(clients)
        }
        self.delivered: list[tuple[int, str]] = []

    def set_run(self, run) -> None:
        pass

    @property
    def run(self):
        return Run.create_empty(1)

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            node = msg.metadata.dst_node_id
            self.delivered.append((node, msg.metadata.message_type))
            context = self.contexts[node]
            try:
                reply = self.app(msg, context)
            except Exception as exc:  # noqa: BLE001 (the runtime turns it into an error reply)
                # The reason as a deployed SuperNode's ClientApp runtime words it.
                reason = str(type(exc)) + ":<'" + str(exc) + "'>"
                reply = Message(Error(code=3, reason=reason), reply_to=msg)
            if self.tamper is not None:
                reply = self.tamper(context.node_config["partition-id"], msg, reply)
            if reply is not None:
                replies.append(reply)
        return replies


def ray_test(test):
    """Mark a test that runs Flower's simulation engine: slow, and with the two warnings Ray's
    shutdown causes filtered (it drops the Popen handles of helper processes that are still
    exiting, which Python reports from the garbage collector)."""
    for mark in (pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning"),
                 pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
                 pytest.mark.usefixtures("flower_env")):
        test = mark(test)
    return test


def open_app(config=None, **kwargs):
    """The ClientApp under a policy that allows everything (every order, exact statistics):
    for the tests of the federation's mechanics rather than of the privacy policy."""
    from clients.client_app import make_client_app
    from clients.policy import PrivacyPolicy

    return make_client_app(config, policy=PrivacyPolicy.open(), **kwargs)
