# -*- test-case-name: tests.test_ttrpc -*-
"""
The ttrpc client: many calls in flight on one connection, each a Deferred
that fires with the decoded response or fails with L{TTRPCError}.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IReactorUNIX
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from shimd.protos import ttrpc_pb2
from shimd.ttrpc.framing import (
    REQUEST,
    RESPONSE,
    FrameReceiver,
    OversizedFrame,
    encodeFrame,
    oversizeMessage,
)
from shimd.ttrpc.status import Code, ConnectionClosed, TTRPCError

M = TypeVar("M", bound=Message)


class _PendingCall:
    """
    A call sent and not yet answered.
    """

    def __init__(self, responseType: type[Message], result: Deferred[Any]) -> None:
        self.responseType = responseType
        self.result = result
        self.timer: IDelayedCall | None = None


class TTRPCClientProtocol(Protocol):
    """
    The client side of one ttrpc connection. Stream ids are odd, from 1 up,
    as the Go client picks them.
    """

    log = Logger()
    transport: Any

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._receiver = FrameReceiver()
        self._nextStreamID = 1
        self._pending: dict[int, _PendingCall] = {}
        self._closed = False
        self.whenClosed: Deferred[None] = Deferred()

    def call(
        self,
        service: str,
        method: str,
        request: Message,
        responseType: type[M],
        timeout: float | None = None,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> Deferred[M]:
        """
        Send one request.

        @param timeout: seconds the server may take; it is sent as the
            deadline, and the call fails with C{DEADLINE_EXCEEDED} locally
            when it passes unanswered.
        @param metadata: key/value pairs to send; keys are lower-cased.
        @return: a Deferred that fires with the response message, or fails
            with L{TTRPCError} (L{ConnectionClosed} when the connection goes
            first).
        """
        if self._closed:
            return fail(ConnectionClosed())
        streamID = self._nextStreamID
        self._nextStreamID += 2
        envelope = ttrpc_pb2.Request(
            service=service,
            method=method,
            payload=request.SerializeToString(),
            timeout_nano=int(timeout * 1e9) if timeout else 0,
            metadata=[
                ttrpc_pb2.KeyValue(key=key.lower(), value=value)
                for key, value in metadata
            ],
        )

        def cancel(result: Deferred[Any]) -> None:
            self._forget(streamID)

        pending = _PendingCall(responseType, Deferred(cancel))
        self._pending[streamID] = pending
        if timeout:
            pending.timer = self._clock.callLater(
                timeout,
                self._fail,
                streamID,
                TTRPCError(Code.DEADLINE_EXCEEDED, "context deadline exceeded"),
            )
        self.transport.write(
            encodeFrame(streamID, REQUEST, envelope.SerializeToString())
        )
        return pending.result

    def dataReceived(self, data: bytes) -> None:
        for frame in self._receiver.feed(data):
            if isinstance(frame, OversizedFrame):
                self._fail(
                    frame.streamID,
                    TTRPCError(Code.RESOURCE_EXHAUSTED, oversizeMessage(frame.length)),
                )
                continue
            if frame.streamID not in self._pending:
                self.log.warn(
                    "ttrpc: response for unknown stream {streamID}",
                    streamID=frame.streamID,
                )
                continue
            if frame.messageType != RESPONSE:
                self._fail(
                    frame.streamID,
                    TTRPCError(
                        Code.INTERNAL,
                        f"ttrpc: unexpected message type {frame.messageType}",
                    ),
                )
                continue
            self._answer(frame.streamID, frame.payload)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        for streamID in list(self._pending):
            self._fail(streamID, ConnectionClosed())
        self.whenClosed.callback(None)

    def _answer(self, streamID: int, payload: bytes) -> None:
        pending = self._forget(streamID)
        response = ttrpc_pb2.Response()
        try:
            response.ParseFromString(payload)
            message = pending.responseType()
            message.ParseFromString(response.payload)
        except DecodeError as e:
            pending.result.errback(
                TTRPCError(Code.INTERNAL, f"ttrpc: error unmarshalling response: {e}")
            )
            return
        if response.HasField("status") and response.status.code != Code.OK:
            pending.result.errback(
                TTRPCError(response.status.code, response.status.message)
            )
            return
        pending.result.callback(message)

    def _fail(self, streamID: int, error: TTRPCError) -> None:
        if streamID in self._pending:
            self._forget(streamID).result.errback(error)

    def _forget(self, streamID: int) -> _PendingCall:
        pending = self._pending.pop(streamID)
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        return pending


class ServiceClient:
    """
    Calls on one protobuf service, by method name, with the request and
    response types taken from the service's descriptor.
    """

    def __init__(
        self,
        protocol: TTRPCClientProtocol,
        descriptor: ServiceDescriptor,
        name: str | None = None,
    ) -> None:
        """
        @param name: the full service name to call, when not the
            descriptor's own: a service whose messages are wire-identical
            under another package name.
        """
        self.protocol = protocol
        self._service = name or descriptor.full_name
        self._responseTypes = {
            method.name: GetMessageClass(method.output_type)
            for method in descriptor.methods
        }

    def call(
        self,
        method: str,
        request: Message,
        timeout: float | None = None,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> Deferred[Any]:
        """
        Call C{method} of the service; see L{TTRPCClientProtocol.call}.
        """
        return self.protocol.call(
            self._service,
            method,
            request,
            self._responseTypes[method],
            timeout=timeout,
            metadata=metadata,
        )


def socketPath(address: str) -> str:
    """
    The filesystem path of a ttrpc address, which may carry a C{unix://}
    scheme.
    """
    return address.removeprefix("unix://")


def connectTTRPC(
    reactor: IReactorUNIX, clock: IReactorTime, address: str
) -> Deferred[TTRPCClientProtocol]:
    """
    Connect to a ttrpc server on a unix socket.

    @param address: a socket path, with or without C{unix://}.
    """
    endpoint = UNIXClientEndpoint(reactor, socketPath(address))
    return connectProtocol(endpoint, TTRPCClientProtocol(clock))
