"""
Blocking ttrpc clients for the stress tests: they talk to a shim's socket
directly, from a test method or from threads, without the reactor.

L{ShimClient} is one connection making one call at a time; L{StatePounder}
keeps many connections busy with C{State} calls from a single background
thread. Both frame with L{shimd.ttrpc.framing} and use shimd's generated
protobuf modules.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
from collections.abc import Iterable
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from shimd.protos import task_pb2, ttrpc_pb2
from shimd.ttrpc.framing import (
    REQUEST,
    RESPONSE,
    Frame,
    FrameReceiver,
    OversizedFrame,
    encodeFrame,
)
from shimd.ttrpc.status import Code, TTRPCError

TASK_SERVICE_NAME = "containerd.task.v2.Task"
TASK_METHODS = task_pb2.DESCRIPTOR.services_by_name["Task"].methods_by_name
REQUEST_TYPES: dict[str, type[Message]] = {
    name: GetMessageClass(method.input_type) for name, method in TASK_METHODS.items()
}
RESPONSE_TYPES: dict[str, type[Message]] = {
    name: GetMessageClass(method.output_type) for name, method in TASK_METHODS.items()
}

M = TypeVar("M", bound=Message)


class Closed(Exception):
    """
    The shim closed the connection before answering.
    """


def socketPathOf(address: str) -> str:
    """
    The file of a C{unix://} address (or a bare path).
    """
    return address.strip().removeprefix("unix://")


def requestFrame(
    streamID: int,
    method: str,
    request: Message | bytes,
    service: str = TASK_SERVICE_NAME,
    timeoutNano: int = 0,
    metadata: Iterable[tuple[str, str]] = (),
) -> bytes:
    """
    One encoded request frame.

    @param request: the method's request message, or its payload as bytes.
    """
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    envelope = ttrpc_pb2.Request(
        service=service,
        method=method,
        payload=payload,
        timeout_nano=timeoutNano,
        metadata=[ttrpc_pb2.KeyValue(key=k, value=v) for k, v in metadata],
    )
    return encodeFrame(streamID, REQUEST, envelope.SerializeToString())


def decodeResponse(method: str, frame: Frame) -> Message:
    """
    The response message a response frame carries.

    @raise TTRPCError: the status, when the call failed.
    """
    if frame.messageType != RESPONSE:
        raise AssertionError(f"frame of type {frame.messageType} is no response")
    response = ttrpc_pb2.Response()
    response.ParseFromString(frame.payload)
    if response.HasField("status") and response.status.code != Code.OK:
        raise TTRPCError(response.status.code, response.status.message)
    message = RESPONSE_TYPES[method]()
    message.ParseFromString(response.payload)
    return message


class ShimClient:
    """
    One blocking connection to a shim's socket.
    """

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        """
        @param path: the socket's path (a C{unix://} prefix is dropped).
        @param timeout: how long any one read or write may block.
        """
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.settimeout(timeout)
        try:
            self.socket.connect(socketPathOf(path))
        except BaseException:
            self.socket.close()
            raise
        self._receiver = FrameReceiver()
        self._frames: list[Frame | OversizedFrame] = []
        self._answered: dict[int, Frame] = {}
        self._nextStreamID = 1
        self.eof = False

    def __enter__(self) -> ShimClient:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close()

    def nextStreamID(self) -> int:
        """
        A new odd stream id for this connection.
        """
        streamID = self._nextStreamID
        self._nextStreamID += 2
        return streamID

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def readFrame(self) -> Frame | OversizedFrame | None:
        """
        The next frame from the shim, or L{None} once it has closed the
        connection.

        @raise TimeoutError: when nothing comes in time.
        """
        while not self._frames:
            if self.eof:
                return None
            try:
                data = self.socket.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                return None
            self._frames.extend(self._receiver.feed(data))
        return self._frames.pop(0)

    def waitFor(self, streamID: int) -> Frame:
        """
        Read until the answer on C{streamID} arrives (answers on other
        streams are kept for their callers).

        @raise Closed: when the connection closes first.
        """
        while streamID not in self._answered:
            frame = self.readFrame()
            if frame is None:
                raise Closed(f"connection closed before stream {streamID} was answered")
            if isinstance(frame, OversizedFrame):
                raise AssertionError(f"oversized frame from the shim: {frame}")
            self._answered[frame.streamID] = frame
        return self._answered.pop(streamID)

    def start(self, method: str, request: Message, timeout: float = 0) -> int:
        """
        Send a Task call without waiting for its answer.

        @return: its stream id, for L{finish}.
        """
        streamID = self.nextStreamID()
        self.send(
            requestFrame(streamID, method, request, timeoutNano=int(timeout * 1e9))
        )
        return streamID

    def finish(self, method: str, streamID: int) -> Any:
        """
        Wait for the answer of a call sent with L{start}.
        """
        return decodeResponse(method, self.waitFor(streamID))

    def call(self, method: str, request: Message, timeout: float = 0) -> Any:
        """
        Call a Task method and wait for its answer.

        @param timeout: the deadline to send, in seconds (0: none).
        @return: the response message.
        @raise TTRPCError: when the shim answers with an error status.
        """
        return self.finish(method, self.start(method, request, timeout))


class StatePounder:
    """
    Many connections to one shim, each always waiting for an answer to
    C{State} of one container, driven from a background thread: a crowd of
    clients that never lets up.

    @ivar calls: answered calls.
    @ivar failures: what went wrong: error statuses, wrong answers, closed
        connections.
    """

    def __init__(
        self,
        path: str,
        containerID: str,
        connections: int,
    ) -> None:
        self._path = socketPathOf(path)
        self._containerID = containerID
        self._connections = connections
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _frame(self, streamID: int) -> bytes:
        envelope = ttrpc_pb2.Request(
            service=TASK_SERVICE_NAME,
            method="State",
            payload=task_pb2.StateRequest(id=self._containerID).SerializeToString(),
        )
        return encodeFrame(streamID, REQUEST, envelope.SerializeToString())

    def start(self) -> None:
        """
        Connect every client and start calling.
        """
        self._sockets = []
        for _ in range(self._connections):
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.connect(self._path)
            connection.setblocking(False)
            self._sockets.append(connection)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """
        Stop calling and close every connection.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        states: dict[socket.socket, dict[str, Any]] = {}
        try:
            for connection in self._sockets:
                state = {"receiver": FrameReceiver(), "stream": 1, "out": b""}
                states[connection] = state
                self._send(connection, state)
                selector.register(
                    connection, selectors.EVENT_READ | selectors.EVENT_WRITE
                )
            while not self._stop.is_set() and states:
                for key, events in selector.select(timeout=0.2):
                    selected = key.fileobj
                    assert isinstance(selected, socket.socket)
                    connection = selected
                    state = states[connection]
                    if events & selectors.EVENT_WRITE and state["out"]:
                        self._flush(connection, state)
                    if events & selectors.EVENT_READ and not self._read(
                        connection, state
                    ):
                        selector.unregister(connection)
                        del states[connection]
                        continue
                    wanted = selectors.EVENT_READ
                    if state["out"]:
                        wanted |= selectors.EVENT_WRITE
                    selector.modify(connection, wanted)
        except Exception as e:  # pragma: no cover - reported by the test
            self.failures.append(f"pounder crashed: {e!r}")
        finally:
            selector.close()
            for connection in self._sockets:
                connection.close()

    def _send(self, connection: socket.socket, state: dict[str, Any]) -> None:
        state["out"] += self._frame(state["stream"])
        self._flush(connection, state)

    def _flush(self, connection: socket.socket, state: dict[str, Any]) -> None:
        try:
            sent = connection.send(state["out"])
        except BlockingIOError:
            return
        state["out"] = state["out"][sent:]

    def _read(self, connection: socket.socket, state: dict[str, Any]) -> bool:
        try:
            data = connection.recv(1 << 16)
        except BlockingIOError:
            return True
        except OSError as e:
            self.failures.append(
                f"connection failed: {errno.errorcode.get(e.errno or 0, e)}"
            )
            return False
        if not data:
            self.failures.append("connection closed by the shim")
            return False
        for frame in state["receiver"].feed(data):
            if isinstance(frame, OversizedFrame) or frame.streamID != state["stream"]:
                self.failures.append(f"unexpected frame {frame!r}")
                continue
            try:
                response = decodeResponse("State", frame)
            except TTRPCError as e:
                self.failures.append(f"State failed: {e}")
            else:
                assert isinstance(response, task_pb2.StateResponse)
                if response.id != self._containerID:
                    self.failures.append(f"State answered for {response.id!r}")
            self.calls += 1
            state["stream"] += 2
            self._send(connection, state)
        return True
