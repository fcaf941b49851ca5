"""Counting the serialised bytes of every message the server sends and receives.

The simulation runtime moves ``Message`` objects in memory and records no traffic, so the
server counts it itself. A message is sized as Flower serialises it for the wire,
``flwr.common.serde.message_to_proto(message).ByteSize()``: metadata, every record with its
keys and, for arrays, the ``np.save`` bytes that an ``ArrayRecord`` carries. The payload of a
message (the part METHOD.md's formula counts) is the number of array elements times their
item size.

:class:`CountingGrid` wraps the real ``Grid``: every strategy (the one-shot flow, Flower's own
FedAvg and FairFed) talks through it unchanged, and each ``send_and_receive`` call is logged as
one :class:`common.comm.Exchange`, labelled by the message type of what was sent.

It also gives every reply the node it answers for. When a SuperNode stops sending heartbeats
(Flower's node liveness: ``HEARTBEAT_PATIENCE`` × 30 s), the SuperLink answers the messages
still waiting for it with an error reply of its own, ``NODE_UNAVAILABLE``, sent from the
SuperLink's node ID; the grid re-addresses it as an error reply from the node the message was
for, so the flows reject that node by name (and do not wait for it again) instead of waiting
for their timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid

from common.comm import Exchange

logger = logging.getLogger(__name__)


def message_bytes(message: Message) -> int:
    """Size in bytes of ``message`` serialised as a protobuf ``Message``."""
    return message_to_proto(message).ByteSize()


def payload_bytes(content: RecordDict | None) -> int:
    """Bytes of the array elements in ``content`` (elements × item size, no headers)."""
    if content is None:
        return 0
    total = 0
    for record in content.array_records.values():
        for array in record.values():
            total += int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize
    return total


def _content(message: Message) -> RecordDict | None:
    return message.content if message.has_content() else None


def readdressed(replies: list[Message], sent: list[Message]) -> list[Message]:
    """``replies`` with each error reply that the SuperLink wrote itself (for a node that went
    offline, or a reply that expired) turned into an error reply from the node that the
    message it answers was sent to."""
    by_id = {m.metadata.message_id: m for m in sent}
    out = []
    for reply in replies:
        query = by_id.get(reply.metadata.reply_to_message_id)
        from_link = reply.has_error() and reply.metadata.src_node_id == SUPERLINK_NODE_ID
        if from_link and query is not None:
            reply = Message(reply.error, reply_to=query)
        out.append(reply)
    return out


class CountingGrid(Grid):
    """A ``Grid`` that forwards everything to ``grid`` and logs each exchange's bytes.

    Parameters
    ----------
    grid : Grid
        The runtime's grid (in-memory in simulation, HTTP in a deployment).

    Attributes
    ----------
    exchanges : list of Exchange
        One entry per :meth:`send_and_receive` call (and per push/pull pair made directly).
    """

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.exchanges: list[Exchange] = []

    # -- forwarded unchanged
    def set_run(self, run) -> None:
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self):
        return self._grid.get_nodes()

    # -- counted
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        ids = list(self._grid.push_messages(messages))  # message ids are set by the push
        if messages:
            self._record(messages, [], 0.0)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        if replies:
            self._record([], replies, 0.0)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = list(messages)
        if not messages:  # e.g. FedAvg's evaluation step when it is switched off
            return []
        start = time.perf_counter()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self._record(messages, replies, time.perf_counter() - start)
        return readdressed(replies, messages)

    def _record(self, sent: list[Message], received: list[Message], seconds: float) -> None:
        phase = sent[0].metadata.message_type if sent else "reply"
        exchange = Exchange(
            index=len(self.exchanges),
            phase=phase,
            messages_down=len(sent),
            messages_up=len(received),
            bytes_down=sum(message_bytes(m) for m in sent),
            bytes_up=sum(message_bytes(m) for m in received),
            payload_down=sum(payload_bytes(_content(m)) for m in sent),
            payload_up=sum(payload_bytes(_content(m)) for m in received),
            seconds=seconds,
        )
        logger.debug("exchange %s", exchange)
        self.exchanges.append(exchange)
