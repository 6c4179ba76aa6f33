# -*- test-case-name: tests.test_events -*-
"""
The event publisher (C{io.containerd.event.v1}, id C{publisher}): task events
go to containerd's C{Events.Forward} over ttrpc, one at a time, in the order
they were published.

While containerd is unreachable (restarting, say) the event at the head of
the queue is retried, with a backoff capped at L{MAX_RETRY_DELAY}, for as long
as it takes: an event is never dropped for want of a connection. An event
containerd itself refuses is retried a few times and then dropped with an
error in the log, so that one bad event cannot hold up the rest.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shimd.interfaces import IPluginContext, IPublisher
from shimd.protos import events_service_pb2
from shimd.shim.plugin import EVENT_PLUGIN, Registration
from shimd.ttrpc.client import ServiceClient, TTRPCClientProtocol, connectTTRPC
from shimd.ttrpc.status import Code, TTRPCError

NAMESPACE_METADATA = "containerd-namespace-ttrpc"
FORWARD_TIMEOUT = 5.0
FIRST_RETRY_DELAY = 0.01
MAX_RETRY_DELAY = 1.0
MAX_REFUSALS = 5

_EVENTS_SERVICE = events_service_pb2.DESCRIPTOR.services_by_name["Events"]
_CONNECTION_CODES = {Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED}

Connector = Callable[[], "Deferred[TTRPCClientProtocol]"]


def anyOf(message: Message) -> AnyMessage:
    """
    Pack a message in a C{google.protobuf.Any} the way containerd's typeurl
    does: the bare full name as the type URL, with no
    C{type.googleapis.com/} prefix.
    """
    return AnyMessage(
        type_url=message.DESCRIPTOR.full_name, value=message.SerializeToString()
    )


def timestampFromNanoseconds(nanoseconds: int) -> Timestamp:
    return Timestamp(
        seconds=nanoseconds // 1_000_000_000, nanos=nanoseconds % 1_000_000_000
    )


@implementer(IPublisher)
class EventPublisher:
    """
    An ordered, retrying queue of events for containerd.
    """

    log = Logger()

    def __init__(
        self,
        clock: Any,
        namespace: str,
        connect: Connector,
        now: Callable[[], int] = time.time_ns,
    ) -> None:
        """
        @param clock: the reactor's time, for retries.
        @param connect: opens a ttrpc connection to containerd.
        @param now: the wall clock, in nanoseconds, for event timestamps.
        """
        self._clock = clock
        self._namespace = namespace
        self._connect = connect
        self._now = now
        self._queue: deque[tuple[str, events_service_pb2.ForwardRequest]] = deque()
        self._client: ServiceClient | None = None
        self._sending = False
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._refusals = 0
        self._closed = False
        self._drained: list[Deferred[None]] = []

    def publish(self, topic: str, event: Message) -> None:
        if self._closed:
            self.log.error("event {topic} published after close, dropped", topic=topic)
            return
        envelope = events_service_pb2.Envelope(
            timestamp=timestampFromNanoseconds(self._now()),
            namespace=self._namespace,
            topic=topic,
            event=anyOf(event),
        )
        self._queue.append(
            (topic, events_service_pb2.ForwardRequest(envelope=envelope))
        )
        self._pump()

    def close(self) -> Deferred[None]:
        self._closed = True
        if not self._queue:
            self._disconnect()
            return succeed(None)
        drained: Deferred[None] = Deferred(self._abandon)
        self._drained.append(drained)
        return drained

    def _abandon(self, drained: Deferred[None]) -> None:
        """
        The wait for delivery at close was cancelled (timed out): say what is
        lost.
        """
        self._drained.remove(drained)
        self.log.error(
            "{count} events not delivered to containerd: {topics}",
            count=len(self._queue),
            topics=", ".join(topic for topic, _ in self._queue),
        )

    def pending(self) -> int:
        """
        How many events wait for delivery.
        """
        return len(self._queue)

    def _pump(self) -> None:
        if self._sending or self._retry is not None or not self._queue:
            return
        self._sending = True
        topic, request = self._queue[0]
        sent = self._connected()
        sent.addCallback(
            lambda client: client.call(
                "Forward",
                request,
                timeout=FORWARD_TIMEOUT,
                metadata=[(NAMESPACE_METADATA, self._namespace)],
            )
        )
        sent.addCallbacks(self._delivered, self._failed, errbackArgs=(topic,))

    def _connected(self) -> Deferred[ServiceClient]:
        if self._client is not None:
            return succeed(self._client)

        def connected(protocol: TTRPCClientProtocol) -> ServiceClient:
            client = ServiceClient(protocol, _EVENTS_SERVICE)
            self._client = client
            protocol.whenClosed.addCallback(lambda _: self._lost(client))
            return client

        return self._connect().addCallback(connected)

    def _lost(self, client: ServiceClient) -> None:
        if self._client is client:
            self._client = None

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.protocol.transport.loseConnection()
            self._client = None

    def _delivered(self, result: object) -> None:
        self._sending = False
        self._failures = 0
        self._refusals = 0
        self._queue.popleft()
        self._afterSend()

    def _failed(self, failure: Failure, topic: str) -> None:
        self._sending = False
        error = failure.value
        refused = isinstance(error, TTRPCError) and error.code not in _CONNECTION_CODES
        if refused:
            self._refusals += 1
            if self._refusals >= MAX_REFUSALS:
                self.log.error(
                    "containerd refused event {topic} {count} times, dropping it: "
                    "{error}",
                    topic=topic,
                    count=self._refusals,
                    error=failure.getErrorMessage(),
                )
                self._refusals = 0
                self._failures = 0
                self._queue.popleft()
                self._afterSend()
                return
        else:
            self._disconnect()
        if self._failures == 0:
            self.log.warn(
                "cannot deliver event {topic}, retrying: {error}",
                topic=topic,
                error=failure.getErrorMessage(),
            )
        delay = min(FIRST_RETRY_DELAY * 2**self._failures, MAX_RETRY_DELAY)
        self._failures += 1
        self._retry = self._clock.callLater(delay, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self._pump()

    def _afterSend(self) -> None:
        if self._queue:
            self._pump()
            return
        if self._closed:
            self._disconnect()
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)


def _initialise(context: IPluginContext) -> EventPublisher:
    reactor = context.reactor
    address = context.config.ttrpcAddress

    def connect() -> Deferred[TTRPCClientProtocol]:
        return connectTTRPC(reactor, reactor, address)

    return EventPublisher(reactor, context.config.namespace, connect)


publisherPlugin = Registration(EVENT_PLUGIN, "publisher", _initialise)
