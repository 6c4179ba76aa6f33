# -*- test-case-name: tests.test_wire -*-
"""
Just enough of the protobuf wire format, in the standard library alone, for
the launcher: it answers containerd's C{start} and C{delete} on the critical
path of every container, where importing the protobuf runtime would cost more
than the work itself.

The field numbers used with it come from our schemas in L{shimd.protos}; the
tests check every use against the generated classes.
"""

from __future__ import annotations

# collections.abc costs milliseconds to import (the collections package
# with it): mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


#: A decoded message: each field's values, in order, by field number.
Message = dict[int, list[int | bytes]]

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5

_MASK64 = (1 << 64) - 1


class WireError(ValueError):
    """
    The bytes are not a well-formed protobuf message.
    """


def encodeVarint(value: int) -> bytes:
    """
    Encode an integer as a varint; negative values take ten bytes, as int64
    and enum fields carry them.
    """
    value &= _MASK64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varintField(number: int, value: int) -> bytes:
    """
    A varint field, or nothing for the proto3 default of 0.
    """
    if not value:
        return b""
    return encodeVarint(number << 3 | VARINT) + encodeVarint(value)


def bytesField(number: int, value: bytes, always: bool = False) -> bytes:
    """
    A length-delimited field (string, bytes or message), or nothing when
    empty unless C{always}.
    """
    if not value and not always:
        return b""
    return (
        encodeVarint(number << 3 | LENGTH_DELIMITED) + encodeVarint(len(value)) + value
    )


def stringField(number: int, value: str) -> bytes:
    return bytesField(number, value.encode("utf-8"))


def timestamp(seconds: int, nanos: int) -> bytes:
    """
    The body of a C{google.protobuf.Timestamp}.
    """
    return varintField(1, seconds) + varintField(2, nanos)


def _readVarint(data: bytes, offset: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _MASK64, offset
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """
    Walk the fields of an encoded message.

    @return: C{(number, wire type, value)} for each field in order: an int
        for varint and fixed fields, the raw bytes for length-delimited ones.
    @raise WireError: when the bytes are malformed.
    """
    offset = 0
    while offset < len(data):
        key, offset = _readVarint(data, offset)
        number, wireType = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if wireType == VARINT:
            value, offset = _readVarint(data, offset)
        elif wireType == LENGTH_DELIMITED:
            length, offset = _readVarint(data, offset)
            if offset + length > len(data):
                raise WireError("truncated length-delimited field")
            value = data[offset : offset + length]
            offset += length
        elif wireType in (FIXED64, FIXED32):
            size = 8 if wireType == FIXED64 else 4
            if offset + size > len(data):
                raise WireError("truncated fixed field")
            value = int.from_bytes(data[offset : offset + size], "little")
            offset += size
        else:
            raise WireError(f"unsupported wire type {wireType}")
        yield number, wireType, value


def decode(data: bytes) -> Message:
    """
    Decode a message into its values by field number, repeated ones in order.
    """
    result: Message = {}
    for number, _, value in fields(data):
        result.setdefault(number, []).append(value)
    return result


def lastString(message: Message, number: int) -> str:
    """
    The last value of a string field, as proto3 reads it, or C{""}.
    """
    values = [v for v in message.get(number, []) if isinstance(v, bytes)]
    return values[-1].decode("utf-8", "replace") if values else ""


def lastBytes(message: Message, number: int) -> bytes:
    values = [v for v in message.get(number, []) if isinstance(v, bytes)]
    return values[-1] if values else b""


def lastInt(message: Message, number: int) -> int:
    values = [v for v in message.get(number, []) if isinstance(v, int)]
    return values[-1] if values else 0


def signed(value: int, bits: int = 64) -> int:
    """
    Read an unsigned varint value as the two's-complement signed integer an
    int32, int64 or enum field holds.
    """
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if bits == 32:
        value = (value + (1 << 31)) % (1 << 32) - (1 << 31)
    return value
