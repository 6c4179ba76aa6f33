# -*- test-case-name: tests.test_events -*-
"""
Tests for L{shimd.shim.events}: the publisher that forwards task events to
containerd's C{Events.Forward}, one at a time, in order, retrying while
containerd is away, held to C{events.md}.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from shimd.interfaces import IPublisher
from shimd.protos import events_pb2, events_service_pb2, status_pb2, ttrpc_pb2
from shimd.shim.config import ShimConfig
from shimd.shim.events import (
    FIRST_RETRY_DELAY,
    FORWARD_TIMEOUT,
    MAX_REFUSALS,
    MAX_RETRY_DELAY,
    EventPublisher,
    anyOf,
    publisherPlugin,
)
from shimd.shim.plugin import EVENT_PLUGIN, PluginContext
from shimd.shim.shutdown import CALLBACK_TIMEOUT, ShutdownService
from shimd.ttrpc.client import TTRPCClientProtocol, connectTTRPC
from shimd.ttrpc.framing import (
    HEADER_SIZE,
    RESPONSE,
    Frame,
    FrameReceiver,
    encodeFrame,
)
from shimd.ttrpc.server import (
    CallContext,
    ServiceRegistry,
    TTRPCServerFactory,
    TTRPCServerProtocol,
)
from shimd.ttrpc.status import Code

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
EVENTS = events_service_pb2.DESCRIPTOR.services_by_name["Events"]
NOW = 1795906536_296453174

# The Forward of events.md section 1, as observed from the Go shim: the exit
# of init sx1 (pid 14492, status 3) in namespace sxref.
OBSERVED_HEADER = bytes.fromhex("000000c3000000050100")
OBSERVED_FORWARD_REQUEST = bytes.fromhex(
    # ForwardRequest.envelope
    "0a5f"
    # Envelope.timestamp {seconds: 1795906536, nanos: 296453174}
    "0a0c"
    "08e8b7add806"
    "10b688ae8d01"
    # Envelope.namespace "sxref"
    "1205"
    "7378726566"
    # Envelope.topic "/tasks/exit"
    "1a0b"
    "2f7461736b732f65786974"
    # Envelope.event: Any
    "223b"
    # Any.type_url "containerd.events.TaskExit", with no type.googleapis.com/
    "0a1a"
    "636f6e7461696e6572642e6576656e74732e5461736b45786974"
    # Any.value: TaskExit{container_id, id, pid, exit_status, exited_at}
    "121d"
    "0a03737831"
    "1203737831"
    "189c71"
    "2003"
    "2a0c"
    "08e8b7add806"
    "1097ada98d01"
)


def taskExit(id: str, pid: int = 0) -> events_pb2.TaskExit:
    """
    A C{TaskExit} for container C{c1}, told apart by its process id.
    """
    return events_pb2.TaskExit(container_id="c1", id=id, pid=pid)


class Containerd:
    """
    The far end of one connection the publisher dialled: reads the requests
    written to a L{StringTransport} and answers them like containerd.
    """

    def __init__(self, clock: Clock) -> None:
        self.transport = StringTransport()
        self.protocol = TTRPCClientProtocol(clock)
        self.protocol.makeConnection(self.transport)
        self.answered: set[int] = set()

    def frames(self) -> list[Frame]:
        """
        Every frame written so far.
        """
        frames = list(FrameReceiver().feed(self.transport.value()))
        assert all(isinstance(frame, Frame) for frame in frames)
        return frames  # type: ignore[return-value]

    def requests(self) -> list[tuple[int, ttrpc_pb2.Request]]:
        """
        Every request sent so far, with its stream id.
        """
        requests = []
        for frame in self.frames():
            request = ttrpc_pb2.Request()
            request.ParseFromString(frame.payload)
            requests.append((frame.streamID, request))
        return requests

    def forwarded(self) -> list[events_service_pb2.ForwardRequest]:
        """
        The C{ForwardRequest} of every request sent so far.
        """
        forwarded = []
        for _, request in self.requests():
            message = events_service_pb2.ForwardRequest()
            message.ParseFromString(request.payload)
            forwarded.append(message)
        return forwarded

    def unanswered(self) -> list[tuple[int, events_service_pb2.ForwardRequest]]:
        """
        The requests sent and not answered yet, with their stream ids.
        """
        return [
            (streamID, forward)
            for (streamID, _), forward in zip(
                self.requests(), self.forwarded(), strict=True
            )
            if streamID not in self.answered
        ]

    def answer(self, code: Code = Code.OK, message: str = "") -> str:
        """
        Answer the only unanswered request: with an empty response, as
        containerd does, or with an error status.

        @return: the id (C{TaskExit.id}) of the event answered.
        """
        [(streamID, forward)] = self.unanswered()
        self.answered.add(streamID)
        if code == Code.OK:
            payload = b""
        else:
            payload = ttrpc_pb2.Response(
                status=status_pb2.Status(code=code, message=message)
            ).SerializeToString()
        self.protocol.dataReceived(encodeFrame(streamID, RESPONSE, payload))
        return eventID(forward)

    def drop(self) -> None:
        """
        The connection goes away (containerd exits).
        """
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionDone()))


def eventID(forward: events_service_pb2.ForwardRequest) -> str:
    """
    The C{TaskExit.id} carried by a C{ForwardRequest}.
    """
    event = events_pb2.TaskExit()
    event.ParseFromString(forward.envelope.event.value)
    return event.id


class Dialler:
    """
    A fake connector: each dial waits until the test accepts or refuses it.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.dials = 0
        self.waiting: list[Deferred[TTRPCClientProtocol]] = []
        self.connections: list[Containerd] = []

    def __call__(self) -> Deferred[TTRPCClientProtocol]:
        self.dials += 1
        dialled: Deferred[TTRPCClientProtocol] = Deferred()
        self.waiting.append(dialled)
        return dialled

    def accept(self) -> Containerd:
        """
        Connect the oldest waiting dial.
        """
        containerd = Containerd(self.clock)
        self.connections.append(containerd)
        self.waiting.pop(0).callback(containerd.protocol)
        return containerd

    def refuse(self) -> None:
        """
        Refuse the oldest waiting dial, as a socket with no listener does.
        """
        self.waiting.pop(0).errback(ConnectionRefusedError("no containerd"))


class EventPublisherTests(SynchronousTestCase):
    """
    L{EventPublisher} forwards events to containerd in order, one in flight
    at a time, over one connection while it lasts.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.dialler = Dialler(self.clock)
        self.publisher = EventPublisher(
            self.clock, "sxref", self.dialler, now=lambda: NOW
        )
        self.logged = EventLoggingObserver()
        globalLogPublisher.addObserver(self.logged)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged)

    def messages(self, level: LogLevel) -> list[str]:
        """
        The formatted text of the events logged by the publisher at C{level}.
        """
        return [
            formatEvent(event)
            for event in self.logged
            if event["log_level"] == level
            and event.get("log_namespace") == "shimd.shim.events.EventPublisher"
        ]

    def test_interface(self) -> None:
        """
        L{EventPublisher} provides L{IPublisher}.
        """
        self.assertTrue(verifyObject(IPublisher, self.publisher))

    def test_lazyConnection(self) -> None:
        """
        The publisher dials containerd on the first event, not before.
        """
        self.assertEqual(self.dialler.dials, 0)
        self.publisher.publish("/tasks/exit", taskExit("e1"))
        self.assertEqual(self.dialler.dials, 1)

    def test_forwardRequest(self) -> None:
        """
        An event goes out as a call of C{Events.Forward}, whose envelope holds
        the publication time from C{now}, the shim's namespace, the topic and
        the event in an C{Any} whose type URL is the bare message name, with a
        5 s deadline and the namespace in the ttrpc metadata, as the Go shim
        sends it.
        """
        event = events_pb2.TaskStart(container_id="c1", pid=42)
        self.publisher.publish("/tasks/start", event)
        containerd = self.dialler.accept()
        [(streamID, request)] = containerd.requests()
        self.assertEqual(streamID, 1)
        self.assertEqual(request.service, EVENTS_SERVICE)
        self.assertEqual(request.method, "Forward")
        self.assertEqual(request.timeout_nano, int(FORWARD_TIMEOUT * 1e9))
        self.assertEqual(request.timeout_nano, 5_000_000_000)
        self.assertEqual(
            [(pair.key, pair.value) for pair in request.metadata],
            [("containerd-namespace-ttrpc", "sxref")],
        )
        [forward] = containerd.forwarded()
        envelope = forward.envelope
        self.assertEqual(
            (envelope.timestamp.seconds, envelope.timestamp.nanos),
            (1795906536, 296453174),
        )
        self.assertEqual(envelope.namespace, "sxref")
        self.assertEqual(envelope.topic, "/tasks/start")
        self.assertEqual(envelope.event.type_url, "containerd.events.TaskStart")
        self.assertEqual(envelope.event.value, event.SerializeToString())

    def test_timestampAtPublication(self) -> None:
        """
        The envelope's timestamp is the time the event was published, not the
        time it was sent: an event that waited for containerd keeps its own.
        """
        times = iter([1_000_000_000_000_000_001, 2_000_000_000_000_000_002])
        publisher = EventPublisher(
            self.clock, "ns", self.dialler, now=lambda: next(times)
        )
        publisher.publish("/tasks/start", taskExit("e1"))
        publisher.publish("/tasks/exit", taskExit("e2"))
        containerd = self.dialler.accept()
        containerd.answer()
        stamps = [
            (forward.envelope.timestamp.seconds, forward.envelope.timestamp.nanos)
            for forward in containerd.forwarded()
        ]
        self.assertEqual(stamps, [(1_000_000_000, 1), (2_000_000_000, 2)])

    def test_observedBytes(self) -> None:
        """
        The exit of events.md section 1, published as the third event of a
        connection, is the observed frame: the same header (length C{0xc3},
        stream 5, request) and, within the request, the same
        C{ForwardRequest} bytes. (Go sends the time left to its deadline,
        C{4999995213}; shimd sends C{5000000000}, a varint of the same
        size.)
        """
        self.publisher.publish("/tasks/start", taskExit("before1"))
        self.publisher.publish("/tasks/start", taskExit("before2"))
        event = events_pb2.TaskExit(
            container_id="sx1", id="sx1", pid=14492, exit_status=3
        )
        event.exited_at.seconds = 1795906536
        event.exited_at.nanos = 296375959
        self.publisher.publish("/tasks/exit", event)
        containerd = self.dialler.accept()
        containerd.answer()
        containerd.answer()
        first, second, _ = containerd.frames()
        offset = sum(HEADER_SIZE + len(f.payload) for f in (first, second))
        third = containerd.transport.value()[offset:]
        self.assertEqual(third[:HEADER_SIZE], OBSERVED_HEADER)
        request = ttrpc_pb2.Request()
        request.ParseFromString(third[HEADER_SIZE:])
        self.assertEqual(request.payload, OBSERVED_FORWARD_REQUEST)
        expected = ttrpc_pb2.Request(
            service=EVENTS_SERVICE,
            method="Forward",
            payload=OBSERVED_FORWARD_REQUEST,
            timeout_nano=5_000_000_000,
            metadata=[
                ttrpc_pb2.KeyValue(key="containerd-namespace-ttrpc", value="sxref")
            ],
        )
        self.assertEqual(third[HEADER_SIZE:], expected.SerializeToString())

    def test_anyOf(self) -> None:
        """
        L{anyOf} packs a message with the bare full name as the type URL,
        as containerd's typeurl does.
        """
        event = events_pb2.TaskOOM(container_id="c1")
        packed = anyOf(event)
        self.assertEqual(packed.type_url, "containerd.events.TaskOOM")
        self.assertEqual(packed.value, event.SerializeToString())

    def test_oneInFlight(self) -> None:
        """
        Only one event is in flight at a time: the next is sent when
        containerd has answered the previous one, in publication order.
        """
        for index in range(3):
            self.publisher.publish("/tasks/exit", taskExit(f"e{index}"))
        containerd = self.dialler.accept()
        delivered = []
        for index in range(3):
            self.assertEqual(len(containerd.unanswered()), 1)
            self.assertEqual(self.publisher.pending(), 3 - index)
            delivered.append(containerd.answer())
        self.assertEqual(delivered, ["e0", "e1", "e2"])
        self.assertEqual(containerd.unanswered(), [])
        self.assertEqual(self.publisher.pending(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_publishedWhileWaiting(self) -> None:
        """
        An event published while another is in flight waits for it, and goes
        next.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        containerd = self.dialler.accept()
        self.publisher.publish("/tasks/exit", taskExit("e1"))
        self.assertEqual([eventID(f) for _, f in containerd.unanswered()], ["e0"])
        containerd.answer()
        self.assertEqual([eventID(f) for _, f in containerd.unanswered()], ["e1"])

    def test_connectionReused(self) -> None:
        """
        Every event goes over the same connection while it is up, on
        successive odd stream ids.
        """
        containerd = None
        for index in range(3):
            self.publisher.publish("/tasks/exit", taskExit(f"e{index}"))
            if containerd is None:
                containerd = self.dialler.accept()
            containerd.answer()
        assert containerd is not None
        self.assertEqual(self.dialler.dials, 1)
        self.assertEqual([s for s, _ in containerd.requests()], [1, 3, 5])
        self.assertFalse(containerd.transport.disconnecting)

    def test_connectionRefusedRetried(self) -> None:
        """
        While containerd refuses connections, the publisher redials after a
        backoff that starts at L{FIRST_RETRY_DELAY}, never shrinks, is capped
        at L{MAX_RETRY_DELAY}, and never gives up; it warns once, not at
        every attempt.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        delays = []
        for attempt in range(1, 21):
            self.assertEqual(self.dialler.dials, attempt)
            self.dialler.refuse()
            [retry] = self.clock.getDelayedCalls()
            delay = retry.getTime() - self.clock.seconds()
            delays.append(delay)
            self.clock.advance(delay / 2)
            self.assertEqual(self.dialler.dials, attempt)
            self.clock.advance(delay)
        self.assertAlmostEqual(delays[0], FIRST_RETRY_DELAY)
        for shorter, longer in itertools.pairwise(delays):
            self.assertLessEqual(shorter, longer + 1e-9)
        self.assertAlmostEqual(max(delays), MAX_RETRY_DELAY)
        self.assertAlmostEqual(delays[-1], MAX_RETRY_DELAY)
        self.assertEqual(self.publisher.pending(), 1)
        self.assertEqual(len(self.messages(LogLevel.warn)), 1)
        self.assertIn("/tasks/exit", self.messages(LogLevel.warn)[0])
        containerd = self.dialler.accept()
        self.assertEqual(containerd.answer(), "e0")
        self.assertEqual(self.messages(LogLevel.error), [])

    def test_retriedInOrder(self) -> None:
        """
        Events published while containerd is unreachable are all delivered,
        in publication order, once it answers again.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        self.dialler.refuse()
        for index in range(1, 4):
            self.publisher.publish("/tasks/exit", taskExit(f"e{index}"))
            self.clock.advance(MAX_RETRY_DELAY)
            self.dialler.refuse()
        self.assertEqual(self.publisher.pending(), 4)
        self.clock.advance(MAX_RETRY_DELAY)
        containerd = self.dialler.accept()
        delivered = [containerd.answer() for _ in range(4)]
        self.assertEqual(delivered, ["e0", "e1", "e2", "e3"])
        self.assertEqual(self.dialler.waiting, [])

    def test_backoffResetAfterDelivery(self) -> None:
        """
        Once an event is delivered, the next outage starts again from the
        first, shortest, retry delay.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        for _ in range(5):
            self.dialler.refuse()
            self.clock.advance(MAX_RETRY_DELAY)
        containerd = self.dialler.accept()
        containerd.answer()
        containerd.drop()
        self.publisher.publish("/tasks/exit", taskExit("e1"))
        self.dialler.refuse()
        [retry] = self.clock.getDelayedCalls()
        self.assertAlmostEqual(
            retry.getTime() - self.clock.seconds(), FIRST_RETRY_DELAY
        )

    def test_connectionLostInFlight(self) -> None:
        """
        When the connection is lost with an event in flight (containerd
        restarting), the publisher redials after a backoff and sends that
        event again first, then the rest, in order.
        """
        for index in range(3):
            self.publisher.publish("/tasks/exit", taskExit(f"e{index}"))
        first = self.dialler.accept()
        self.assertEqual(first.answer(), "e0")
        first.drop()
        self.assertEqual(self.dialler.dials, 1)
        self.clock.advance(FIRST_RETRY_DELAY)
        self.assertEqual(self.dialler.dials, 2)
        second = self.dialler.accept()
        self.assertEqual([second.answer() for _ in range(2)], ["e1", "e2"])
        self.assertEqual(self.publisher.pending(), 0)

    def test_redialAfterDrop(self) -> None:
        """
        A connection that drops while no event is in flight is not reused:
        the next event dials again.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        first = self.dialler.accept()
        first.answer()
        first.drop()
        self.assertEqual(self.dialler.dials, 1)
        self.publisher.publish("/tasks/exit", taskExit("e1"))
        self.assertEqual(self.dialler.dials, 2)
        second = self.dialler.accept()
        self.assertEqual(second.answer(), "e1")
        self.assertEqual(len(first.requests()), 1)

    def test_deadlineExceeded(self) -> None:
        """
        A C{Forward} left unanswered past its 5 s deadline counts as a lost
        connection: the publisher hangs up, redials and sends the event
        again.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        first = self.dialler.accept()
        self.clock.advance(FORWARD_TIMEOUT)
        self.assertTrue(first.transport.disconnecting)
        self.clock.advance(FIRST_RETRY_DELAY)
        second = self.dialler.accept()
        self.assertEqual(second.answer(), "e0")
        self.assertEqual(self.publisher.pending(), 0)

    def test_refusedEventDropped(self) -> None:
        """
        An event containerd refuses (C{INVALID_ARGUMENT}) L{MAX_REFUSALS} times
        is dropped, with an error naming its topic, and the next event goes;
        the connection stays up.
        """
        self.assertEqual(MAX_REFUSALS, 5)
        self.publisher.publish("/tasks/bad", taskExit("bad"))
        self.publisher.publish("/tasks/exit", taskExit("good"))
        containerd = self.dialler.accept()
        for refusal in range(MAX_REFUSALS):
            self.assertEqual(self.messages(LogLevel.error), [])
            self.assertEqual(
                containerd.answer(Code.INVALID_ARGUMENT, "topic invalid"), "bad"
            )
            if refusal < MAX_REFUSALS - 1:
                [retry] = self.clock.getDelayedCalls()
                self.clock.advance(retry.getTime() - self.clock.seconds())
        [error] = self.messages(LogLevel.error)
        self.assertIn("/tasks/bad", error)
        self.assertIn("topic invalid", error)
        self.assertEqual(containerd.answer(), "good")
        self.assertEqual(self.dialler.dials, 1)
        self.assertFalse(containerd.transport.disconnecting)
        self.assertEqual(
            [eventID(f) for f in containerd.forwarded()], ["bad"] * 5 + ["good"]
        )

    def test_refusedThenAccepted(self) -> None:
        """
        An event refused fewer than L{MAX_REFUSALS} times is retried until
        containerd takes it; nothing is dropped.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        containerd = self.dialler.accept()
        for _ in range(MAX_REFUSALS - 1):
            containerd.answer(Code.INVALID_ARGUMENT, "not yet")
            self.clock.advance(MAX_RETRY_DELAY)
        self.assertEqual(containerd.answer(), "e0")
        self.assertEqual(self.messages(LogLevel.error), [])
        self.assertEqual(self.publisher.pending(), 0)

    def test_outageAfterDroppedEvent(self) -> None:
        """
        The retries of one event do not carry over to the next: after an
        event is dropped, the next one's first failure is warned about and
        retried after the first, shortest, delay.
        """
        self.publisher.publish("/tasks/bad", taskExit("bad"))
        containerd = self.dialler.accept()
        for _ in range(MAX_REFUSALS):
            containerd.answer(Code.INVALID_ARGUMENT, "bad event")
            self.clock.advance(MAX_RETRY_DELAY)
        warnings = len(self.messages(LogLevel.warn))
        containerd.drop()
        self.publisher.publish("/tasks/exit", taskExit("e1"))
        self.dialler.refuse()
        [retry] = self.clock.getDelayedCalls()
        self.assertAlmostEqual(
            retry.getTime() - self.clock.seconds(), FIRST_RETRY_DELAY
        )
        self.assertEqual(len(self.messages(LogLevel.warn)), warnings + 1)
        self.assertIn("/tasks/exit", self.messages(LogLevel.warn)[-1])

    def test_closeEmpty(self) -> None:
        """
        L{EventPublisher.close} with nothing queued fires at once and hangs
        up.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        containerd = self.dialler.accept()
        containerd.answer()
        self.assertIsNone(self.successResultOf(self.publisher.close()))
        self.assertTrue(containerd.transport.disconnecting)

    def test_closeNeverConnected(self) -> None:
        """
        L{EventPublisher.close} on a publisher that never published fires at
        once, without dialling.
        """
        self.assertIsNone(self.successResultOf(self.publisher.close()))
        self.assertEqual(self.dialler.dials, 0)

    def test_closeDelivers(self) -> None:
        """
        L{EventPublisher.close} with events queued fires once they are all
        delivered, retries included, and then hangs up.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        self.publisher.publish("/tasks/exit", taskExit("e1"))
        closed = self.publisher.close()
        self.dialler.refuse()
        self.clock.advance(FIRST_RETRY_DELAY)
        containerd = self.dialler.accept()
        self.assertEqual(containerd.answer(), "e0")
        self.assertNoResult(closed)
        self.assertFalse(containerd.transport.disconnecting)
        self.assertEqual(containerd.answer(), "e1")
        self.assertIsNone(self.successResultOf(closed))
        self.assertTrue(containerd.transport.disconnecting)

    def test_closeCancelled(self) -> None:
        """
        Cancelling the wait of L{EventPublisher.close} (the shutdown timing
        out) fails it with L{CancelledError} and logs how many events, and
        which, were not delivered.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        self.publisher.publish("/tasks/delete", taskExit("e1"))
        closed = self.publisher.close()
        self.dialler.refuse()
        closed.cancel()
        self.failureResultOf(closed, CancelledError)
        [error] = self.messages(LogLevel.error)
        self.assertIn("2 events not delivered", error)
        self.assertIn("/tasks/exit, /tasks/delete", error)

    def test_closeTimedOutByShutdown(self) -> None:
        """
        Registered with the shutdown service, as the task service does, the
        publisher's close is given up after the shutdown timeout, and what was
        not delivered is logged.
        """
        shutdown = ShutdownService(self.clock, lambda: None)
        shutdown.register(self.publisher.close)
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        self.dialler.refuse()
        done = shutdown.runCallbacks()
        self.assertNoResult(done)
        self.clock.advance(CALLBACK_TIMEOUT)
        self.assertIsNone(self.successResultOf(done))
        self.assertTrue(
            any("1 events not delivered" in m for m in self.messages(LogLevel.error))
        )

    def test_publishAfterClose(self) -> None:
        """
        An event published after L{EventPublisher.close} is logged as an
        error, with its topic, and dropped: nothing is sent.
        """
        self.successResultOf(self.publisher.close())
        self.publisher.publish("/tasks/exit", taskExit("late"))
        self.assertEqual(self.publisher.pending(), 0)
        self.assertEqual(self.dialler.dials, 0)
        [error] = self.messages(LogLevel.error)
        self.assertIn("/tasks/exit", error)
        self.assertIn("after close", error)

    def test_publishAfterCloseWhileDraining(self) -> None:
        """
        While L{EventPublisher.close} waits for the queue to drain, new events
        are refused, and the queued ones are still delivered.
        """
        self.publisher.publish("/tasks/exit", taskExit("e0"))
        closed = self.publisher.close()
        self.publisher.publish("/tasks/exit", taskExit("late"))
        containerd = self.dialler.accept()
        self.assertEqual(containerd.answer(), "e0")
        self.successResultOf(closed)
        self.assertEqual([eventID(f) for f in containerd.forwarded()], ["e0"])


class PublisherPluginTests(SynchronousTestCase):
    """
    L{publisherPlugin} builds the publisher from the shim's configuration.
    """

    def test_registration(self) -> None:
        """
        The publisher is the C{io.containerd.event.v1} plugin C{publisher},
        and requires nothing.
        """
        self.assertEqual(publisherPlugin.type, EVENT_PLUGIN)
        self.assertEqual(publisherPlugin.id, "publisher")
        self.assertEqual(tuple(publisherPlugin.requires), ())

    def test_dialsTTRPCAddress(self) -> None:
        """
        The plugin's publisher provides L{IPublisher} and dials the
        configured ttrpc address (without its C{unix://} scheme) on the first
        event, not before.
        """
        memory = MemoryReactorClock()
        config = ShimConfig(namespace="ns", ttrpcAddress="unix:///x/c.sock.ttrpc")
        publisher = publisherPlugin.initialise(PluginContext(memory, config))
        self.assertTrue(verifyObject(IPublisher, publisher))
        assert isinstance(publisher, EventPublisher)
        self.assertEqual(memory.unixClients, [])
        publisher.publish("/tasks/exit", taskExit("e0"))
        [(path, *_)] = memory.unixClients
        self.assertEqual(path, "/x/c.sock.ttrpc")


class Recorder:
    """
    An C{Events} service that records every C{ForwardRequest}, and tells when
    it has a given number.
    """

    def __init__(self) -> None:
        self.received: list[events_service_pb2.ForwardRequest] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def Forward(
        self, request: events_service_pb2.ForwardRequest, context: CallContext
    ) -> None:
        self.received.append(request)
        for waiting in list(self._waiting):
            count, reached = waiting
            if len(self.received) >= count:
                self._waiting.remove(waiting)
                reached.callback(None)

    def waitFor(self, count: int) -> Deferred[None]:
        """
        @return: a Deferred that fires once C{count} requests have come.
        """
        reached: Deferred[None] = Deferred()
        if len(self.received) >= count:
            reached.callback(None)
        else:
            self._waiting.append((count, reached))
        return reached

    def ids(self) -> list[str]:
        return [eventID(forward) for forward in self.received]


class TrackingFactory(TTRPCServerFactory):
    """
    A ttrpc server factory that keeps its connections, so that the test can
    drop them as a restarting containerd does.
    """

    def __init__(self, registry: ServiceRegistry) -> None:
        super().__init__(registry, reactor)
        self.connections: list[TTRPCServerProtocol] = []

    def buildProtocol(self, addr: object) -> TTRPCServerProtocol:
        protocol = super().buildProtocol(addr)
        self.connections.append(protocol)
        return protocol


class RealContainerdTests(TestCase):
    """
    L{EventPublisher} on the real reactor, against a ttrpc C{Events} server
    on a unix socket that comes and goes, as containerd does when it
    restarts.
    """

    timeout = 60

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="shimd-events-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "c.sock.ttrpc")
        self.recorder = Recorder()
        registry = ServiceRegistry()
        registry.register(EVENTS, self.recorder)
        self.factory = TrackingFactory(registry)
        self.refusals = 0
        self.refused: list[tuple[int, Deferred[None]]] = []
        self.clients: list[TTRPCClientProtocol] = []
        self.publisher = EventPublisher(reactor, "sxref", self.connect)

    def connect(self) -> Deferred[TTRPCClientProtocol]:
        """
        Dial the socket for the publisher, counting refusals.
        """
        dialled = connectTTRPC(reactor, reactor, self.path)  # type: ignore[arg-type]

        def connected(protocol: TTRPCClientProtocol) -> TTRPCClientProtocol:
            self.clients.append(protocol)
            return protocol

        def failed(failure: Failure) -> Failure:
            self.refusals += 1
            for waiting in list(self.refused):
                if self.refusals >= waiting[0]:
                    self.refused.remove(waiting)
                    waiting[1].callback(None)
            return failure

        return dialled.addCallbacks(connected, failed)

    def refusedAgain(self) -> Deferred[None]:
        """
        @return: a Deferred that fires after the next refused dial.
        """
        refused: Deferred[None] = Deferred()
        self.refused.append((self.refusals + 1, refused))
        return refused

    @inlineCallbacks
    def listen(self) -> Any:
        """
        Start containerd's ttrpc server on the socket path.
        """
        if os.path.exists(self.path):
            os.unlink(self.path)
        endpoint = UNIXServerEndpoint(reactor, self.path)
        port = yield endpoint.listen(self.factory)
        return port

    @inlineCallbacks
    def stop(self, port: Any) -> Any:
        """
        Stop containerd: stop listening and drop its connections.
        """
        yield port.stopListening()
        for protocol in self.factory.connections:
            protocol.transport.loseConnection()
        self.factory.connections = []

    @inlineCallbacks
    def closePublisher(self) -> Any:
        """
        Close the publisher and wait for its connections to be gone.
        """
        yield self.publisher.close()
        for client in self.clients:
            yield client.whenClosed

    @inlineCallbacks
    def test_deliveredWhenContainerdListens(self) -> Any:
        """
        Events published before containerd's socket exists are delivered, in
        publication order, once it starts listening.
        """
        refused = self.refusedAgain()
        for index in range(3):
            self.publisher.publish("/tasks/exit", taskExit(f"e{index}"))
        yield refused
        yield self.refusedAgain()
        self.assertEqual(self.recorder.received, [])
        port = yield self.listen()
        yield self.recorder.waitFor(3)
        self.assertEqual(self.recorder.ids(), ["e0", "e1", "e2"])
        self.assertEqual(len(self.clients), 1)
        envelope = self.recorder.received[0].envelope
        self.assertEqual(envelope.namespace, "sxref")
        self.assertEqual(envelope.topic, "/tasks/exit")
        self.assertEqual(envelope.event.type_url, "containerd.events.TaskExit")
        yield self.closePublisher()
        yield self.stop(port)

    @inlineCallbacks
    def test_containerdRestart(self) -> Any:
        """
        Across a containerd restart, events published while it is down are
        delivered after it comes back, in order, on a new connection.
        """
        port = yield self.listen()
        self.publisher.publish("/tasks/start", taskExit("before"))
        yield self.recorder.waitFor(1)
        yield self.stop(port)
        yield self.clients[0].whenClosed
        refused = self.refusedAgain()
        self.publisher.publish("/tasks/exit", taskExit("down1"))
        self.publisher.publish("/tasks/delete", taskExit("down2"))
        yield refused
        port = yield self.listen()
        yield self.recorder.waitFor(3)
        self.assertEqual(self.recorder.ids(), ["before", "down1", "down2"])
        self.assertEqual(len(self.clients), 2)
        yield self.closePublisher()
        yield self.stop(port)
