# -*- test-case-name: tests.test_wire -*-
"""
Tests for L{shimd.wire}, the launcher's standard-library protobuf codec.

Every encoding is checked against the protobuf runtime and the generated
classes in L{shimd.protos}: the launcher must write exactly what they would,
and read whatever they write.
"""

from __future__ import annotations

import struct

from google.protobuf import any_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.message import DecodeError
from twisted.trial.unittest import SynchronousTestCase

from shimd import wire
from shimd.protos import bootstrap_pb2, cgroups_v1_pb2, runc_options_pb2, task_pb2

# Go's zero time.Time (0001-01-01T00:00:00Z) in Unix seconds.
GO_ZERO_TIME = -62135596800


def _allBytes(values: list[int | bytes]) -> list[bytes]:
    """
    The values of a length-delimited field, checked to be bytes.
    """
    result = [value for value in values if isinstance(value, bytes)]
    assert len(result) == len(values), values
    return result


class EncodeVarintTests(SynchronousTestCase):
    """
    L{wire.encodeVarint} writes base-128 varints, negative values in ten bytes.
    """

    def test_small(self) -> None:
        """
        Values below 128 take one byte.
        """
        self.assertEqual(wire.encodeVarint(0), b"\x00")
        self.assertEqual(wire.encodeVarint(1), b"\x01")
        self.assertEqual(wire.encodeVarint(127), b"\x7f")

    def test_multiByte(self) -> None:
        """
        Larger values take seven bits a byte, least significant group first.
        """
        self.assertEqual(wire.encodeVarint(128), b"\x80\x01")
        self.assertEqual(wire.encodeVarint(300), b"\xac\x02")
        self.assertEqual(wire.encodeVarint(2**32 - 1), b"\xff\xff\xff\xff\x0f")

    def test_negative(self) -> None:
        """
        A negative value is encoded as its 64-bit two's complement: ten bytes.
        """
        self.assertEqual(wire.encodeVarint(-1), b"\xff" * 9 + b"\x01")
        encoded = wire.encodeVarint(GO_ZERO_TIME)
        self.assertEqual(len(encoded), 10)
        self.assertEqual(
            b"\x08" + encoded,
            timestamp_pb2.Timestamp(seconds=GO_ZERO_TIME).SerializeToString(),
        )

    def test_matchesProtobuf(self) -> None:
        """
        For every value, the encoding is what protobuf writes for an int64.
        """
        for value in (1, 127, 128, 300, 2**32 - 1, 2**63 - 1, -1, GO_ZERO_TIME):
            self.assertEqual(
                b"\x08" + wire.encodeVarint(value),
                timestamp_pb2.Timestamp(seconds=value).SerializeToString(),
                value,
            )


class FieldTests(SynchronousTestCase):
    """
    L{wire.varintField}, L{wire.bytesField}, L{wire.stringField} and
    L{wire.timestamp} write fields as proto3 does, leaving out defaults.
    """

    def test_defaultsOmitted(self) -> None:
        """
        Zero, empty bytes and the empty string are written as nothing.
        """
        self.assertEqual(wire.varintField(1, 0), b"")
        self.assertEqual(wire.bytesField(2, b""), b"")
        self.assertEqual(wire.stringField(3, ""), b"")
        self.assertEqual(wire.timestamp(0, 0), b"")

    def test_bytesFieldAlways(self) -> None:
        """
        With C{always}, an empty length-delimited field is written: a message
        field that is set but holds only defaults.
        """
        self.assertEqual(wire.bytesField(3, b"", always=True), b"\x1a\x00")
        response = task_pb2.DeleteResponse()
        response.exited_at.SetInParent()
        self.assertEqual(
            response.SerializeToString(), wire.bytesField(3, b"", always=True)
        )

    def test_varintField(self) -> None:
        """
        A varint field is its key then its value; uint32 -1 is 2**32 - 1.
        """
        self.assertEqual(wire.varintField(2, 137), b"\x10\x89\x01")
        self.assertEqual(
            wire.varintField(1, 2**32 - 1),
            task_pb2.DeleteResponse(pid=2**32 - 1).SerializeToString(),
        )

    def test_stringField(self) -> None:
        """
        A string field holds UTF-8.
        """
        self.assertEqual(
            wire.stringField(3, "/shim/é"),
            runc_options_pb2.Options(shim_cgroup="/shim/é").SerializeToString(),
        )

    def test_timestamp(self) -> None:
        """
        L{wire.timestamp} is the body of a C{google.protobuf.Timestamp}.
        """
        for seconds, nanos in ((1795906536, 296453174), (5, 0), (0, 7)):
            self.assertEqual(
                wire.timestamp(seconds, nanos),
                timestamp_pb2.Timestamp(
                    seconds=seconds, nanos=nanos
                ).SerializeToString(),
            )
        self.assertEqual(
            wire.timestamp(GO_ZERO_TIME, 0),
            timestamp_pb2.Timestamp(seconds=GO_ZERO_TIME).SerializeToString(),
        )

    def test_deleteResponse(self) -> None:
        """
        The fields the launcher writes for C{delete} make the same bytes as a
        generated C{DeleteResponse}.
        """
        expected = task_pb2.DeleteResponse(
            pid=14492,
            exit_status=137,
            exited_at=timestamp_pb2.Timestamp(seconds=1795906536, nanos=1),
        ).SerializeToString()
        self.assertEqual(
            wire.varintField(1, 14492)
            + wire.varintField(2, 137)
            + wire.bytesField(3, wire.timestamp(1795906536, 1), always=True),
            expected,
        )

    def test_any(self) -> None:
        """
        An C{Any} is a string type URL and a bytes value.
        """
        value = runc_options_pb2.Options(root="/run/r").SerializeToString()
        self.assertEqual(
            wire.stringField(1, "containerd.runc.v1.Options")
            + wire.bytesField(2, value),
            any_pb2.Any(
                type_url="containerd.runc.v1.Options", value=value
            ).SerializeToString(),
        )


class DecodeTests(SynchronousTestCase):
    """
    L{wire.fields} and L{wire.decode} read what protobuf writes.
    """

    def test_fields(self) -> None:
        """
        L{wire.fields} gives each field's number, wire type and value, in order.
        """
        encoded = task_pb2.DeleteResponse(
            pid=1234,
            exit_status=137,
            exited_at=timestamp_pb2.Timestamp(seconds=10, nanos=20),
        ).SerializeToString()
        self.assertEqual(
            list(wire.fields(encoded)),
            [
                (1, wire.VARINT, 1234),
                (2, wire.VARINT, 137),
                (3, wire.LENGTH_DELIMITED, b"\x08\x0a\x10\x14"),
            ],
        )

    def test_empty(self) -> None:
        """
        No bytes are an empty message.
        """
        self.assertEqual(list(wire.fields(b"")), [])
        self.assertEqual(wire.decode(b""), {})

    def test_decodeRoundTrip(self) -> None:
        """
        L{wire.decode} gives every field of a generated message by number.
        """
        options = runc_options_pb2.Options(
            no_pivot_root=True,
            shim_cgroup="/shim",
            io_uid=1000,
            binary_name="/usr/sbin/runc",
            root="/run/containerd/runc-x",
            systemd_cgroup=True,
        )
        decoded = wire.decode(options.SerializeToString())
        self.assertEqual(
            decoded,
            {
                1: [1],
                3: [b"/shim"],
                4: [1000],
                6: [b"/usr/sbin/runc"],
                7: [b"/run/containerd/runc-x"],
                9: [1],
            },
        )
        self.assertEqual(wire.lastString(decoded, 6), "/usr/sbin/runc")
        self.assertEqual(wire.lastInt(decoded, 4), 1000)
        self.assertEqual(wire.lastBytes(decoded, 7), b"/run/containerd/runc-x")

    def test_lastWins(self) -> None:
        """
        A field given twice reads as its last value, as protobuf merges it.
        """
        first = runc_options_pb2.Options(shim_cgroup="/a", io_uid=1)
        second = runc_options_pb2.Options(shim_cgroup="/b", io_uid=2)
        encoded = first.SerializeToString() + second.SerializeToString()
        merged = runc_options_pb2.Options.FromString(encoded)
        decoded = wire.decode(encoded)
        self.assertEqual(decoded[3], [b"/a", b"/b"])
        self.assertEqual(wire.lastString(decoded, 3), merged.shim_cgroup)
        self.assertEqual(wire.lastInt(decoded, 4), merged.io_uid)

    def test_lastMissing(self) -> None:
        """
        A missing field reads as its default; a value of the wrong wire type
        is not taken for it.
        """
        decoded = wire.decode(wire.varintField(1, 5))
        self.assertEqual(wire.lastString(decoded, 2), "")
        self.assertEqual(wire.lastBytes(decoded, 2), b"")
        self.assertEqual(wire.lastInt(decoded, 2), 0)
        self.assertEqual(wire.lastString(decoded, 1), "")
        self.assertEqual(wire.lastInt(wire.decode(wire.stringField(1, "x")), 1), 0)

    def test_repeatedMessages(self) -> None:
        """
        A repeated message field reads as its values in order.
        """
        extensions = [
            bootstrap_pb2.Extension(
                value=any_pb2.Any(type_url=f"example/{index}", value=b"v")
            )
            for index in range(3)
        ]
        params = bootstrap_pb2.BootstrapParams(
            instance_id="c1", namespace="default", extensions=extensions
        )
        decoded = wire.decode(params.SerializeToString())
        self.assertEqual(wire.lastString(decoded, 1), "c1")
        self.assertEqual(wire.lastString(decoded, 2), "default")
        self.assertEqual(
            [bootstrap_pb2.Extension.FromString(v) for v in _allBytes(decoded[8])],
            extensions,
        )

    def test_repeatedStrings(self) -> None:
        """
        A repeated string field reads as its values in order.
        """
        checkpoint = runc_options_pb2.CheckpointOptions(
            exit=True, empty_namespaces=["network", "uts", "ipc"]
        )
        decoded = wire.decode(checkpoint.SerializeToString())
        self.assertEqual(decoded[1], [1])
        self.assertEqual(decoded[6], [b"network", b"uts", b"ipc"])

    def test_packed(self) -> None:
        """
        A packed repeated scalar (proto3's default) is one length-delimited
        field holding the varints.
        """
        values = [0, 1, 300, 2**40]
        usage = cgroups_v1_pb2.CPUUsage(total=5, per_cpu=values)
        decoded = wire.decode(usage.SerializeToString())
        self.assertEqual(decoded[1], [5])
        self.assertEqual(
            decoded[4], [b"".join(wire.encodeVarint(value) for value in values)]
        )

    def test_nested(self) -> None:
        """
        A nested message reads as bytes that decode in turn.
        """
        metrics = cgroups_v1_pb2.Metrics(
            pids=cgroups_v1_pb2.PidsStat(current=3, limit=10),
            hugetlb=[
                cgroups_v1_pb2.HugetlbStat(usage=1, pagesize="2MB"),
                cgroups_v1_pb2.HugetlbStat(usage=2, pagesize="1GB"),
            ],
        )
        decoded = wire.decode(metrics.SerializeToString())
        self.assertEqual(wire.decode(wire.lastBytes(decoded, 2)), {1: [3], 2: [10]})
        self.assertEqual(
            [wire.lastString(wire.decode(v), 4) for v in _allBytes(decoded[1])],
            ["2MB", "1GB"],
        )

    def test_fixed(self) -> None:
        """
        Fixed 64- and 32-bit fields read as little-endian unsigned integers.
        """
        double = wrappers_pb2.DoubleValue(value=-1.5).SerializeToString()
        self.assertEqual(
            list(wire.fields(double)),
            [(1, wire.FIXED64, struct.unpack("<Q", struct.pack("<d", -1.5))[0])],
        )
        single = wrappers_pb2.FloatValue(value=0.25).SerializeToString()
        self.assertEqual(
            list(wire.fields(single)),
            [(1, wire.FIXED32, struct.unpack("<I", struct.pack("<f", 0.25))[0])],
        )

    def test_fixedHandBuilt(self) -> None:
        """
        Fixed fields between other fields leave the reader in step.
        """
        encoded = (
            bytes([1 << 3 | wire.FIXED64])
            + struct.pack("<Q", 2**64 - 1)
            + bytes([2 << 3 | wire.FIXED32])
            + struct.pack("<I", 0xDEADBEEF)
            + wire.stringField(3, "after")
            + wire.varintField(4, 300)
        )
        self.assertEqual(
            wire.decode(encoded),
            {1: [2**64 - 1], 2: [0xDEADBEEF], 3: [b"after"], 4: [300]},
        )

    def test_largeFieldNumber(self) -> None:
        """
        Field numbers that take a multi-byte key are read.
        """
        encoded = wire.varintField(2**29 - 1, 7) + wire.stringField(16, "x")
        self.assertEqual(wire.decode(encoded), {2**29 - 1: [7], 16: [b"x"]})


class MalformedTests(SynchronousTestCase):
    """
    Malformed input raises L{wire.WireError}, as the protobuf runtime refuses
    it too.
    """

    cases = {
        "truncated key varint": b"\x80",
        "truncated value varint": b"\x08\x80",
        "overlong varint": b"\x08" + b"\x80" * 10 + b"\x01",
        "truncated length": b"\x12\x80",
        "truncated length-delimited": b"\x12\x05abc",
        "truncated fixed64": b"\x09" + b"\x00" * 7,
        "truncated fixed32": b"\x0d" + b"\x00" * 3,
        "wire type 3 (start group)": b"\x0b",
        "wire type 4 (end group)": b"\x0c",
        "wire type 6": b"\x0e",
        "wire type 7": b"\x0f",
        "field number 0 (varint)": b"\x00\x01",
        "field number 0 (length-delimited)": b"\x02\x00",
    }

    def test_malformed(self) -> None:
        """
        Every malformed case raises L{wire.WireError} from L{wire.decode} and
        from L{wire.fields}.
        """
        for name, data in self.cases.items():
            with self.assertRaises(wire.WireError, msg=name):
                wire.decode(data)
            with self.assertRaises(wire.WireError, msg=name):
                list(wire.fields(data))

    def test_protobufAgrees(self) -> None:
        """
        The protobuf runtime refuses every malformed case too.
        """
        for name, data in self.cases.items():
            with self.assertRaises(DecodeError, msg=name):
                wrappers_pb2.BytesValue.FromString(data)

    def test_afterGoodFields(self) -> None:
        """
        Fields before the malformed part are yielded before the error.
        """
        walked = wire.fields(wire.varintField(1, 5) + b"\x12\x05abc")
        self.assertEqual(next(walked), (1, wire.VARINT, 5))
        self.assertRaises(wire.WireError, next, walked)

    def test_isValueError(self) -> None:
        """
        L{wire.WireError} is a L{ValueError}.
        """
        self.assertTrue(issubclass(wire.WireError, ValueError))


class SignedTests(SynchronousTestCase):
    """
    L{wire.signed} reads an unsigned varint value as int64 or int32.
    """

    def test_int64(self) -> None:
        """
        Values from 2**63 up are negative.
        """
        self.assertEqual(wire.signed(0), 0)
        self.assertEqual(wire.signed(5), 5)
        self.assertEqual(wire.signed(2**63 - 1), 2**63 - 1)
        self.assertEqual(wire.signed(2**63), -(2**63))
        self.assertEqual(wire.signed(2**64 - 1), -1)

    def test_int32(self) -> None:
        """
        With 32 bits, the low 32 bits are read as two's complement, whether
        the value was sign-extended to 64 bits or not.
        """
        self.assertEqual(wire.signed(2**31 - 1, 32), 2**31 - 1)
        self.assertEqual(wire.signed(2**31, 32), -(2**31))
        self.assertEqual(wire.signed(2**32 - 1, 32), -1)
        self.assertEqual(wire.signed(2**64 - 1, 32), -1)
        self.assertEqual(wire.signed(2**64 - 8, 32), -8)

    def test_timestampSeconds(self) -> None:
        """
        A negative int64 written by protobuf reads back.
        """
        encoded = timestamp_pb2.Timestamp(seconds=GO_ZERO_TIME).SerializeToString()
        self.assertEqual(
            wire.signed(wire.lastInt(wire.decode(encoded), 1)), GO_ZERO_TIME
        )

    def test_enum(self) -> None:
        """
        A negative enum (an int32 on the wire, sign-extended to ten bytes)
        reads back with 32 bits.
        """
        params = bootstrap_pb2.BootstrapParams(log_level=bootstrap_pb2.LOG_LEVEL_TRACE)
        encoded = params.SerializeToString()
        self.assertEqual(len(encoded), 11)
        value = wire.lastInt(wire.decode(encoded), 3)
        self.assertEqual(wire.signed(value, 32), bootstrap_pb2.LOG_LEVEL_TRACE)
        self.assertEqual(wire.signed(value, 32), -8)
