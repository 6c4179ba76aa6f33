# -*- test-case-name: tests.test_bootstrap -*-
"""
Tests for L{shimd.shim.bootstrap}: the two forms of C{start}'s stdin (containerd
2.3's C{BootstrapParams}, and the bare options C{Any} of 1.6 to 2.2) and the
C{-info} answer, checked against byte vectors built by hand from the field
tables of containerd-2.md and against our generated classes.
"""

from __future__ import annotations

import os
import subprocess
import sys

from google.protobuf import any_pb2
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from shimd import RUNTIME_NAME, __version__, wire
from shimd.protos import bootstrap_pb2, introspection_pb2, runc_options_pb2
from shimd.shim import bootstrap


def field(number: int, payload: bytes) -> bytes:
    """
    A hand-encoded length-delimited field (short payloads only).
    """
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


OPTIONS = runc_options_pb2.Options(
    binary_name="/usr/sbin/runc", root="/run/containerd/runc-x", shim_cgroup="/shims"
)
OPTIONS_ANY = any_pb2.Any(
    type_url="containerd.runc.v1.Options", value=OPTIONS.SerializeToString()
).SerializeToString()

# BootstrapParams, by hand: instance_id=1 "c1", namespace=2 "ns", log_level=3
# DEBUG (-4, a ten-byte varint), containerd_ttrpc_address=5, _grpc_address=6,
# extensions=8 {value=1: the options Any}, socket_dir=9.
DEBUG_VARINT = bytes.fromhex("fcffffffffffffffff01")
PARAMS = (
    field(1, b"c1")
    + field(2, b"ns")
    + b"\x18"
    + DEBUG_VARINT
    + field(5, b"/run/c.sock.ttrpc")
    + field(6, b"/run/c.sock")
    + field(8, field(1, OPTIONS_ANY))
    + field(9, b"/run/sockets")
)


class VectorTests(SynchronousTestCase):
    """
    The hand-built vectors are what our schemas encode.
    """

    def test_paramsVector(self) -> None:
        params = bootstrap_pb2.BootstrapParams(
            instance_id="c1",
            namespace="ns",
            log_level=bootstrap_pb2.LOG_LEVEL_DEBUG,
            containerd_ttrpc_address="/run/c.sock.ttrpc",
            containerd_grpc_address="/run/c.sock",
            extensions=[
                bootstrap_pb2.Extension(value=any_pb2.Any.FromString(OPTIONS_ANY))
            ],
            socket_dir="/run/sockets",
        )
        self.assertEqual(params.SerializeToString(), PARAMS)

    def test_legacyAnyAlsoDecodesAsParams(self) -> None:
        """
        Both forms share field numbers: the legacy C{Any} decodes as
        C{BootstrapParams} too (which is why identity is checked).
        """
        params = bootstrap_pb2.BootstrapParams()
        params.ParseFromString(
            any_pb2.Any(type_url="containerd.runc.v1.Options").SerializeToString()
        )
        self.assertEqual(params.instance_id, "containerd.runc.v1.Options")


class StartInputTests(SynchronousTestCase):
    """
    L{bootstrap.parseStartInput} takes each setting from whichever form
    arrived, and from the flags and environment when stdin is empty.
    """

    def parse(self, stdin: bytes) -> bootstrap.StartInput:
        return bootstrap.parseStartInput(
            stdin,
            "c1",
            "ns",
            "/flag/c.sock",
            False,
            {"TTRPC_ADDRESS": "/env/c.sock.ttrpc"},
            "/run/containerd/s",
        )

    def test_bootstrap(self) -> None:
        given = self.parse(PARAMS)
        self.assertTrue(given.bootstrap)
        self.assertEqual(given.namespace, "ns")
        self.assertEqual(given.address, "/run/c.sock")
        self.assertEqual(given.ttrpcAddress, "/run/c.sock.ttrpc")
        self.assertTrue(given.debug)
        self.assertEqual(given.socketDir, "/run/sockets")
        self.assertEqual(wire.lastString(given.options, 3), "/shims")
        self.assertEqual(wire.lastString(given.options, 6), "/usr/sbin/runc")

    def test_bootstrapDefaults(self) -> None:
        """
        Fields the params leave out come from the flags and environment; an
        absent C{socket_dir} keeps the default directory; INFO is not debug.
        """
        given = self.parse(field(1, b"c1") + field(2, b"ns"))
        self.assertTrue(given.bootstrap)
        self.assertEqual(given.address, "/flag/c.sock")
        self.assertEqual(given.ttrpcAddress, "/env/c.sock.ttrpc")
        self.assertFalse(given.debug)
        self.assertEqual(given.socketDir, "/run/containerd/s")
        self.assertEqual(given.options, {})

    def test_trace(self) -> None:
        trace = bootstrap_pb2.BootstrapParams(
            instance_id="c1", namespace="ns", log_level=bootstrap_pb2.LOG_LEVEL_TRACE
        )
        self.assertTrue(self.parse(trace.SerializeToString()).debug)

    def test_legacyAny(self) -> None:
        """
        The options C{Any} of containerd 1.6 to 2.2 is read as such: it names
        no matching instance.
        """
        given = self.parse(OPTIONS_ANY)
        self.assertFalse(given.bootstrap)
        self.assertEqual(given.address, "/flag/c.sock")
        self.assertEqual(given.ttrpcAddress, "/env/c.sock.ttrpc")
        self.assertEqual(wire.lastString(given.options, 3), "/shims")

    def test_otherInstance(self) -> None:
        """
        Params naming another instance or namespace are not taken.
        """
        other = bootstrap_pb2.BootstrapParams(instance_id="c2", namespace="ns")
        self.assertFalse(self.parse(other.SerializeToString()).bootstrap)
        other = bootstrap_pb2.BootstrapParams(instance_id="c1", namespace="n2")
        self.assertFalse(self.parse(other.SerializeToString()).bootstrap)

    def test_empty(self) -> None:
        given = self.parse(b"")
        self.assertFalse(given.bootstrap)
        self.assertEqual(given.options, {})
        self.assertEqual(given.ttrpcAddress, "/env/c.sock.ttrpc")

    def test_garbage(self) -> None:
        for stdin in (b"\xff", b"\x0a\x05ab", field(1, b"c1") + b"\x12\x02\xff\xfe"):
            given = self.parse(stdin)
            self.assertFalse(given.bootstrap, stdin)
            self.assertEqual(given.options, {}, stdin)


class RuntimeInfoTests(SynchronousTestCase):
    """
    L{bootstrap.runtimeInfo} and L{bootstrap.runcFeatures}.
    """

    def test_runtimeInfo(self) -> None:
        data = bootstrap.runtimeInfo(OPTIONS_ANY, b'{"ociVersionMin":"1.0.0"}')
        info = introspection_pb2.RuntimeInfo.FromString(data)
        self.assertEqual(info.name, RUNTIME_NAME)
        self.assertEqual(info.version.version, __version__)
        self.assertEqual(info.options.SerializeToString(), OPTIONS_ANY)
        self.assertEqual(
            info.features.type_url,
            "types.containerd.io/opencontainers/runtime-spec/1/features/Features",
        )
        self.assertEqual(info.features.value, b'{"ociVersionMin":"1.0.0"}')
        self.assertEqual(dict(info.annotations), {})

    def test_noOptions(self) -> None:
        info = introspection_pb2.RuntimeInfo.FromString(
            bootstrap.runtimeInfo(b"", b"{}")
        )
        self.assertFalse(info.HasField("options"))

    def test_featuresCached(self) -> None:
        """
        C{runc features} runs once per runc binary; later calls read the
        cache.
        """
        cache = FilePath(self.mktemp())
        self.patch(bootstrap, "FEATURES_CACHE_DIR", cache.path)
        runs: list[list[str]] = []

        def run(command: list[str]) -> tuple[int, bytes]:
            runs.append(command)
            return 0, b'{"ociVersionMin": "1.0.0"}'

        first = bootstrap.runcFeatures("sh", run)
        second = bootstrap.runcFeatures("sh", run)
        self.assertEqual(first, second)
        self.assertEqual(len(runs), 1)
        self.assertEqual(runs[0][1:], ["features"])

    def test_featuresFailure(self) -> None:
        self.patch(bootstrap, "FEATURES_CACHE_DIR", self.mktemp())
        self.assertRaises(
            OSError, bootstrap.runcFeatures, "sh", lambda command: (1, b"")
        )
        self.assertRaises(
            OSError, bootstrap.runcFeatures, "no-such-runc", lambda command: (0, b"")
        )


class InfoCommandTests(SynchronousTestCase):
    """
    C{containerd-shim-pyrunc-v2 -info}, run as containerd 2.x runs it: no
    other flag, the options C{Any} on stdin.
    """

    def runInfo(self, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "shimd.runc.shim", "-info"],
            input=stdin,
            capture_output=True,
            check=False,
        )

    def test_info(self) -> None:
        if not any(
            os.access(os.path.join(d, "runc"), os.X_OK)
            for d in os.environ.get("PATH", "").split(":")
        ):
            raise SkipTest("runc is not installed")
        options = runc_options_pb2.Options(binary_name="runc")
        stdin = any_pb2.Any(
            type_url="containerd.runc.v1.Options", value=options.SerializeToString()
        ).SerializeToString()
        result = self.runInfo(stdin)
        self.assertEqual(result.returncode, 0, result.stderr)
        info = introspection_pb2.RuntimeInfo.FromString(result.stdout)
        self.assertEqual(info.name, RUNTIME_NAME)
        self.assertEqual(info.options.SerializeToString(), stdin)
        self.assertIn(b"ociVersionMin", info.features.value)

    def test_failure(self) -> None:
        options = runc_options_pb2.Options(binary_name="no-such-runc")
        stdin = any_pb2.Any(
            type_url="containerd.runc.v1.Options", value=options.SerializeToString()
        ).SerializeToString()
        result = self.runInfo(stdin)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"")
        self.assertIn(b"no-such-runc", result.stderr)


class RuntimeOptionsFileTests(SynchronousTestCase):
    """
    C{runtimeoptions.v1.Options}, which containerd's CRI plugin sends for a
    runtime type other than its runc ones: a C{TypeUrl} and a C{ConfigPath}
    naming a TOML file of runc options.
    """

    def wrapper(self, path: str, typeURL: str = "") -> bytes:
        return field(1, typeURL.encode()) + field(2, path.encode())

    def test_file(self) -> None:
        config = FilePath(self.mktemp())
        config.setContent(
            b'BinaryName = "/usr/sbin/runc"\nSystemdCgroup = true\nIoUid = 7\n'
        )
        encoded = bootstrap.runcOptions(
            "runtimeoptions.v1.Options",
            self.wrapper(config.path, "containerd.runc.v1.Options"),
        )
        assert encoded is not None
        self.assertEqual(
            runc_options_pb2.Options.FromString(encoded),
            runc_options_pb2.Options(
                binary_name="/usr/sbin/runc", systemd_cgroup=True, io_uid=7
            ),
        )

    def test_noFile(self) -> None:
        self.assertEqual(
            bootstrap.runcOptions("runtimeoptions.v1.Options", self.wrapper("")), b""
        )

    def test_refused(self) -> None:
        config = FilePath(self.mktemp())
        for content, reason in (
            (b"Nope = 1\n", "unknown option Nope"),
            (b'SystemdCgroup = "yes"\n', "SystemdCgroup must be a bool"),
            (b"not toml [", "runtime options file"),
        ):
            config.setContent(content)
            error = self.assertRaises(
                bootstrap.OptionsError,
                bootstrap.runcOptions,
                "runtimeoptions.v1.Options",
                self.wrapper(config.path),
            )
            self.assertIn(reason, str(error))
        self.assertRaises(
            bootstrap.OptionsError,
            bootstrap.runcOptions,
            "runtimeoptions.v1.Options",
            self.wrapper("", "other.Type"),
        )

    def test_otherTypes(self) -> None:
        self.assertEqual(
            bootstrap.runcOptions("containerd.runc.v1.Options", b"x"), b"x"
        )
        self.assertIsNone(bootstrap.runcOptions("x.Y", b""))

    def test_startReadsFile(self) -> None:
        """
        C{start} finds C{ShimCgroup} in the file, as it would in the options
        themselves.
        """
        config = FilePath(self.mktemp())
        config.setContent(b'ShimCgroup = "/shims"\n')
        stdin = any_pb2.Any(
            type_url="runtimeoptions.v1.Options", value=self.wrapper(config.path)
        ).SerializeToString()
        options = bootstrap.decodeOptionsAny(stdin)
        self.assertEqual(wire.lastString(options, 3), "/shims")
