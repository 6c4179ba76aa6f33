# -*- test-case-name: tests.test_ttrpc -*-
"""
The ttrpc server: a L{Protocol} per connection and a L{Factory} that shares
one L{ServiceRegistry} of handlers.

Every request runs as its own Deferred, so answers leave in whatever order the
work finishes: a C{Wait} may stay pending for the life of a container while the
same connection keeps answering C{State}. Errors reach the client as a
C{google.rpc.Status}; the connection stays up.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import attr
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shimd.protos import status_pb2, ttrpc_pb2
from shimd.ttrpc.framing import (
    MAX_MESSAGE_SIZE,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReceiver,
    OversizedFrame,
    encodeFrame,
    oversizeMessage,
)
from shimd.ttrpc.status import Code, TTRPCError, statusFromException
from shimd.wire import encodeVarint

Handler = Callable[[Any, "CallContext"], Any]
_PEERCRED = struct.Struct("3i")


class CallContext:
    """
    What a handler may know about the call beyond its request message. (A
    plain class with slots: one is built for every call.)

    @ivar metadata: the request metadata as a multimap; keys lower-cased.
    @ivar timeout: the deadline the client set, in seconds from receipt, or
        L{None} for none.
    """

    __slots__ = ("metadata", "method", "service", "streamID", "timeout")

    def __init__(
        self,
        service: str,
        method: str,
        streamID: int,
        metadata: dict[str, list[str]],
        timeout: float | None,
    ) -> None:
        self.service = service
        self.method = method
        self.streamID = streamID
        self.metadata = metadata
        self.timeout = timeout


@attr.s(frozen=True, auto_attribs=True)
class Method:
    """
    One method a server can dispatch to.
    """

    requestType: type[Message]
    handler: Handler


class ServiceRegistry:
    """
    The handlers a server dispatches to, by exact service and method name.
    """

    def __init__(self) -> None:
        self._services: dict[str, dict[str, Method]] = {}

    def register(
        self,
        descriptor: ServiceDescriptor,
        implementation: object,
        name: str | None = None,
    ) -> None:
        """
        Serve every method of a protobuf service with the method of the same
        name on C{implementation}. A method the implementation lacks answers
        C{UNIMPLEMENTED}, as does an unknown one.

        @param descriptor: the service, as the generated module describes it.
        @param implementation: an object with a method per RPC, each taking
            the decoded request and a L{CallContext} and returning the response
            message or a Deferred of it.
        @param name: the full service name to serve it under, when not the
            descriptor's own: a service whose messages are wire-identical
            under another package name.
        """
        methods = {}
        for method in descriptor.methods:
            handler = getattr(implementation, method.name, None)
            if handler is not None:
                methods[method.name] = Method(
                    GetMessageClass(method.input_type), handler
                )
        self._services[name or descriptor.full_name] = methods

    def lookup(self, service: str, method: str) -> Method:
        """
        @raise TTRPCError: C{UNIMPLEMENTED} with the Go texts, for an unknown
            service or method.
        """
        methods = self._services.get(service)
        if methods is None:
            raise TTRPCError(Code.UNIMPLEMENTED, f"service {service}")
        found = methods.get(method)
        if found is None:
            raise TTRPCError(Code.UNIMPLEMENTED, f"method {method}")
        return found


def peerIsSelf(transport: object) -> bool:
    """
    Whether the peer of a unix socket runs as our own effective user and
    group, the only peer the Go shim's server accepts. Transports without a
    socket (in tests) pass.
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return True
    handle = getHandle()
    if not isinstance(handle, socket.socket) or handle.family != socket.AF_UNIX:
        return True
    credentials = handle.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size
    )
    _, uid, gid = _PEERCRED.unpack(credentials)
    return uid == os.geteuid() and gid == os.getegid()


def _buffered(transport: Any) -> bool:
    """
    Whether a Twisted transport holds data not yet sent. (It reads the
    buffer attributes of Twisted's file descriptors; a transport without
    them counts as buffered, which only costs the fast path.)
    """
    pending = getattr(transport, "_tempDataLen", None)
    if pending is None:
        return True
    return bool(pending or transport.dataBuffer)


@implementer(IPushProducer)
class TTRPCServerProtocol(Protocol):
    """
    One client connection.

    It registers itself as the transport's producer so that a client that
    stops reading its answers stops having its requests read, instead of
    growing the write buffer without bound.
    """

    log = Logger()
    transport: Any

    def __init__(self, registry: ServiceRegistry, clock: IReactorTime) -> None:
        self._registry = registry
        self._clock = clock
        self._receiver = FrameReceiver()
        self._inFlight: set[Deferred[Any]] = set()
        self._connected = False
        self._socket: socket.socket | None = None

    def connectionMade(self) -> None:
        if not peerIsSelf(self.transport):
            self.log.warn("refused a connection from another user")
            self.transport.abortConnection()
            return
        self._connected = True
        self.transport.registerProducer(self, True)
        handle = getattr(self.transport, "getHandle", lambda: None)()
        self._socket = handle if isinstance(handle, socket.socket) else None

    def _write(self, frame: bytes) -> None:
        """
        Send one frame. While the transport has nothing buffered, send it
        straight away: Twisted would otherwise buffer it and send it one
        reactor turn later, after two more system calls to watch the socket
        for writing, which is most of a call's round trip. What does not fit
        goes to the transport's buffer, behind which every later frame waits
        its turn.
        """
        if self._socket is not None and not _buffered(self.transport):
            try:
                sent = self._socket.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0
            if sent == len(frame):
                return
            frame = frame[sent:]
        self.transport.write(frame)

    def dataReceived(self, data: bytes) -> None:
        for frame in self._receiver.feed(data):
            if isinstance(frame, OversizedFrame):
                self._sendStatus(
                    frame.streamID,
                    Code.RESOURCE_EXHAUSTED,
                    oversizeMessage(frame.length),
                )
            elif frame.messageType == REQUEST:
                self._requestReceived(frame)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._connected = False
        inFlight, self._inFlight = self._inFlight, set()
        for call in inFlight:
            call.cancel()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    def _requestReceived(self, frame: Frame) -> None:
        """
        Validate and dispatch one request frame.
        """
        if frame.streamID % 2 == 0:
            self._sendStatus(
                frame.streamID,
                Code.INVALID_ARGUMENT,
                "StreamID must be odd for client initiated streams",
            )
            return
        request = ttrpc_pb2.Request()
        try:
            request.ParseFromString(frame.payload)
        except DecodeError as e:
            self._sendStatus(
                frame.streamID, Code.INVALID_ARGUMENT, f"unmarshal request error: {e}"
            )
            return
        try:
            method = self._registry.lookup(request.service, request.method)
        except TTRPCError as e:
            self._sendStatus(frame.streamID, Code(e.code), e.message)
            return
        message = method.requestType()
        try:
            message.ParseFromString(request.payload)
        except DecodeError as e:
            self._sendStatus(
                frame.streamID,
                Code.INTERNAL,
                f"ttrpc: error unmarshalling payload: {e}",
            )
            return
        metadata: dict[str, list[str]] = {}
        for pair in request.metadata:
            metadata.setdefault(pair.key.lower(), []).append(pair.value)
        timeout = request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
        context = CallContext(
            request.service, request.method, frame.streamID, metadata, timeout
        )
        self._dispatch(method, message, context)

    def _dispatch(self, method: Method, message: Message, context: CallContext) -> None:
        """
        Run the handler and answer when its Deferred fires, or when the
        client's deadline passes first.
        """
        try:
            answer = method.handler(message, context)
        except Exception:
            answer = Failure()
        if not isinstance(answer, Deferred):
            # Most calls (State, for one) answer at once: no Deferred, no
            # timer, no bookkeeping.
            if isinstance(answer, Failure):
                self._sendFailure(context, answer, timedOut=False)
            else:
                self._sendPayload(context.streamID, answer)
            return
        call: Deferred[Any] = answer
        expired = []
        timer: IDelayedCall | None = None
        if context.timeout is not None:

            def expire() -> None:
                expired.append(True)
                call.cancel()

            timer = self._clock.callLater(context.timeout, expire)
        self._inFlight.add(call)

        def done(result: object) -> None:
            self._inFlight.discard(call)
            if timer is not None and timer.active():
                timer.cancel()
            if not self._connected:
                return
            if isinstance(result, Failure):
                self._sendFailure(context, result, timedOut=bool(expired))
            else:
                self._sendPayload(context.streamID, result)

        call.addBoth(done)

    def _sendPayload(self, streamID: int, result: object) -> None:
        payload = result.SerializeToString() if isinstance(result, Message) else b""
        if len(payload) > MAX_MESSAGE_SIZE:
            self._sendStatus(
                streamID, Code.RESOURCE_EXHAUSTED, oversizeMessage(len(payload))
            )
            return
        # The Response envelope with only its payload field (2), by hand:
        # the hot path of every successful call.
        envelope = b"\x12" + encodeVarint(len(payload)) + payload if payload else b""
        self._write(encodeFrame(streamID, RESPONSE, envelope))

    def _sendFailure(
        self, context: CallContext, failure: Failure, timedOut: bool
    ) -> None:
        if failure.check(CancelledError) and timedOut:
            code, message = Code.DEADLINE_EXCEEDED, "context deadline exceeded"
        elif failure.check(CancelledError):
            code, message = Code.CANCELLED, "context canceled"
        else:
            code, message = statusFromException(failure.value or Exception())
            if not failure.check(TTRPCError):
                self.log.failure(
                    "unexpected error in {service}/{method}",
                    failure,
                    service=context.service,
                    method=context.method,
                )
        self._sendStatus(context.streamID, code, message)

    def _sendStatus(self, streamID: int, code: Code, message: str) -> None:
        response = ttrpc_pb2.Response(
            status=status_pb2.Status(code=code, message=message)
        )
        self._write(encodeFrame(streamID, RESPONSE, response.SerializeToString()))


class TTRPCServerFactory(Factory):
    """
    Builds a L{TTRPCServerProtocol} per connection, all serving one registry.
    """

    def __init__(self, registry: ServiceRegistry, clock: IReactorTime) -> None:
        self.registry = registry
        self.clock = clock

    def buildProtocol(self, addr: object) -> TTRPCServerProtocol:
        return TTRPCServerProtocol(self.registry, self.clock)
