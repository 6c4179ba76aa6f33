# -*- test-case-name: tests.test_ttrpc -*-
"""
ttrpc framing: a 10-byte big-endian header (payload length, stream id, message
type, flags) before each protobuf payload.

L{FrameReceiver} cuts a byte stream into frames whatever its fragmentation,
and refuses a frame over the size limit without buffering it: it skips the
payload as it arrives and reports the frame once it is gone, so that the
stream stays in sync.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size
MAX_MESSAGE_SIZE = 4 << 20

REQUEST = 0x01
RESPONSE = 0x02


class Frame(NamedTuple):
    """
    One whole frame. (A named tuple: one is made for every message.)
    """

    streamID: int
    messageType: int
    flags: int
    payload: bytes


class OversizedFrame(NamedTuple):
    """
    A frame whose payload was over the limit and has been skipped.

    @ivar length: the length its header announced.
    """

    streamID: int
    messageType: int
    length: int


def encodeFrame(streamID: int, messageType: int, payload: bytes) -> bytes:
    """
    Encode one frame, header and payload, ready for a single write.
    """
    return HEADER.pack(len(payload), streamID, messageType, 0) + payload


def oversizeMessage(length: int) -> str:
    """
    The text the Go ttrpc peer uses for a message over the size limit.
    """
    return f"message length {length} exceed maximum message size of {MAX_MESSAGE_SIZE}"


class FrameReceiver:
    """
    An incremental frame parser.

    @ivar maxSize: the largest payload accepted; larger ones are skipped.
    """

    def __init__(self, maxSize: int = MAX_MESSAGE_SIZE) -> None:
        self.maxSize = maxSize
        self._buffer = bytearray()
        self._skipping: OversizedFrame | None = None
        self._skipLeft = 0

    def feed(self, data: bytes) -> Iterator[Frame | OversizedFrame]:
        """
        Take more bytes from the stream.

        @return: the frames (and skipped oversized frames) these bytes
            complete, in stream order.
        """
        view = memoryview(data)
        while view:
            if self._skipping is not None:
                taken = min(self._skipLeft, len(view))
                self._skipLeft -= taken
                view = view[taken:]
                if self._skipLeft == 0:
                    skipped, self._skipping = self._skipping, None
                    yield skipped
                continue
            self._buffer += view
            view = memoryview(b"")
            yield from self._cut()

    def _cut(self) -> Iterator[Frame | OversizedFrame]:
        """
        Cut whole frames off the front of the buffer.
        """
        while len(self._buffer) >= HEADER_SIZE:
            length, streamID, messageType, flags = HEADER.unpack_from(self._buffer)
            if length > self.maxSize:
                rest = bytes(self._buffer[HEADER_SIZE:])
                del self._buffer[:]
                self._skipping = OversizedFrame(streamID, messageType, length)
                self._skipLeft = length
                yield from self.feed(rest)
                return
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[HEADER_SIZE:end])
            del self._buffer[:end]
            yield Frame(streamID, messageType, flags, payload)
