"""
A small blocking ttrpc client over a unix socket, for talking to a shim
straight, as containerd would, without a reactor in the way.

It frames requests with L{shimd.ttrpc.framing} and encodes them with
L{shimd.protos}, so it speaks the same bytes to shimd and to the Go shim.
The benchmark's hot loops (L{StateLoop}) pre-encode the request once and
only write the stream id into each frame's header, so that the client spends
as little time per call as Python allows, the same for both shims.
"""

from __future__ import annotations

import socket
import time
from typing import TypeVar

from google.protobuf.message import Message

from shimd.protos import task_pb2, ttrpc_pb2
from shimd.ttrpc.framing import HEADER, HEADER_SIZE, REQUEST, RESPONSE

TASK_SERVICE = "containerd.task.v2.Task"
# The same service under containerd 2.x's name: the only one the containerd
# 2.x Go shim serves.
TASK_SERVICE_V3 = "containerd.task.v3.Task"
UNIMPLEMENTED = 12
NAMESPACE_KEY = "containerd-namespace-ttrpc"

M = TypeVar("M", bound=Message)


class CallError(Exception):
    """
    The shim answered a call with an error status.

    @ivar code: the gRPC status code.
    """

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: code {code}: {message}")
        self.code = code


def socketPath(address: str) -> str:
    """
    The filesystem path of a C{unix://} address.
    """
    return address.removeprefix("unix://")


def _receiveExactly(connection: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("the shim closed the connection")
        chunks += chunk
    return bytes(chunks)


def checkStatus(method: str, envelope: bytes) -> bytes:
    """
    Decode a ttrpc C{Response} envelope.

    @return: the method's encoded response.
    @raise CallError: when it carries a status other than OK.
    """
    response = ttrpc_pb2.Response()
    response.ParseFromString(envelope)
    if response.HasField("status") and response.status.code != 0:
        raise CallError(method, response.status.code, response.status.message)
    return response.payload


class Client:
    """
    One connection to a shim, one call at a time.
    """

    def __init__(self, address: str, namespace: str, timeout: float = 30.0) -> None:
        self.namespace = namespace
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        try:
            self._socket.connect(socketPath(address))
        except BaseException:
            self._socket.close()
            raise
        self._nextStreamID = 1
        self._service = TASK_SERVICE

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def encode(self, method: str, request: Message, timeout: float = 0.0) -> bytes:
        """
        The C{Request} envelope for a call of the task service.
        """
        return ttrpc_pb2.Request(
            service=self._service,
            method=method,
            payload=request.SerializeToString(),
            timeout_nano=int(timeout * 1e9),
            metadata=[ttrpc_pb2.KeyValue(key=NAMESPACE_KEY, value=self.namespace)],
        ).SerializeToString()

    def callRaw(self, envelope: bytes) -> bytes:
        """
        Send one encoded request and wait for its response envelope.
        """
        streamID = self._nextStreamID
        self._nextStreamID += 2
        self._socket.sendall(
            HEADER.pack(len(envelope), streamID, REQUEST, 0) + envelope
        )
        while True:
            length, answered, kind, _ = HEADER.unpack(
                _receiveExactly(self._socket, HEADER_SIZE)
            )
            payload = _receiveExactly(self._socket, length)
            if answered == streamID and kind == RESPONSE:
                return payload

    def call(
        self, method: str, request: Message, responseType: type[M], timeout: float = 0
    ) -> M:
        """
        Call a method of the task service: task API v2, or v3 from then on
        when the shim does not serve v2.

        @raise CallError: when the shim answers with an error.
        """
        try:
            payload = checkStatus(
                method, self.callRaw(self.encode(method, request, timeout))
            )
        except CallError as e:
            if e.code != UNIMPLEMENTED or self._service != TASK_SERVICE:
                raise
            self._service = TASK_SERVICE_V3
            payload = checkStatus(
                method, self.callRaw(self.encode(method, request, timeout))
            )
        response = responseType()
        response.ParseFromString(payload)
        return response

    def shutdown(self, timeout: float = 10.0) -> None:
        """
        Call C{Shutdown} and wait until the shim closes the connection (it
        exits; its answer may or may not come first).
        """
        self._socket.settimeout(timeout)
        envelope = self.encode("Shutdown", task_pb2.ShutdownRequest())
        streamID = self._nextStreamID
        self._nextStreamID += 2
        self._socket.sendall(
            HEADER.pack(len(envelope), streamID, REQUEST, 0) + envelope
        )
        try:
            while self._socket.recv(65536):
                pass
        except ConnectionResetError:
            pass


def connectWhenReady(
    address: str, namespace: str, containerID: str, timeout: float = 30.0
) -> tuple[Client, task_pb2.ConnectResponse, float]:
    """
    Connect to a shim and call C{Connect} until it answers.

    @return: the connected client, the answer, and the time of the answer
        (on the C{perf_counter} clock).
    @raise TimeoutError: when nothing answers within C{timeout} seconds.
    """
    deadline = time.perf_counter() + timeout
    while True:
        try:
            client = Client(address, namespace, timeout=timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no shim answers on {address}") from None
            time.sleep(0.0005)
            continue
        try:
            answer = client.call(
                "Connect",
                task_pb2.ConnectRequest(id=containerID),
                task_pb2.ConnectResponse,
            )
        except BaseException:
            client.close()
            raise
        return client, answer, time.perf_counter()


class StateLoop:
    """
    C{State} calls in a tight loop on one connection: the request is encoded
    once, and only each frame's stream id changes.
    """

    def __init__(self, address: str, namespace: str, containerID: str) -> None:
        self._client = Client(address, namespace)
        # A first call, decoded in full: the container is there and running
        # (and the client knows which task API version the shim serves).
        request = task_pb2.StateRequest(id=containerID)
        response = self._client.call("State", request, task_pb2.StateResponse)
        envelope = self._client.encode("State", request)
        self._envelope = envelope
        self._length = len(envelope)
        if response.status != 2:
            raise AssertionError(f"{containerID} is not running: {response}")

    def close(self) -> None:
        self._client.close()

    def run(self, count: int, record: list[int] | None = None) -> None:
        """
        Make C{count} calls; append each round trip (ns) to C{record}.
        """
        connection = self._client._socket
        envelope = self._envelope
        pack = HEADER.pack
        length = self._length
        streamID = self._client._nextStreamID
        clock = time.perf_counter_ns
        for _ in range(count):
            started = clock()
            connection.sendall(pack(length, streamID, REQUEST, 0) + envelope)
            header = _receiveExactly(connection, HEADER_SIZE)
            size, answered, _, _ = HEADER.unpack(header)
            payload = _receiveExactly(connection, size)
            if record is not None:
                record.append(clock() - started)
            if answered != streamID:
                raise ConnectionError(f"answer to stream {answered}, not {streamID}")
            if payload[:1] == b"\x0a" and payload[1:2] != b"\x00":
                checkStatus("State", payload)
            streamID += 2
        self._client._nextStreamID = streamID

    def runUntil(self, deadline: float) -> int:
        """
        Call until the monotonic clock passes C{deadline}.

        @return: the number of calls answered.
        """
        count = 0
        while time.monotonic() < deadline:
            self.run(32)
            count += 32
        return count
