"""
Malformed ttrpc input for a live shim, and what it must answer.

L{buildCase} makes the bytes of one test case (one to four frames, most of
them broken in some way: truncated headers, wrong and huge lengths, unknown
message types and flags, garbage in the C{Request} envelope and in method
payloads, unknown services and methods, invalid ids in every Task method)
from a L{Source} of choices, so that hypothesis and atheris drive the same
generator.

L{expect} works out, from the ttrpc specification alone (not from shimd's
code), what a server must do with those bytes: which stream ids get an
answer and with which status, and whether the bytes end inside a frame.
L{exercise} sends a case on a new connection and checks the answers: every
answer is a well-formed C{Response} the specification allows; a case that
ends on a frame boundary is followed by a good C{State} call that must be
answered, proving the connection is still in step; one that ends inside a
frame is followed by a half-close, and the shim must close the connection.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, EncodeError, Message

from shimd.protos import task_pb2, ttrpc_pb2
from shimd.ttrpc.framing import FrameReceiver, OversizedFrame
from shimd.ttrpc.status import Code
from tests.stress.client import (
    REQUEST_TYPES,
    RESPONSE_TYPES,
    TASK_METHODS,
    TASK_SERVICE_NAME,
    requestFrame,
)

HEADER = struct.Struct(">IIBB")
# The names the task service is served under: task API v2, and v3 (the same
# methods and messages under containerd 2.x's package name).
TASK_SERVICE_NAMES = (TASK_SERVICE_NAME, "containerd.task.v3.Task")
MAX_MESSAGE_SIZE = 4 << 20
IDENTIFIER = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")

# Ids that try to escape a path, or are not ids at all.
BAD_IDS = (
    "",
    "../x",
    "../../../../tmp/escape",
    "/abs",
    ".",
    "..",
    "a/b",
    "x\0y",
    "\0",
    "ü",
    "名前",
    "a" * 77,
    "a" * 5000,
    " ",
    "-leading",
    "trailing-",
    "a..b",
    "\n",
)

HANDLER = "handler"


class Source(Protocol):
    """
    Where a case's choices come from: hypothesis's C{data.draw}, or an
    atheris C{FuzzedDataProvider}.
    """

    def integer(self, low: int, high: int) -> int: ...

    def binary(self, maxSize: int) -> bytes: ...

    def text(self, maxSize: int) -> str: ...


class HypothesisSource:
    """
    Choices drawn by hypothesis (from C{st.data()}), so that it can shrink
    a failing case.
    """

    def __init__(self, data: Any) -> None:
        from hypothesis import strategies

        self._data = data
        self._strategies = strategies

    def integer(self, low: int, high: int) -> int:
        value: int = self._data.draw(self._strategies.integers(low, high))
        return value

    def binary(self, maxSize: int) -> bytes:
        value: bytes = self._data.draw(self._strategies.binary(max_size=maxSize))
        return value

    def text(self, maxSize: int) -> str:
        value: str = self._data.draw(self._strategies.text(max_size=maxSize))
        return value


class ProviderSource:
    """
    Choices taken from an atheris C{FuzzedDataProvider}.
    """

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def integer(self, low: int, high: int) -> int:
        value: int = self._provider.ConsumeIntInRange(low, high)
        return value

    def binary(self, maxSize: int) -> bytes:
        size = self._provider.ConsumeIntInRange(0, maxSize)
        value: bytes = self._provider.ConsumeBytes(size)
        return value

    def text(self, maxSize: int) -> str:
        size = self._provider.ConsumeIntInRange(0, maxSize)
        value: str = self._provider.ConsumeUnicodeNoSurrogates(size)
        return value


def choose(source: Source, options: Sequence[Any]) -> Any:
    """
    One of C{options}.
    """
    return options[source.integer(0, len(options) - 1)]


def anyID(source: Source) -> str:
    """
    An id: mostly a bad one, sometimes arbitrary text or a valid-looking id.
    """
    kind = source.integer(0, 3)
    if kind <= 1:
        return str(choose(source, BAD_IDS))
    if kind == 2:
        return source.text(40)
    return "fz" + str(source.integer(0, 1 << 30))


def taskRequest(source: Source, method: str) -> Message:
    """
    A well-formed request for a Task method, its string fields filled with
    ids (mostly invalid ones), its numbers with arbitrary values.
    """
    message = REQUEST_TYPES[method]()
    for descriptor in message.DESCRIPTOR.fields:
        if descriptor.is_repeated:
            continue
        if source.integer(0, 3) == 0:
            continue
        kind = descriptor.type
        if kind == FieldDescriptor.TYPE_STRING:
            setattr(message, descriptor.name, anyID(source))
        elif kind == FieldDescriptor.TYPE_BOOL:
            setattr(message, descriptor.name, bool(source.integer(0, 1)))
        elif kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            setattr(message, descriptor.name, source.integer(0, 0xFFFFFFFF))
        elif kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
            setattr(message, descriptor.name, source.integer(-(1 << 31), (1 << 31) - 1))
        elif kind == FieldDescriptor.TYPE_UINT64:
            setattr(message, descriptor.name, source.integer(0, (1 << 64) - 1))
        elif kind == FieldDescriptor.TYPE_INT64:
            setattr(message, descriptor.name, source.integer(-(1 << 63), (1 << 63) - 1))
    return message


def header(length: int, streamID: int, messageType: int, flags: int) -> bytes:
    """
    A frame header, whatever its fields.
    """
    return HEADER.pack(length, streamID, messageType, flags)


def envelope(
    source: Source, service: str, method: str, payload: bytes, extras: bool
) -> bytes:
    """
    A C{Request} envelope; with C{extras}, arbitrary deadlines and metadata.
    """
    request = ttrpc_pb2.Request(service=service, method=method, payload=payload)
    if extras:
        request.timeout_nano = choose(
            source, [-1, 1, 1000, (1 << 63) - 1, -(1 << 63), 5_000_000_000]
        )
        for _ in range(source.integer(0, 3)):
            request.metadata.add(key=source.text(20), value=source.text(40))
    return request.SerializeToString()


def _oddStream(source: Source) -> int:
    return source.integer(0, 0x7FFFFFFF) * 2 + 1


def _anyStream(source: Source) -> int:
    return source.integer(0, 0xFFFFFFFF)


def oneFrame(source: Source, last: bool) -> bytes:
    """
    One frame (or what should have been one), broken in one of many ways.

    @param last: whether it ends the case; only the last frame may be cut
        short or claim more than is sent.
    """
    kind = source.integer(0, 10 if last else 7)
    method = str(choose(source, sorted(TASK_METHODS)))
    if kind <= 2:
        # A well-formed call with invalid ids, possibly odd deadlines.
        payload = envelope(
            source,
            TASK_SERVICE_NAME,
            method,
            taskRequest(source, method).SerializeToString(),
            extras=kind == 2,
        )
        return header(len(payload), _oddStream(source), 1, 0) + payload
    if kind == 3:
        # Garbage in the method's payload.
        payload = envelope(
            source, TASK_SERVICE_NAME, method, source.binary(200), extras=False
        )
        return header(len(payload), _oddStream(source), 1, 0) + payload
    if kind == 4:
        # Garbage for the envelope.
        payload = source.binary(300)
        return header(len(payload), _anyStream(source), 1, 0) + payload
    if kind == 5:
        # Unknown services and methods.
        service = choose(
            source, [source.text(30), *TASK_SERVICE_NAMES, "containerd.task.v1.Task"]
        )
        name = choose(source, [source.text(20), method, method.lower(), ""])
        payload = envelope(source, service, name, source.binary(50), extras=False)
        return header(len(payload), _anyStream(source), 1, 0) + payload
    if kind == 6:
        # Any message type and flags, any stream id.
        payload = source.binary(200)
        return (
            header(
                len(payload),
                _anyStream(source),
                source.integer(0, 255),
                source.integer(0, 255),
            )
            + payload
        )
    if kind == 7:
        # A length that is not the payload's.
        payload = source.binary(100)
        length = max(0, len(payload) + source.integer(-len(payload), 300))
        return header(length, _anyStream(source), 1, 0) + payload
    if kind == 8:
        # A huge length: over the limit, up to 4 GiB.
        length = source.integer(MAX_MESSAGE_SIZE + 1, 0xFFFFFFFF)
        return header(length, _anyStream(source), 1, 0) + source.binary(50)
    if kind == 9:
        # A truncated header.
        full = header(source.integer(0, 1000), _anyStream(source), 1, 0)
        return full[: source.integer(1, 9)]
    # A good frame cut short.
    payload = envelope(
        source,
        TASK_SERVICE_NAME,
        method,
        taskRequest(source, method).SerializeToString(),
        extras=False,
    )
    frame = header(len(payload), _oddStream(source), 1, 0) + payload
    return frame[: source.integer(1, len(frame) - 1)]


def buildCase(source: Source) -> tuple[bytes, int]:
    """
    The bytes of one case: one to four frames, one after the other.

    @return: the bytes, and how many frames they were built from.
    """
    count = source.integer(1, 4)
    frames = [oneFrame(source, last=index == count - 1) for index in range(count)]
    return b"".join(frames), count


@dataclass
class Expectation:
    """
    What a server must do with some bytes.

    @ivar answers: per stream id, the answers due, in order: a status code,
        or L{HANDLER} with the method's name (the call reached a handler,
        whose answer may be anything well-formed).
    @ivar complete: whether the bytes end on a frame boundary.
    @ivar calls: the handler calls made, as C{(method, request)}.
    """

    answers: dict[int, list[tuple[str, Any]]] = field(default_factory=dict)
    complete: bool = True
    calls: list[tuple[str, Message]] = field(default_factory=list)

    def due(self, streamID: int, outcome: tuple[str, Any]) -> None:
        self.answers.setdefault(streamID, []).append(outcome)

    def pending(self) -> int:
        return sum(len(due) for due in self.answers.values())


def classify(payload: bytes) -> tuple[tuple[str, Any], Message | None]:
    """
    What the specification says about a request frame's payload (with an
    odd stream id): C{INVALID_ARGUMENT} when the envelope does not decode,
    C{UNIMPLEMENTED} for an unknown service or method, C{INTERNAL} when the
    method's payload does not decode; otherwise it reaches the handler.
    """
    request = ttrpc_pb2.Request()
    try:
        request.ParseFromString(payload)
    except DecodeError:
        return ("code", Code.INVALID_ARGUMENT), None
    if request.service not in TASK_SERVICE_NAMES or request.method not in TASK_METHODS:
        return ("code", Code.UNIMPLEMENTED), None
    message = REQUEST_TYPES[request.method]()
    try:
        message.ParseFromString(request.payload)
    except DecodeError:
        return ("code", Code.INTERNAL), None
    return (HANDLER, request.method), message


def expect(data: bytes) -> Expectation:
    """
    Parse C{data} as the specification frames it (ttrpc.md §2-§5).
    """
    expectation = Expectation()
    position = 0
    while True:
        left = len(data) - position
        if left < HEADER.size:
            expectation.complete = left == 0
            return expectation
        length, streamID, messageType, _ = HEADER.unpack_from(data, position)
        position += HEADER.size
        if len(data) - position < length:
            expectation.complete = False
            return expectation
        payload = data[position : position + length]
        position += length
        if length > MAX_MESSAGE_SIZE:
            expectation.due(streamID, ("code", Code.RESOURCE_EXHAUSTED))
        elif messageType != 1:
            continue
        elif streamID % 2 == 0:
            expectation.due(streamID, ("code", Code.INVALID_ARGUMENT))
        else:
            outcome, message = classify(payload)
            expectation.due(streamID, outcome)
            if message is not None:
                assert isinstance(outcome[1], str)
                expectation.calls.append((outcome[1], message))


def unsafe(calls: list[tuple[str, Message]], protected: set[str]) -> str | None:
    """
    Why a case must not be sent to a shim whose containers it could harm,
    or L{None}: a call naming a protected container, a C{Create} whose
    bundle exists (it would write there) or, with a valid id, is relative
    (it could resolve under the shim's working directory, a real bundle),
    or a C{Shutdown} with nothing to protect (it would end the shim).
    """
    for method, message in calls:
        if getattr(message, "id", None) in protected:
            return f"{method} names a protected container"
        if isinstance(message, task_pb2.CreateTaskRequest):
            bundle = message.bundle
            if os.path.isabs(bundle) and os.path.lexists(bundle):
                return "Create with an existing bundle"
            if IDENTIFIER.match(message.id) and not os.path.isabs(bundle):
                return "Create of a valid id with a relative bundle"
        if method == "Shutdown" and not protected:
            return "Shutdown of a shim with nothing to protect"
    return None


class Violation(AssertionError):
    """
    The shim answered in a way the specification does not allow.
    """


def _matches(outcome: tuple[str, Any], code: int, payload: bytes) -> bool:
    kind, value = outcome
    if kind == "code":
        return bool(code == value)
    if code != Code.OK:
        return True
    try:
        RESPONSE_TYPES[value]().ParseFromString(payload)
    except DecodeError:
        return False
    return True


@dataclass
class Probe:
    """
    A good call that follows a case, to show the connection is in step.

    @ivar method: its Task method.
    @ivar request: its request.
    @ivar check: what its (successful) response must satisfy.
    """

    method: str
    request: Message
    check: Callable[[Message], bool]


def exercise(
    path: str, data: bytes, probe: Probe, timeout: float = 30.0
) -> Expectation:
    """
    Send C{data} on a new connection to the shim at C{path} and check its
    answers against L{expect}.

    @raise Violation: for an answer the specification does not allow, a
        missing answer, or a connection out of step.
    """
    expectation = expect(data)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(timeout)
    try:
        connection.connect(path)
        probeStream = 0x7FFFFFFF
        while probeStream in expectation.answers:
            probeStream -= 2
        connection.sendall(data)
        if expectation.complete:
            connection.sendall(requestFrame(probeStream, probe.method, probe.request))
        else:
            connection.shutdown(socket.SHUT_WR)
        _check(connection, expectation, probe, probeStream)
    except TimeoutError as e:
        raise Violation(f"no answer in {timeout} s: {e}; {expectation}") from e
    except ConnectionResetError:
        if expectation.complete:
            raise
    finally:
        connection.close()
    return expectation


def _check(
    connection: socket.socket, expectation: Expectation, probe: Probe, probeStream: int
) -> None:
    receiver = FrameReceiver()
    probed = False
    while True:
        if expectation.complete and probed and not expectation.pending():
            return
        chunk = connection.recv(1 << 16)
        if not chunk:
            if expectation.complete:
                raise Violation(
                    f"connection closed; probed={probed}, still due "
                    f"{expectation.answers}"
                )
            return
        for frame in receiver.feed(chunk):
            if isinstance(frame, OversizedFrame) or frame.messageType != 2:
                raise Violation(f"not a response frame: {frame!r}")
            response = ttrpc_pb2.Response()
            try:
                response.ParseFromString(frame.payload)
            except DecodeError as e:
                raise Violation(f"undecodable Response {frame.payload!r}") from e
            code = response.status.code if response.HasField("status") else 0
            if frame.streamID == probeStream and not probed:
                if code != Code.OK:
                    raise Violation(f"probe failed: {response.status}")
                message = RESPONSE_TYPES[probe.method]()
                message.ParseFromString(response.payload)
                if not probe.check(message):
                    raise Violation(f"probe answered wrongly: {message}")
                probed = True
                continue
            due = expectation.answers.get(frame.streamID, [])
            for index, outcome in enumerate(due):
                if _matches(outcome, code, response.payload):
                    del due[index]
                    break
            else:
                raise Violation(
                    f"unexpected answer on stream {frame.streamID}: code {code} "
                    f"{response.status.message!r}; due {due}"
                )


def safeToSend(data: bytes, protected: set[str]) -> bool:
    """
    Whether a case may be sent (see L{unsafe}); cases whose envelope cannot
    even be encoded never get here.
    """
    return unsafe(expect(data).calls, protected) is None


def encodable(build: Callable[[], tuple[bytes, int]]) -> tuple[bytes, int] | None:
    """
    Build a case, or L{None} when protobuf refuses to encode what was drawn.
    """
    try:
        return build()
    except (EncodeError, ValueError):
        return None
