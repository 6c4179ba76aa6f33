# -*- test-case-name: tests.test_ttrpc -*-
"""
Tests for L{shimd.ttrpc}: framing, the server protocol, the client protocol,
and the two talking to each other over a real unix socket.
"""

from __future__ import annotations

import struct
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from shimd.protos import status_pb2, task_pb2, ttrpc_pb2
from shimd.ttrpc.client import (
    ServiceClient,
    TTRPCClientProtocol,
    connectTTRPC,
    socketPath,
)
from shimd.ttrpc.framing import (
    HEADER,
    MAX_MESSAGE_SIZE,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReceiver,
    OversizedFrame,
    encodeFrame,
)
from shimd.ttrpc.server import (
    CallContext,
    ServiceRegistry,
    TTRPCServerFactory,
    TTRPCServerProtocol,
)
from shimd.ttrpc.status import Code, ConnectionClosed, TTRPCError, statusFromException

TASK = task_pb2.DESCRIPTOR.services_by_name["Task"]
SERVICE = TASK.full_name


def request(
    streamID: int,
    method: str,
    message: Any = None,
    service: str = SERVICE,
    timeoutNano: int = 0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """
    A request frame, as a client writes it.
    """
    envelope = ttrpc_pb2.Request(
        service=service,
        method=method,
        payload=message.SerializeToString() if message is not None else b"",
        timeout_nano=timeoutNano,
        metadata=[ttrpc_pb2.KeyValue(key=k, value=v) for k, v in metadata],
    )
    return encodeFrame(streamID, REQUEST, envelope.SerializeToString())


def responses(data: bytes) -> list[tuple[int, ttrpc_pb2.Response]]:
    """
    Decode every response frame in C{data}.
    """
    result = []
    for frame in FrameReceiver().feed(data):
        assert isinstance(frame, Frame)
        assert frame.messageType == RESPONSE
        response = ttrpc_pb2.Response()
        response.ParseFromString(frame.payload)
        result.append((frame.streamID, response))
    return result


class FramingTests(SynchronousTestCase):
    """
    L{FrameReceiver} and L{encodeFrame}.
    """

    def test_header(self) -> None:
        """
        The header is length, stream id, type and flags, big-endian, and the
        length excludes the header.
        """
        self.assertEqual(
            encodeFrame(17, RESPONSE, b""),
            bytes.fromhex("00000000 00000011 02 00"),
        )
        self.assertEqual(encodeFrame(3, REQUEST, b"ab")[:4], b"\0\0\0\x02")

    def test_byteByByte(self) -> None:
        """
        Frames fed one byte at a time come out whole.
        """
        data = encodeFrame(1, REQUEST, b"hello") + encodeFrame(3, REQUEST, b"")
        receiver = FrameReceiver()
        frames = []
        for i in range(len(data)):
            frames.extend(receiver.feed(data[i : i + 1]))
        self.assertEqual(
            frames, [Frame(1, REQUEST, 0, b"hello"), Frame(3, REQUEST, 0, b"")]
        )

    def test_coalesced(self) -> None:
        """
        Several frames in one read come out in order.
        """
        data = b"".join(encodeFrame(i, REQUEST, bytes([i])) for i in (1, 3, 5))
        self.assertEqual(
            [f.streamID for f in FrameReceiver().feed(data)],  # type: ignore[union-attr]
            [1, 3, 5],
        )

    def test_flagsKept(self) -> None:
        """
        Unknown flags are reported, not refused.
        """
        data = HEADER.pack(1, 7, 9, 0xFF) + b"x"
        self.assertEqual(list(FrameReceiver().feed(data)), [Frame(7, 9, 0xFF, b"x")])

    def test_oversizedSkippedWithoutBuffering(self) -> None:
        """
        A frame over the limit is skipped as it arrives, never buffered, and
        reported once all of it has gone by; the next frame is intact.
        """
        receiver = FrameReceiver(maxSize=10)
        header = HEADER.pack(1000, 41, REQUEST, 0)
        self.assertEqual(list(receiver.feed(header + b"x" * 500)), [])
        self.assertLess(len(receiver._buffer), 20)
        events = list(receiver.feed(b"y" * 500 + encodeFrame(43, REQUEST, b"ok")))
        self.assertEqual(
            events,
            [OversizedFrame(41, REQUEST, 1000), Frame(43, REQUEST, 0, b"ok")],
        )

    def test_defaultLimit(self) -> None:
        """
        The limit is 4 MiB: a frame of exactly that size is accepted.
        """
        self.assertEqual(MAX_MESSAGE_SIZE, 4194304)
        payload = b"z" * MAX_MESSAGE_SIZE
        (frame,) = FrameReceiver().feed(encodeFrame(1, REQUEST, payload))
        self.assertIsInstance(frame, Frame)


class Handlers:
    """
    A Task implementation for tests: each method records its call and
    returns a Deferred the test controls.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, CallContext, Deferred[Any]]] = []
        self.cancelled: list[str] = []

    def _call(self, name: str, message: Any, context: CallContext) -> Deferred[Any]:
        result: Deferred[Any] = Deferred(lambda d: self.cancelled.append(name))
        self.calls.append((name, message, context, result))
        return result

    def State(self, message: Any, context: CallContext) -> Deferred[Any]:
        return self._call("State", message, context)

    def Wait(self, message: Any, context: CallContext) -> Deferred[Any]:
        return self._call("Wait", message, context)

    def Shutdown(self, message: Any, context: CallContext) -> Deferred[Any]:
        return self._call("Shutdown", message, context)

    def Connect(self, message: Any, context: CallContext) -> Any:
        raise ZeroDivisionError("boom")

    def Kill(self, message: Any, context: CallContext) -> Any:
        raise TTRPCError(Code.NOT_FOUND, "process already finished: not found")

    def Stats(self, message: Any, context: CallContext) -> Any:
        return task_pb2.StatsResponse()

    def Pids(self, message: Any, context: CallContext) -> Any:
        return task_pb2.PidsResponse(
            processes=[{"pid": 1} for _ in range(MAX_MESSAGE_SIZE // 3)]
        )


class ServerTests(SynchronousTestCase):
    """
    L{TTRPCServerProtocol} over a L{StringTransport}.
    """

    def setUp(self) -> None:
        self.handlers = Handlers()
        registry = ServiceRegistry()
        registry.register(TASK, self.handlers)
        self.clock = Clock()
        self.protocol = TTRPCServerFactory(registry, self.clock).buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def answers(self) -> list[tuple[int, ttrpc_pb2.Response]]:
        data = self.transport.value()
        self.transport.clear()
        return responses(data)

    def assertStatus(self, code: Code, message: str, streamID: int = 1) -> None:
        [(stream, response)] = self.answers()
        self.assertEqual(stream, streamID)
        self.assertEqual(
            (response.status.code, response.status.message), (code, message)
        )
        self.assertEqual(response.payload, b"")

    def test_success(self) -> None:
        """
        A handler's response is sent as the payload, with no status field.
        """
        self.protocol.dataReceived(request(1, "State", task_pb2.StateRequest(id="c")))
        name, message, _, result = self.handlers.calls[0]
        self.assertEqual((name, message.id), ("State", "c"))
        result.callback(task_pb2.StateResponse(id="c", pid=42))
        [(stream, response)] = self.answers()
        self.assertEqual(stream, 1)
        self.assertFalse(response.HasField("status"))
        self.assertEqual(task_pb2.StateResponse.FromString(response.payload).pid, 42)

    def test_emptyResponse(self) -> None:
        """
        An empty response is a zero-length payload frame, as Go sends for
        C{google.protobuf.Empty}.
        """
        self.protocol.dataReceived(request(17, "Stats"))
        self.assertEqual(self.transport.value(), bytes.fromhex("00000000000000110200"))

    def test_outOfOrder(self) -> None:
        """
        Requests run concurrently and are answered as they finish.
        """
        self.protocol.dataReceived(
            request(9, "Wait", task_pb2.WaitRequest(id="c"))
            + request(11, "State", task_pb2.StateRequest(id="c"))
        )
        wait, state = self.handlers.calls
        state[3].callback(task_pb2.StateResponse())
        wait[3].callback(task_pb2.WaitResponse(exit_status=3))
        self.assertEqual([stream for stream, _ in self.answers()], [11, 9])

    def test_unknownService(self) -> None:
        self.protocol.dataReceived(request(1, "State", service="x.Y"))
        self.assertStatus(Code.UNIMPLEMENTED, "service x.Y")

    def test_registeredUnderAnotherName(self) -> None:
        """
        A service registered under another name is served under that name
        too, by the same handlers, with the same messages.
        """
        registry = ServiceRegistry()
        registry.register(TASK, self.handlers, name="x.v3.Y")
        protocol = TTRPCServerFactory(registry, self.clock).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(
            request(1, "State", task_pb2.StateRequest(id="c"), service="x.v3.Y")
        )
        name, message, _, result = self.handlers.calls[0]
        self.assertEqual((name, message.id), ("State", "c"))
        result.callback(task_pb2.StateResponse(id="c", pid=42))
        [(_, response)] = responses(transport.value())
        self.assertEqual(task_pb2.StateResponse.FromString(response.payload).pid, 42)

    def test_unknownMethod(self) -> None:
        self.protocol.dataReceived(request(1, "Frobnicate"))
        self.assertStatus(Code.UNIMPLEMENTED, "method Frobnicate")

    def test_methodNotImplemented(self) -> None:
        """
        A method of the service that the implementation lacks is unknown too.
        """
        self.protocol.dataReceived(request(1, "Create"))
        self.assertStatus(Code.UNIMPLEMENTED, "method Create")

    def test_evenStream(self) -> None:
        self.protocol.dataReceived(request(2, "State"))
        self.assertStatus(
            Code.INVALID_ARGUMENT,
            "StreamID must be odd for client initiated streams",
            streamID=2,
        )
        self.assertEqual(self.handlers.calls, [])

    def test_badEnvelope(self) -> None:
        self.protocol.dataReceived(encodeFrame(5, REQUEST, b"\xff\xff"))
        [(stream, response)] = self.answers()
        self.assertEqual(stream, 5)
        self.assertEqual(response.status.code, Code.INVALID_ARGUMENT)
        self.assertTrue(response.status.message.startswith("unmarshal request error"))

    def test_badPayload(self) -> None:
        envelope = ttrpc_pb2.Request(service=SERVICE, method="State", payload=b"\x0a")
        self.protocol.dataReceived(
            encodeFrame(1, REQUEST, envelope.SerializeToString())
        )
        [(_, response)] = self.answers()
        self.assertEqual(response.status.code, Code.INTERNAL)
        self.assertTrue(
            response.status.message.startswith("ttrpc: error unmarshalling payload")
        )

    def test_handlerError(self) -> None:
        """
        A L{TTRPCError} from a handler is sent with its code and message.
        """
        self.protocol.dataReceived(request(1, "Kill"))
        self.assertStatus(Code.NOT_FOUND, "process already finished: not found")

    def test_unexpectedError(self) -> None:
        """
        An unexpected exception is C{UNKNOWN} with its message, is logged,
        and leaves the connection serving.
        """
        self.protocol.dataReceived(request(1, "Connect"))
        self.assertStatus(Code.UNKNOWN, "boom")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertFalse(self.transport.disconnecting)
        self.protocol.dataReceived(request(3, "Stats"))
        self.assertEqual(self.answers()[0][0], 3)

    def test_otherTypesSkipped(self) -> None:
        """
        A frame that is not a request is skipped without an answer; flags are
        ignored.
        """
        self.protocol.dataReceived(encodeFrame(1, 7, b"junk"))
        frame = bytearray(request(3, "Stats"))
        frame[9] = 0xFF
        self.protocol.dataReceived(bytes(frame))
        self.assertEqual([stream for stream, _ in self.answers()], [3])

    def test_oversized(self) -> None:
        """
        A frame over 4 MiB is answered on its stream with
        C{RESOURCE_EXHAUSTED} and the Go text, and the connection stays in
        sync.
        """
        length = 5 << 20
        self.protocol.dataReceived(HEADER.pack(length, 41, REQUEST, 0))
        for _ in range(5):
            self.protocol.dataReceived(b"\0" * (1 << 20))
        self.assertStatus(
            Code.RESOURCE_EXHAUSTED,
            f"message length {length} exceed maximum message size of 4194304",
            streamID=41,
        )
        self.protocol.dataReceived(request(43, "Stats"))
        self.assertEqual(self.answers()[0][0], 43)

    def test_oversizedResponseRefused(self) -> None:
        """
        A response over 4 MiB is never sent; the client gets
        C{RESOURCE_EXHAUSTED} instead.
        """
        self.protocol.dataReceived(request(1, "Pids"))
        [(_, response)] = self.answers()
        self.assertEqual(response.status.code, Code.RESOURCE_EXHAUSTED)

    def test_metadataAndDeadline(self) -> None:
        """
        Metadata reaches the handler as a lower-cased multimap, with the
        deadline in seconds.
        """
        self.protocol.dataReceived(
            request(
                1,
                "State",
                timeoutNano=2_000_000_000,
                metadata=(
                    ("containerd-namespace-ttrpc", "ns"),
                    ("X-Key", "a"),
                    ("x-key", "b"),
                ),
            )
        )
        context = self.handlers.calls[0][2]
        self.assertEqual(
            context.metadata,
            {"containerd-namespace-ttrpc": ["ns"], "x-key": ["a", "b"]},
        )
        self.assertEqual(context.timeout, 2.0)
        self.assertEqual((context.service, context.method), (SERVICE, "State"))

    def test_deadline(self) -> None:
        """
        When the deadline passes, the handler's Deferred is cancelled and the
        client gets C{DEADLINE_EXCEEDED}.
        """
        self.protocol.dataReceived(request(1, "State", timeoutNano=1_000_000_000))
        self.clock.advance(0.5)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.5)
        self.assertEqual(self.handlers.cancelled, ["State"])
        self.assertStatus(Code.DEADLINE_EXCEEDED, "context deadline exceeded")

    def test_answeredBeforeDeadline(self) -> None:
        """
        An answer in time cancels the deadline timer.
        """
        self.protocol.dataReceived(request(1, "State", timeoutNano=1_000_000_000))
        self.handlers.calls[0][3].callback(task_pb2.StateResponse())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectionLostCancels(self) -> None:
        """
        Losing the connection cancels the work in flight, and nothing is
        written afterwards.
        """
        self.protocol.dataReceived(request(1, "Wait") + request(3, "State"))
        self.protocol.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(sorted(self.handlers.cancelled), ["State", "Wait"])
        self.assertEqual(self.transport.value(), b"")

    def test_backPressure(self) -> None:
        """
        The protocol is the transport's streaming producer: when the
        transport's buffer is full, reading from the client pauses.
        """
        self.assertIs(self.transport.producer, self.protocol)
        self.assertTrue(self.transport.streaming)
        self.protocol.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.protocol.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")


class StatusTests(SynchronousTestCase):
    """
    L{statusFromException}.
    """

    def test_classification(self) -> None:
        import errno

        cases = [
            (
                TTRPCError(Code.ALREADY_EXISTS, "id x: already exists"),
                Code.ALREADY_EXISTS,
            ),
            (EOFError(), Code.OUT_OF_RANGE),
            (FileNotFoundError(errno.ENOENT, "gone"), Code.NOT_FOUND),
            (FileExistsError(errno.EEXIST, "there"), Code.ALREADY_EXISTS),
            (PermissionError(errno.EACCES, "no"), Code.PERMISSION_DENIED),
            (ValueError("bad"), Code.UNKNOWN),
        ]
        for exception, code in cases:
            self.assertEqual(statusFromException(exception)[0], code)
        self.assertEqual(statusFromException(ValueError("bad")), (Code.UNKNOWN, "bad"))

    def test_unknownCodeKept(self) -> None:
        """
        A code outside the known range is kept as a number.
        """
        self.assertEqual(TTRPCError(99, "x").code, 99)


class ClientTests(SynchronousTestCase):
    """
    L{TTRPCClientProtocol} over a L{StringTransport}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.protocol = TTRPCClientProtocol(self.clock)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.client = ServiceClient(self.protocol, TASK)

    def sent(self) -> list[tuple[int, ttrpc_pb2.Request]]:
        result = []
        for frame in FrameReceiver().feed(self.transport.value()):
            assert isinstance(frame, Frame)
            self.assertEqual(frame.messageType, REQUEST)
            envelope = ttrpc_pb2.Request()
            envelope.ParseFromString(frame.payload)
            result.append((frame.streamID, envelope))
        self.transport.clear()
        return result

    def answer(self, streamID: int, response: ttrpc_pb2.Response) -> None:
        self.protocol.dataReceived(
            encodeFrame(streamID, RESPONSE, response.SerializeToString())
        )

    def test_streamIDs(self) -> None:
        """
        Stream ids are odd, from 1, and each call carries its service,
        method, payload, deadline and lower-cased metadata.
        """
        self.client.call("State", task_pb2.StateRequest(id="a"))
        self.client.call(
            "Wait", task_pb2.WaitRequest(id="b"), timeout=5, metadata=[("K", "v")]
        )
        [(first, state), (second, wait)] = self.sent()
        self.assertEqual((first, second), (1, 3))
        self.assertEqual((state.service, state.method), (SERVICE, "State"))
        self.assertEqual(task_pb2.StateRequest.FromString(state.payload).id, "a")
        self.assertEqual(state.timeout_nano, 0)
        self.assertEqual(wait.timeout_nano, 5_000_000_000)
        self.assertEqual([(m.key, m.value) for m in wait.metadata], [("k", "v")])

    def test_responsesOutOfOrder(self) -> None:
        first = self.client.call("State", task_pb2.StateRequest())
        second = self.client.call("State", task_pb2.StateRequest())
        self.answer(
            3,
            ttrpc_pb2.Response(
                payload=task_pb2.StateResponse(pid=2).SerializeToString()
            ),
        )
        self.assertEqual(self.successResultOf(second).pid, 2)
        self.assertNoResult(first)

    def test_errorStatus(self) -> None:
        result = self.client.call("State", task_pb2.StateRequest())
        self.answer(
            1,
            ttrpc_pb2.Response(
                status=status_pb2.Status(
                    code=5, message="container not created: not found"
                )
            ),
        )
        error = self.failureResultOf(result, TTRPCError).value
        self.assertEqual(
            (error.code, error.message),
            (Code.NOT_FOUND, "container not created: not found"),
        )

    def test_unknownStreamDropped(self) -> None:
        """
        A response to no pending call is logged and dropped.
        """
        result = self.client.call("State", task_pb2.StateRequest())
        self.answer(7, ttrpc_pb2.Response())
        self.assertNoResult(result)

    def test_wrongTypeFailsCall(self) -> None:
        result = self.client.call("State", task_pb2.StateRequest())
        self.protocol.dataReceived(encodeFrame(1, REQUEST, b""))
        self.assertEqual(
            self.failureResultOf(result, TTRPCError).value.code, Code.INTERNAL
        )

    def test_timeout(self) -> None:
        result = self.client.call("State", task_pb2.StateRequest(), timeout=2)
        self.clock.advance(2)
        self.assertEqual(
            self.failureResultOf(result, TTRPCError).value.code,
            Code.DEADLINE_EXCEEDED,
        )
        self.answer(1, ttrpc_pb2.Response())

    def test_cancel(self) -> None:
        """
        Cancelling a call forgets it; a late answer is dropped.
        """
        result = self.client.call("State", task_pb2.StateRequest(), timeout=2)
        result.cancel()
        self.failureResultOf(result, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.answer(1, ttrpc_pb2.Response())

    def test_connectionLost(self) -> None:
        """
        Pending calls fail with L{ConnectionClosed} when the connection goes,
        and later calls fail at once.
        """
        pending = self.client.call("Wait", task_pb2.WaitRequest())
        self.protocol.connectionLost(None)  # type: ignore[arg-type]
        self.failureResultOf(pending, ConnectionClosed)
        self.failureResultOf(
            self.client.call("State", task_pb2.StateRequest()), ConnectionClosed
        )
        self.successResultOf(self.protocol.whenClosed)

    def test_socketPath(self) -> None:
        self.assertEqual(socketPath("unix:///run/x"), "/run/x")
        self.assertEqual(socketPath("/run/x"), "/run/x")


class EveryCode:
    """
    A Task implementation whose C{State} fails with the code named by the
    request's id, or succeeds for code 0.
    """

    def State(self, message: Any, context: CallContext) -> Any:
        code = Code(int(message.id))
        if code == Code.OK:
            return task_pb2.StateResponse(id="ok")
        raise TTRPCError(code, f"failed with {code.name}")


class UnixSocketTests(TestCase):
    """
    shimd's client and server, talking over a real unix socket.
    """

    @inlineCallbacks
    def test_everyStatusCode(self) -> Any:
        """
        Every status code, and success, round-trips from server to client.
        """
        registry = ServiceRegistry()
        registry.register(TASK, EveryCode())
        directory = FilePath(tempfile.mkdtemp(prefix="shimd-ttrpc-", dir="/tmp"))
        self.addCleanup(directory.remove)
        path = directory.child("s")
        port = yield UNIXServerEndpoint(reactor, path.path).listen(
            TTRPCServerFactory(registry, reactor)
        )
        self.addCleanup(port.stopListening)
        protocol = yield connectTTRPC(reactor, reactor, "unix://" + path.path)
        self.addCleanup(protocol.transport.loseConnection)
        client = ServiceClient(protocol, TASK)
        ok = yield client.call("State", task_pb2.StateRequest(id="0"))
        self.assertEqual(ok.id, "ok")
        for code in Code:
            if code == Code.OK:
                continue
            try:
                yield client.call("State", task_pb2.StateRequest(id=str(int(code))))
            except TTRPCError as e:
                self.assertEqual(
                    (e.code, e.message), (code, f"failed with {code.name}")
                )
            else:
                self.fail(f"{code.name} did not fail")


class ProtocolTypeTests(SynchronousTestCase):
    def test_factoryBuildsServerProtocol(self) -> None:
        factory = TTRPCServerFactory(ServiceRegistry(), Clock())
        self.assertIsInstance(factory.buildProtocol(None), TTRPCServerProtocol)

    def test_headerLayout(self) -> None:
        self.assertEqual(HEADER.size, 10)
        self.assertEqual(struct.calcsize(">IIBB"), 10)
