# -*- test-case-name: tests.test_launcher -*-
"""
Tests for L{shimd.shim.launcher}: the C{start}, C{delete} and C{-v} actions
containerd (or a human) runs, held to the Go shim's contract in
C{shim-cli.md}.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from google.protobuf import any_pb2
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase

import shimd
from shimd import RUNTIME_NAME, __version__, wire
from shimd.protos import runc_options_pb2, task_pb2
from shimd.runc import manager
from shimd.shim import bootstrap, launcher, spawn
from shimd.shim.address import (
    canConnect,
    cleanPath,
    joinPath,
    listen,
    socketAddress,
    writeAddress,
)
from shimd.shim.errors import LaunchError
from shimd.shim.flags import (
    FlagError,
    HelpRequested,
    daemonArguments,
    goQuote,
    parseFlags,
    usage,
    validateIdentifier,
)

# The argv containerd 1.6 passes, as observed (shim-cli.md section 2).
START_ARGV = [
    "-namespace",
    "sxref",
    "-address",
    "/tmp/t/c.sock",
    "-publish-binary",
    "/usr/bin/containerd",
    "-id",
    "sx1",
    "-debug",
    "start",
]
DELETE_ARGV = [
    "-namespace",
    "sxref",
    "-address",
    "/tmp/t/c.sock",
    "-publish-binary",
    "/usr/bin/containerd",
    "-id",
    "sx1",
    "-bundle",
    "/run/containerd/io.containerd.runtime.v2.task/sxref/sx1",
    "delete",
]

# Top-level modules that must never be loaded by the launcher.
HEAVY_MODULES = ("twisted", "google.protobuf", "zope", "attr")
#: What the standard library has that costs more than C{start} or C{delete}
#: itself, and that neither needs in the usual case (no grouping annotation,
#: no C{ShimCgroup}, no mounted rootfs).
COSTLY_STANDARD_MODULES = (
    "re",
    "typing",
    "enum",
    "signal",
    "socket",
    "hashlib",
    "json",
    "ctypes",
    "collections",
)


def shortTemporaryDirectory(case: SynchronousTestCase) -> str:
    """
    A new directory with a short path under C{/tmp}, for unix sockets, whose
    paths are limited to 107 bytes; removed after the test.
    """
    path = tempfile.mkdtemp(prefix="sx", dir="/tmp")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def makeBundle(case: SynchronousTestCase, id: str = "c1") -> str:
    """
    An empty bundle directory named C{id}, in a directory of bundles.
    """
    bundle = os.path.abspath(os.path.join(case.mktemp(), id))
    os.makedirs(bundle)
    return bundle


def writeFile(path: str, content: str) -> None:
    with open(path, "w") as f:
        f.write(content)


def readFile(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class ParseFlagsTests(SynchronousTestCase):
    """
    L{parseFlags} reads every form Go's C{flag} package reads.
    """

    def test_defaults(self) -> None:
        """
        Without arguments every flag has its Go default.
        """
        flags = parseFlags([])
        self.assertEqual(
            (flags.namespace, flags.id, flags.socket, flags.bundle, flags.address),
            ("", "", "", "", ""),
        )
        self.assertEqual(flags.publishBinary, "containerd")
        self.assertFalse(flags.debug)
        self.assertFalse(flags.version)
        self.assertIsNone(flags.action)
        self.assertEqual(flags.arguments, [])

    def test_startArgv(self) -> None:
        """
        The argv containerd runs C{start} with.
        """
        flags = parseFlags(START_ARGV)
        self.assertEqual(flags.namespace, "sxref")
        self.assertEqual(flags.address, "/tmp/t/c.sock")
        self.assertEqual(flags.publishBinary, "/usr/bin/containerd")
        self.assertEqual(flags.id, "sx1")
        self.assertTrue(flags.debug)
        self.assertEqual(flags.bundle, "")
        self.assertEqual(flags.action, "start")
        self.assertEqual(flags.arguments, ["start"])

    def test_deleteArgv(self) -> None:
        """
        The argv containerd runs C{delete} with.
        """
        flags = parseFlags(DELETE_ARGV)
        self.assertEqual(flags.namespace, "sxref")
        self.assertEqual(flags.id, "sx1")
        self.assertEqual(
            flags.bundle, "/run/containerd/io.containerd.runtime.v2.task/sxref/sx1"
        )
        self.assertFalse(flags.debug)
        self.assertEqual(flags.action, "delete")

    def test_daemonArgv(self) -> None:
        """
        The daemon's argv has no action.
        """
        flags = parseFlags(
            ["-namespace", "ns", "-id", "c1", "-address", "/a", "-debug"]
        )
        self.assertEqual((flags.namespace, flags.id, flags.address), ("ns", "c1", "/a"))
        self.assertTrue(flags.debug)
        self.assertIsNone(flags.action)

    def test_valueForms(self) -> None:
        """
        A value flag takes one dash or two, and its value as the next word or
        after C{=}.
        """
        for argv in (["-id", "x"], ["--id", "x"], ["-id=x"], ["--id=x"]):
            self.assertEqual(parseFlags(argv).id, "x", argv)

    def test_valueWithEquals(self) -> None:
        """
        Only the first C{=} separates the name from the value.
        """
        self.assertEqual(parseFlags(["-address=/a=b"]).address, "/a=b")

    def test_emptyValue(self) -> None:
        """
        C{-name=} sets an empty value.
        """
        self.assertEqual(parseFlags(["-publish-binary="]).publishBinary, "")

    def test_valueLooksLikeFlag(self) -> None:
        """
        As in Go, a value flag takes the next word even when it starts with a
        dash.
        """
        flags = parseFlags(["-id", "-debug", "start"])
        self.assertEqual(flags.id, "-debug")
        self.assertFalse(flags.debug)
        self.assertEqual(flags.action, "start")

    def test_lastValueWins(self) -> None:
        """
        A flag given twice keeps its last value.
        """
        self.assertEqual(parseFlags(["-id", "a", "-id=b"]).id, "b")

    def test_booleans(self) -> None:
        """
        A boolean flag alone is true; C{=value} sets it explicitly.
        """
        cases = [
            (["-debug"], True),
            (["--debug"], True),
            (["-debug=true"], True),
            (["-debug=1"], True),
            (["-debug=t"], True),
            (["-debug=TRUE"], True),
            (["-debug=false"], False),
            (["-debug=0"], False),
            (["-debug=F"], False),
        ]
        for argv, expected in cases:
            self.assertEqual(parseFlags(argv).debug, expected, argv)

    def test_booleanTakesNoValue(self) -> None:
        """
        A boolean flag does not take the next word: C{-debug false} leaves
        C{false} as the first positional argument, as in Go.
        """
        flags = parseFlags(["-debug", "false"])
        self.assertTrue(flags.debug)
        self.assertEqual(flags.action, "false")
        self.assertEqual(parseFlags(["-debug", "start"]).action, "start")

    def test_version(self) -> None:
        """
        C{-v} asks for the version.
        """
        self.assertTrue(parseFlags(["-v"]).version)
        self.assertTrue(parseFlags(["--v"]).version)
        self.assertFalse(parseFlags(["-v=false"]).version)

    def test_actionEndsFlags(self) -> None:
        """
        The first positional argument is the action; what follows it is not
        parsed as flags.
        """
        flags = parseFlags(["-namespace", "ns", "start", "-id", "x"])
        self.assertEqual(flags.action, "start")
        self.assertEqual(flags.arguments, ["start", "-id", "x"])
        self.assertEqual(flags.id, "")

    def test_terminator(self) -> None:
        """
        C{--} ends the flags and is not itself an argument.
        """
        flags = parseFlags(["-namespace", "ns", "--", "-id", "x"])
        self.assertEqual(flags.namespace, "ns")
        self.assertEqual(flags.id, "")
        self.assertEqual(flags.arguments, ["-id", "x"])
        self.assertEqual(parseFlags(["--", "delete"]).action, "delete")

    def test_singleDash(self) -> None:
        """
        A lone C{-} is a positional argument.
        """
        self.assertEqual(parseFlags(["-"]).arguments, ["-"])

    def test_unknown(self) -> None:
        """
        An unknown flag, in any form, is an error naming it, as in Go.
        """
        for argv, name in [
            (["-unknown", "val", "start"], "unknown"),
            (["-namespace", "ns", "-x"], "x"),
            (["--x=1", "start"], "x"),
            (["-debug", "-nope", "delete"], "nope"),
        ]:
            error = self.assertRaises(FlagError, parseFlags, argv)
            self.assertEqual(str(error), f"flag provided but not defined: -{name}")

    def test_unknownAfterAction(self) -> None:
        """
        What follows the action is not parsed, so it is never unknown.
        """
        self.assertEqual(parseFlags(["start", "-x"]).arguments, ["start", "-x"])

    def test_help(self) -> None:
        """
        C{-h}, C{-help} and C{--help} ask for the usage.
        """
        for argv in (["-h"], ["--help"], ["-help"], ["-namespace", "n", "-h", "x"]):
            self.assertRaises(HelpRequested, parseFlags, argv)

    def test_badSyntax(self) -> None:
        """
        Three dashes, or a name starting with C{=}, are Go's bad syntax.
        """
        for word in ("---x", "-=x", "--=1"):
            error = self.assertRaises(FlagError, parseFlags, [word])
            self.assertEqual(str(error), f"bad flag syntax: {word}")

    def test_badBoolean(self) -> None:
        """
        A boolean flag's value must be one Go's C{strconv.ParseBool} reads.
        """
        error = self.assertRaises(FlagError, parseFlags, ["-debug=yes"])
        self.assertEqual(
            str(error), 'invalid boolean value "yes" for -debug: parse error'
        )

    def test_missingValue(self) -> None:
        """
        A value flag at the end, without its value, is an error naming it.
        """
        for name in ("id", "namespace", "address", "bundle", "socket"):
            error = self.assertRaises(FlagError, parseFlags, ["-debug", f"-{name}"])
            self.assertEqual(str(error), f"flag needs an argument: -{name}")
        self.assertRaises(LaunchError, parseFlags, ["--publish-binary"])


class ValidateIdentifierTests(SynchronousTestCase):
    """
    L{validateIdentifier} is containerd's C{identifiers.Validate}.
    """

    def test_valid(self) -> None:
        for text in ("a", "default", "k8s.io", "a-b_c.d", "A1", "x" * 76, "0"):
            validateIdentifier(text)

    def test_invalid(self) -> None:
        pattern = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
        for text in ("../x", ".a", "a.", "a..b", "a-_b", "a/b", "a b", "é", "-"):
            error = self.assertRaises(LaunchError, validateIdentifier, text)
            self.assertEqual(
                str(error),
                f"identifier {goQuote(text)} must match {pattern}: invalid argument",
            )

    def test_empty(self) -> None:
        error = self.assertRaises(LaunchError, validateIdentifier, "")
        self.assertEqual(str(error), "identifier must not be empty: invalid argument")

    def test_tooLong(self) -> None:
        error = self.assertRaises(LaunchError, validateIdentifier, "x" * 77)
        self.assertEqual(
            str(error),
            f'identifier "{"x" * 77}" greater than maximum length (76 characters): '
            "invalid argument",
        )

    def test_goQuote(self) -> None:
        self.assertEqual(goQuote('a"b\\c'), '"a\\"b\\\\c"')
        self.assertEqual(goQuote("a\nb\x01"), '"a\\nb\\x01"')


class PathTests(SynchronousTestCase):
    """
    L{cleanPath} and L{joinPath} are Go's C{path.Clean} and
    C{filepath.Join}.
    """

    def test_cleanPath(self) -> None:
        """
        L{cleanPath} gives the shortest lexically equivalent path:
        one slash between elements, no C{.}, C{..} resolved against what
        precedes it (or dropped at the root), C{.} for nothing.
        """
        cases = {
            # From the Go documentation and tests of path.Clean.
            "": ".",
            ".": ".",
            "/": "/",
            "//": "/",
            "///": "/",
            "abc": "abc",
            "abc/def": "abc/def",
            "a/b/c": "a/b/c",
            "..": "..",
            "../..": "../..",
            "../../abc": "../../abc",
            "/abc": "/abc",
            "abc/": "abc",
            "/abc/def/": "/abc/def",
            "//a//b/": "/a/b",
            "abc//def//ghi": "abc/def/ghi",
            "//abc": "/abc",
            "abc/./def": "abc/def",
            "/./abc/def": "/abc/def",
            "abc/.": "abc",
            "a/./b/": "a/b",
            "./": ".",
            "abc/def/ghi/../jkl": "abc/def/jkl",
            "abc/def/../ghi/../jkl": "abc/jkl",
            "abc/def/..": "abc",
            "abc/def/../..": ".",
            "/abc/def/../..": "/",
            "abc/def/../../..": "..",
            "/abc/def/../../..": "/",
            "abc/def/../../../ghi/jkl/../../../mno": "../../mno",
            "a/../..": "..",
            "/../a": "/a",
            "/..": "/",
            "abc/./../def": "def",
            "abc//./../def": "def",
            "abc/../../././../def": "../../def",
            # Names that merely start with dots are names.
            "..a": "..a",
            ".../a": ".../a",
            "a/.b/..c": "a/.b/..c",
        }
        for path, expected in cases.items():
            self.assertEqual(cleanPath(path), expected, repr(path))

    def test_cleanIdempotent(self) -> None:
        """
        A clean path cleans to itself.
        """
        for path in ("/a/b", "a", "..", "/", ".", "../x"):
            self.assertEqual(cleanPath(cleanPath(path)), path)

    def test_joinPath(self) -> None:
        """
        L{joinPath} joins with slashes, ignores empty elements,
        cleans the result, and gives C{""} when every element is empty.
        """
        cases: list[tuple[tuple[str, ...], str]] = [
            # From the Go documentation and tests of filepath.Join.
            ((), ""),
            (("",), ""),
            (("", ""), ""),
            (("", "", ""), ""),
            (("a",), "a"),
            (("a", "b", "c"), "a/b/c"),
            (("a", "b/c"), "a/b/c"),
            (("a/b", "c"), "a/b/c"),
            (("a/b", "/c"), "a/b/c"),
            (("a/b", "../../../xyz"), "../xyz"),
            (("a", ""), "a"),
            (("", "b"), "b"),
            (("a", "", "b"), "a/b"),
            (("", "/a"), "/a"),
            (("/", "a"), "/a"),
            (("/", "a/b"), "/a/b"),
            (("/", ""), "/"),
            (("//", "a"), "/a"),
            (("/a", ""), "/a"),
            (("", "", "b"), "b"),
            ((".", ""), "."),
            (("a", ".."), "."),
            (("/tmp/t//c.sock/", "sxref", "sx2"), "/tmp/t/c.sock/sxref/sx2"),
        ]
        for elements, expected in cases:
            self.assertEqual(joinPath(*elements), expected, repr(elements))


class SocketAddressTests(SynchronousTestCase):
    """
    L{socketAddress} derives the address as the Go shim does.
    """

    expectedHash = hashlib.sha256(b"/tmp/t/c.sock/sxref/sx2").hexdigest()

    def test_address(self) -> None:
        """
        The address is the SHA-256 of containerd's address, the namespace and
        the group joined as paths, under C{/run/containerd/s}: 89 bytes, as
        observed.
        """
        address = socketAddress("/tmp/t/c.sock", "sxref", "sx2")
        self.assertEqual(address, "unix:///run/containerd/s/" + self.expectedHash)
        self.assertEqual(len(address), 89)

    def test_uncleanAddress(self) -> None:
        """
        containerd's address is cleaned first, as C{filepath.Join} does.
        """
        self.assertEqual(
            socketAddress("/tmp/t//c.sock/", "sxref", "sx2"),
            "unix:///run/containerd/s/" + self.expectedHash,
        )

    def test_socketDirectory(self) -> None:
        """
        Another socket directory holds the same name, cleaned.
        """
        self.assertEqual(
            socketAddress("/tmp/t/c.sock", "sxref", "sx2", "/tmp/sx//s/"),
            "unix:///tmp/sx/s/" + self.expectedHash,
        )

    def test_groupsDiffer(self) -> None:
        """
        Different namespaces or groups get different addresses.
        """
        addresses = {
            socketAddress("/c.sock", "a", "g"),
            socketAddress("/c.sock", "b", "g"),
            socketAddress("/c.sock", "a", "h"),
            socketAddress("/d.sock", "a", "g"),
        }
        self.assertEqual(len(addresses), 4)


class GroupKeyTests(SynchronousTestCase):
    """
    L{manager.groupKey} picks the key that decides which shim serves a
    container.
    """

    def test_groupAnnotation(self) -> None:
        """
        C{io.containerd.runc.v2.group} wins over the sandbox id.
        """
        spec: dict[str, object] = {
            "annotations": {
                "io.kubernetes.cri.sandbox-id": "sandbox",
                "io.containerd.runc.v2.group": "group",
            }
        }
        self.assertEqual(manager.groupKey(spec, "c1"), "group")

    def test_sandboxAnnotation(self) -> None:
        """
        Without the group annotation, the sandbox id wins over the id.
        """
        spec: dict[str, object] = {
            "annotations": {"io.kubernetes.cri.sandbox-id": "sandbox", "x": "y"}
        }
        self.assertEqual(manager.groupKey(spec, "c1"), "sandbox")

    def test_emptyAnnotation(self) -> None:
        """
        A present annotation counts even when empty, as in Go.
        """
        spec: dict[str, object] = {"annotations": {"io.containerd.runc.v2.group": ""}}
        self.assertEqual(manager.groupKey(spec, "c1"), "")

    def test_noAnnotations(self) -> None:
        """
        Without a grouping annotation the key is the id.
        """
        self.assertEqual(manager.groupKey({}, "c1"), "c1")
        self.assertEqual(manager.groupKey({"annotations": {}}, "c1"), "c1")
        self.assertEqual(manager.groupKey({"annotations": {"a": "b"}}, "c1"), "c1")

    def test_annotationsNotAnObject(self) -> None:
        """
        Annotations that are not a JSON object are ignored.
        """
        values: list[object] = [None, [], "io.containerd.runc.v2.group", 3]
        for value in values:
            self.assertEqual(
                manager.groupKey({"annotations": value}, "c1"), "c1", value
            )


class ReadSpecTests(SynchronousTestCase):
    """
    L{manager.readSpec} reads C{config.json}, or fails naming it.
    """

    def setUp(self) -> None:
        self.bundle = makeBundle(self)
        self.path = os.path.join(self.bundle, "config.json")

    def test_valid(self) -> None:
        """
        A JSON object that names a grouping annotation is returned.
        """
        spec = '{"ociVersion": "1.0.2", "annotations": {GROUP: "b"}}'.replace(
            "GROUP", json.dumps("io.containerd.runc.v2.group")
        )
        writeFile(self.path, spec)
        self.assertEqual(
            manager.readSpec(self.bundle),
            {
                "ociVersion": "1.0.2",
                "annotations": {"io.containerd.runc.v2.group": "b"},
            },
        )

    def test_noGrouping(self) -> None:
        """
        A spec that names no grouping annotation is not parsed: it is read
        as an empty spec, and the group is the container's id.
        """
        writeFile(self.path, '{"ociVersion": "1.0.2", "annotations": {"a": "b"}}')
        self.assertEqual(manager.readSpec(self.bundle), {})

    def test_missing(self) -> None:
        """
        A missing file is an error naming it.
        """
        error = self.assertRaises(LaunchError, manager.readSpec, self.bundle)
        self.assertIn(self.path, str(error))

    def test_invalidJSON(self) -> None:
        """
        Invalid JSON is an error naming the file.
        """
        writeFile(self.path, '{not json "io.kubernetes.cri.sandbox-id"')
        error = self.assertRaises(LaunchError, manager.readSpec, self.bundle)
        self.assertIn(self.path, str(error))

    def test_notAnObject(self) -> None:
        """
        JSON that is not an object is an error naming the file.
        """
        for content in (
            '["io.containerd.runc.v2.group"]',
            '"io.kubernetes.cri.sandbox-id"',
        ):
            writeFile(self.path, content)
            error = self.assertRaises(LaunchError, manager.readSpec, self.bundle)
            self.assertIn(self.path, str(error))


class ListenTests(SynchronousTestCase):
    """
    L{listen} binds the shim socket, owner-only.
    """

    def setUp(self) -> None:
        self.directory = os.path.join(shortTemporaryDirectory(self), "s")
        self.path = os.path.join(self.directory, "a" * 64)
        self.address = "unix://" + self.path
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)

    def listen(self) -> socket.socket:
        listener = listen(self.address)
        assert listener is not None
        self.addCleanup(listener.close)
        return listener

    def test_listens(self) -> None:
        """
        The returned socket listens on the path.
        """
        listener = self.listen()
        self.assertEqual(
            listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1
        )
        self.assertEqual(listener.getsockname(), self.path)
        self.assertTrue(canConnect(self.path))

    def test_socketMode(self) -> None:
        """
        The socket file is mode 0600, and the process umask is restored.
        """
        self.listen()
        mode = os.stat(self.path).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(stat.S_IMODE(mode), 0o600)
        self.assertEqual(os.umask(0o022), 0o022)

    def test_directoryMode(self) -> None:
        """
        The missing socket directory is created, mode 0700.
        """
        self.listen()
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)

    def test_existingDirectory(self) -> None:
        """
        An existing directory is used as it is.
        """
        os.mkdir(self.directory, 0o755)
        os.chmod(self.directory, 0o755)
        self.listen()
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o755)

    def test_alreadyListening(self) -> None:
        """
        While a shim listens on the path, L{listen} returns L{None}
        and leaves that shim's socket alone.
        """
        first = self.listen()
        self.assertIsNone(listen(self.address))
        self.assertEqual(os.umask(0o022), 0o022)
        self.assertTrue(stat.S_ISSOCK(os.stat(self.path).st_mode))
        self.assertEqual(first.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
        self.assertTrue(canConnect(self.path))

    def test_staleSocket(self) -> None:
        """
        A socket file that nothing listens on is replaced.
        """
        os.makedirs(self.directory)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(self.path)
        stale.close()
        self.assertFalse(canConnect(self.path))
        listener = self.listen()
        self.assertEqual(
            listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1
        )
        self.assertTrue(canConnect(self.path))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_otherError(self) -> None:
        """
        Another failure to bind is an error, and the umask is restored.
        """
        address = "unix://" + os.path.join(self.directory, "x" * 120)
        error = self.assertRaises(LaunchError, listen, address)
        self.assertIn("create new shim socket", str(error))
        self.assertEqual(os.umask(0o022), 0o022)

    def test_canConnect(self) -> None:
        """
        L{canConnect} is false where nothing listens.
        """
        self.assertFalse(canConnect(self.path))


class WriteAddressTests(SynchronousTestCase):
    """
    L{writeAddress} writes the bundle's C{address} file atomically.
    """

    address = "unix:///run/containerd/s/" + "0" * 64

    def setUp(self) -> None:
        self.bundle = makeBundle(self)
        self.path = os.path.join(self.bundle, "address")

    def test_content(self) -> None:
        """
        The file holds the address, without a newline.
        """
        writeAddress(self.bundle, self.address)
        self.assertEqual(readFile(self.path), self.address.encode())
        self.assertEqual(os.listdir(self.bundle), ["address"])

    def test_replaces(self) -> None:
        """
        An existing file is replaced.
        """
        writeFile(self.path, "unix:///old/address/that/was/longer\n")
        writeAddress(self.bundle, self.address)
        self.assertEqual(readFile(self.path), self.address.encode())

    def test_staleTemporary(self) -> None:
        """
        A C{.address} left by an interrupted start is not in the way, and no
        C{.address} is left behind.
        """
        writeFile(os.path.join(self.bundle, ".address"), "stale")
        writeAddress(self.bundle, self.address)
        self.assertEqual(readFile(self.path), self.address.encode())
        self.assertEqual(os.listdir(self.bundle), ["address"])


class RuntimeOptionsTests(SynchronousTestCase):
    """
    L{bootstrap.decodeOptionsAny} reads the C{Any} containerd 1.6 to 2.2
    write on the stdin of C{start}.
    """

    def test_empty(self) -> None:
        """
        No stdin, no options.
        """
        self.assertEqual(bootstrap.decodeOptionsAny(b""), {})

    def test_options(self) -> None:
        """
        C{containerd.runc.v1.Options} are decoded by field number.
        """
        options = runc_options_pb2.Options(
            shim_cgroup="/pods/shim", binary_name="/usr/sbin/runc", root="/run/r"
        )
        stdin = any_pb2.Any(
            type_url="containerd.runc.v1.Options", value=options.SerializeToString()
        ).SerializeToString()
        decoded = bootstrap.decodeOptionsAny(stdin)
        self.assertEqual(decoded[3], [b"/pods/shim"])
        self.assertEqual(wire.lastString(decoded, 3), "/pods/shim")
        self.assertEqual(wire.lastString(decoded, 6), "/usr/sbin/runc")
        self.assertEqual(wire.lastString(decoded, 7), "/run/r")

    def test_observed(self) -> None:
        """
        The 74 bytes observed from containerd decode, without a shim cgroup.
        """
        options = runc_options_pb2.Options(
            binary_name="/usr/sbin/runc", root="/run/containerd/runc-sxopt"
        )
        stdin = any_pb2.Any(
            type_url="containerd.runc.v1.Options", value=options.SerializeToString()
        ).SerializeToString()
        self.assertEqual(len(stdin), 74)
        decoded = bootstrap.decodeOptionsAny(stdin)
        self.assertEqual(wire.lastString(decoded, 3), "")
        self.assertEqual(wire.lastString(decoded, 7), "/run/containerd/runc-sxopt")

    def test_otherType(self) -> None:
        """
        An C{Any} of another type gives no options.
        """
        stdin = any_pb2.Any(
            type_url="containerd.runc.v1.CheckpointOptions",
            value=runc_options_pb2.Options(shim_cgroup="/x").SerializeToString(),
        ).SerializeToString()
        self.assertEqual(bootstrap.decodeOptionsAny(stdin), {})

    def test_garbage(self) -> None:
        """
        Bytes that are not an C{Any} give no options.
        """
        for stdin in (b"\xff", b"\x0b", b"\x12\x05ab", b"hello world\n"):
            self.assertEqual(bootstrap.decodeOptionsAny(stdin), {}, stdin)

    def test_garbageValue(self) -> None:
        """
        Options that do not decode give no options.
        """
        stdin = any_pb2.Any(
            type_url="containerd.runc.v1.Options", value=b"\x1a\x05ab"
        ).SerializeToString()
        self.assertEqual(bootstrap.decodeOptionsAny(stdin), {})


class DaemonCommandTests(SynchronousTestCase):
    """
    L{launcher.daemonCommand} runs this same program without an action.
    """

    def flags(self, *extra: str) -> list[str]:
        return daemonArguments("ns", "c1", "/c.sock", "-debug" in extra)

    def test_installedScript(self) -> None:
        """
        An installed script is run again with the same interpreter, with the
        daemon's argv of shim-cli.md section 2.
        """
        script = FilePath(self.mktemp())
        script.setContent(b"#!/bin/sh\n")
        self.patch(sys, "argv", [script.path, "start"])
        self.assertEqual(
            launcher.daemonCommand(manager, self.flags()),
            [
                sys.executable,
                script.path,
                "-namespace",
                "ns",
                "-id",
                "c1",
                "-address",
                "/c.sock",
            ],
        )

    def test_module(self) -> None:
        """
        Run as a module file, the daemon is C{python -m} the manager's program, with
        C{-debug} when asked.
        """
        self.patch(sys, "argv", ["/src/shimd/runc/shim.py"])
        self.assertEqual(
            launcher.daemonCommand(manager, self.flags("-debug")),
            [
                sys.executable,
                "-m",
                "shimd.runc.shim",
                "-namespace",
                "ns",
                "-id",
                "c1",
                "-address",
                "/c.sock",
                "-debug",
            ],
        )


def umount(path: str) -> None:
    """
    Lazily unmount everything on C{path}, ignoring errors.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    while libc.umount2(path.encode(), 2) == 0:  # MNT_DETACH
        pass


class MountPointTests(SynchronousTestCase):
    """
    L{manager.isMountPoint} reads the mount table, so that C{delete} loads
    libc only to unmount what is mounted.
    """

    def test_notMounted(self) -> None:
        target = os.path.abspath(self.mktemp())
        os.mkdir(target)
        self.assertFalse(manager.isMountPoint(target))

    def test_root(self) -> None:
        self.assertTrue(manager.isMountPoint("/"))

    def test_escapedPath(self) -> None:
        """
        A mount point whose path has a space is found in its escaped form.
        """
        if os.geteuid() != 0:
            raise SkipTest("mounting needs root")
        target = os.path.abspath(self.mktemp()) + " with space"
        os.makedirs(target)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0, None) != 0:
            raise SkipTest(f"cannot mount tmpfs: {os.strerror(ctypes.get_errno())}")
        self.addCleanup(umount, target)
        self.assertTrue(manager.isMountPoint(target))
        umount(target)
        self.assertFalse(manager.isMountPoint(target))


class DeleteTests(SynchronousTestCase):
    """
    L{launcher.delete} cleans up after a dead shim and reports the container
    killed.
    """

    def setUp(self) -> None:
        self.bundle = makeBundle(self, "c1")
        self.runcRoot = os.path.join(self.bundle, "runc-root")
        writeFile(
            os.path.join(self.bundle, "options.json"),
            json.dumps({"root": self.runcRoot}),
        )
        os.mkdir(os.path.join(self.bundle, "rootfs"))
        self.flags = parseFlags(
            ["-namespace", "ns", "-id", "c1", "-bundle", "/elsewhere", "delete"]
        )
        self.runs: list[list[str]] = []
        self.patch(spawn, "run", self.runRunc)
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def runRunc(self, command: list[str]) -> int:
        self.runs.append(command)
        return 0

    def delete(self) -> task_pb2.DeleteResponse:
        before = time.time_ns()
        encoded = launcher.delete(manager, self.flags, self.bundle)
        after = time.time_ns()
        response = task_pb2.DeleteResponse.FromString(encoded)
        self.assertTrue(response.HasField("exited_at"))
        self.assertTrue(before <= response.exited_at.ToNanoseconds() <= after)
        return response

    def test_missingRuntime(self) -> None:
        """
        A missing C{runtime} file is fatal, in the Go shim's words.
        """
        error = self.assertRaises(
            LaunchError, launcher.delete, manager, self.flags, self.bundle
        )
        self.assertIn("runtime: no such file or directory", str(error))
        self.assertEqual(
            str(error),
            f"open {self.bundle}/runtime: no such file or directory",
        )
        self.assertEqual(self.runs, [])

    def test_response(self) -> None:
        """
        With C{init.pid}, the response holds its pid, exit status 137 and the
        current time.
        """
        writeFile(os.path.join(self.bundle, "runtime"), "")
        writeFile(os.path.join(self.bundle, "init.pid"), "1234")
        response = self.delete()
        self.assertEqual(response.pid, 1234)
        self.assertEqual(response.exit_status, 137)
        self.assertEqual(self.runs, [])

    def test_noPidFile(self) -> None:
        """
        Without C{init.pid} the pid is -1, encoded as uint32 4294967295, as
        observed from the Go shim.
        """
        writeFile(os.path.join(self.bundle, "runtime"), "")
        encoded = launcher.delete(manager, self.flags, self.bundle)
        self.assertTrue(encoded.startswith(bytes.fromhex("08ffffffff0f")))
        response = task_pb2.DeleteResponse.FromString(encoded)
        self.assertEqual(response.pid, 2**32 - 1)
        self.assertEqual(response.exit_status, 137)

    def test_bundleFromWorkingDirectory(self) -> None:
        """
        The bundle is the working directory's sibling named by C{-id}, not
        C{-bundle}.
        """
        other = os.path.join(os.path.dirname(self.bundle), "c2")
        os.mkdir(other)
        writeFile(os.path.join(self.bundle, "runtime"), "")
        writeFile(os.path.join(self.bundle, "init.pid"), "77")
        encoded = launcher.delete(manager, self.flags, other)
        self.assertEqual(task_pb2.DeleteResponse.FromString(encoded).pid, 77)

    def test_runc(self) -> None:
        """
        With runc state for the container, runc force-deletes it, with the
        binary named in C{runtime}, under C{<root>/<namespace>}.
        """
        writeFile(os.path.join(self.bundle, "runtime"), "/usr/sbin/runc\n")
        os.makedirs(os.path.join(self.runcRoot, "ns", "c1"))
        self.delete()
        self.assertEqual(
            self.runs,
            [
                [
                    "/usr/sbin/runc",
                    "--root",
                    os.path.join(self.runcRoot, "ns"),
                    "--log",
                    os.path.join(self.bundle, "log.json"),
                    "--log-format",
                    "json",
                    "delete",
                    "--force",
                    "c1",
                ]
            ],
        )

    def test_runcDefaultBinary(self) -> None:
        """
        An empty C{runtime} file means C{runc} from C{PATH}.
        """
        writeFile(os.path.join(self.bundle, "runtime"), "")
        os.makedirs(os.path.join(self.runcRoot, "ns", "c1"))
        self.delete()
        self.assertEqual(self.runs[0][0], "runc")

    def test_runcFailureIgnored(self) -> None:
        """
        A failing runc does not fail the delete.
        """
        self.patch(spawn, "run", lambda command: 1)
        writeFile(os.path.join(self.bundle, "runtime"), "")
        os.makedirs(os.path.join(self.runcRoot, "ns", "c1"))
        self.assertEqual(self.delete().exit_status, 137)


class VersionTests(SynchronousTestCase):
    """
    L{launcher.version} follows the Go shim's layout.
    """

    def test_layout(self) -> None:
        """
        The program, then indented C{Version}, C{Revision} and the language
        version, then an empty line.
        """
        text = launcher.version("/usr/bin/containerd-shim-pyrunc-v2")
        self.assertEqual(
            text,
            "/usr/bin/containerd-shim-pyrunc-v2:\n"
            f"  Version:  {__version__}\n"
            f"  Revision: {__version__}\n"
            f"  Python version: {sys.version.split()[0]}\n"
            "\n",
        )


class MainTests(SynchronousTestCase):
    """
    L{launcher.main} dispatches on the action and sets the exit status.
    """

    def setUp(self) -> None:
        self.stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def output(self) -> bytes:
        self.stdout.flush()
        buffer = self.stdout.buffer
        assert isinstance(buffer, io.BytesIO)
        return buffer.getvalue()

    def test_version(self) -> None:
        """
        C{-v} prints the version and exits 0, without a namespace.
        """
        self.assertEqual(launcher.main(manager, ["-v"]), 0)
        self.assertEqual(self.output(), launcher.version(sys.argv[0]).encode())
        self.assertEqual(self.stderr.getvalue(), "")

    def test_noNamespace(self) -> None:
        """
        Without a namespace it exits 1, saying so on stderr.
        """
        self.assertEqual(launcher.main(manager, ["-id", "c1", "start"]), 1)
        self.assertEqual(
            self.stderr.getvalue(), f"{RUNTIME_NAME}: shim namespace cannot be empty\n"
        )
        self.assertEqual(self.output(), b"")

    def test_unknownAction(self) -> None:
        """
        An unknown action exits 1, naming it.
        """
        self.assertEqual(launcher.main(manager, ["-namespace", "ns", "bogus"]), 1)
        self.assertIn("bogus", self.stderr.getvalue())
        self.assertTrue(self.stderr.getvalue().startswith(f"{RUNTIME_NAME}: "))
        self.assertEqual(self.output(), b"")

    def test_badFlags(self) -> None:
        """
        A flag without its value exits 2, as Go's flag package does.
        """
        self.assertEqual(launcher.main(manager, ["-namespace"]), 2)
        self.assertIn("flag needs an argument: -namespace", self.stderr.getvalue())

    def test_unknownFlag(self) -> None:
        """
        An unknown flag exits 2 with Go's message and the usage on stderr,
        nothing on stdout.
        """
        self.assertEqual(launcher.main(manager, ["-namespace", "n", "-x", "start"]), 2)
        self.assertEqual(
            self.stderr.getvalue(),
            "flag provided but not defined: -x\n" + usage(sys.argv[0]),
        )
        self.assertEqual(self.output(), b"")

    def test_help(self) -> None:
        """
        C{-h} and C{--help} print the usage on stderr and exit 0, as the Go
        shim does.
        """
        for argv in (["-h"], ["--help"]):
            self.stderr.seek(0)
            self.stderr.truncate()
            self.assertEqual(launcher.main(manager, argv), 0)
            self.assertEqual(self.stderr.getvalue(), usage(sys.argv[0]))
        self.assertEqual(self.output(), b"")

    def test_usageLayout(self) -> None:
        """
        The usage is Go's C{PrintDefaults} layout of the Go shim's flags.
        """
        text = usage("/x/shim")
        self.assertTrue(text.startswith("Usage of /x/shim:\n  -address string\n"))
        self.assertIn("  -v\tshow the shim version and exit\n", text)
        self.assertIn('(used for publishing events) (default "containerd")\n', text)

    def test_invalidNamespace(self) -> None:
        """
        A namespace that is not a containerd identifier exits 1 with the Go
        shim's C{namespace validation} message, for every action, before
        anything touches a path.
        """
        for action in ("start", "delete"):
            self.stderr.seek(0)
            self.stderr.truncate()
            self.assertEqual(
                launcher.main(manager, ["-namespace", "../x", "-id", "c1", action]), 1
            )
            self.assertEqual(
                self.stderr.getvalue(),
                f'{RUNTIME_NAME}: namespace validation: identifier "../x" must '
                "match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument\n",
            )
        self.assertEqual(self.output(), b"")

    def test_invalidId(self) -> None:
        """
        An id that is not a containerd identifier exits 1 too.
        """
        self.assertEqual(
            launcher.main(manager, ["-namespace", "n", "-id", "a/b", "start"]), 1
        )
        self.assertIn('id validation: identifier "a/b" must', self.stderr.getvalue())

    def chdir(self, path: str) -> None:
        previous = os.getcwd()
        os.chdir(path)
        self.addCleanup(os.chdir, previous)

    def test_delete(self) -> None:
        """
        C{delete} writes the raw C{DeleteResponse} to stdout and exits 0.
        """
        bundle = makeBundle(self, "c1")
        writeFile(os.path.join(bundle, "runtime"), "")
        writeFile(
            os.path.join(bundle, "options.json"),
            json.dumps({"root": os.path.join(bundle, "runc-root")}),
        )
        writeFile(os.path.join(bundle, "init.pid"), "4321")
        self.chdir(bundle)
        self.assertEqual(
            launcher.main(manager, ["-namespace", "ns", "-id", "c1", "delete"]), 0
        )
        response = task_pb2.DeleteResponse.FromString(self.output())
        self.assertEqual((response.pid, response.exit_status), (4321, 137))

    def test_deleteFails(self) -> None:
        """
        A failing C{delete} exits 1 with the Go shim's message, and writes
        nothing to stdout.
        """
        bundle = makeBundle(self, "c1")
        self.chdir(bundle)
        self.assertEqual(
            launcher.main(manager, ["-namespace", "ns", "-id", "c1", "delete"]), 1
        )
        self.assertEqual(
            self.stderr.getvalue(),
            f"{RUNTIME_NAME}: open {bundle}/runtime: no such file or directory\n",
        )
        self.assertEqual(self.output(), b"")


# Run in a child Python: the launcher, then a report of what it loaded.
DELETE_SCRIPT = """\
import sys
before = set(sys.modules)
import shimd.runc.shim
status = shimd.runc.shim.main(sys.argv[1:])
sys.stdout.flush()
loaded = sorted(set(sys.modules) - before)
import json
sys.stderr.write("\\n" + json.dumps({"status": status, "loaded": loaded}) + "\\n")
"""

# The child runs start with this stub as the daemon, waits for the stub to
# exit (killing it after 30 s), and reports.
START_SCRIPT = """\
import os, sys
daemon, bundle, socketDir, *argv = sys.argv[1:]
sys.argv = [daemon]
before = set(sys.modules)
import shimd.runc.manager as manager
import shimd.shim.launcher as launcher
from shimd.shim.flags import parseFlags
flags = parseFlags(argv)
address = launcher.start(manager, flags, b"", bundle, socketDir=socketDir)
loaded = sorted(set(sys.modules) - before)
import json, select, signal
children = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            children.append(int(entry))
exits = []
for pid in children:
    pidfd = os.pidfd_open(pid)
    ready, _, _ = select.select([pidfd], [], [], 30)
    os.close(pidfd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    status = os.waitpid(pid, 0)[1]
    exits.append([bool(ready), os.waitstatus_to_exitcode(status)])
print(json.dumps({"address": address, "loaded": loaded, "exits": exits}))
"""

# The daemon stub: it reports what it inherited, and exits.
DAEMON_STUB = """\
import json, os, socket, stat, sys
report = {"argv": sys.argv[1:], "sessionLeader": os.getsid(0) == os.getpid()}
report["fd3IsSocket"] = stat.S_ISSOCK(os.fstat(3).st_mode)
listener = socket.socket(fileno=3)
report["listening"] = listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
report["unix"] = listener.family == socket.AF_UNIX
report["socketName"] = listener.getsockname()
listener.detach()
devnull = os.stat(os.devnull)
report["stdio"] = [os.path.samestat(os.fstat(fd), devnull) for fd in (0, 1, 2)]
report["readyFd"] = os.environ.get("SHIMD_READY_FD")
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "daemon.json"), "w") as f:
    json.dump(report, f)
os.write(4, b"ready\\n")
"""


class LightweightTests(SynchronousTestCase):
    """
    C{start} and C{delete}, run in a fresh interpreter, load nothing beyond
    the standard library: neither Twisted nor the protobuf runtime.
    """

    def runChild(
        self, script: str, arguments: list[str], cwd: str
    ) -> tuple[bytes, str]:
        source = os.path.dirname(os.path.dirname(os.path.abspath(shimd.__file__)))
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [source, environment.get("PYTHONPATH")])
        )
        environment["TTRPC_ADDRESS"] = os.path.join(cwd, "nonexistent.ttrpc")
        # The stub must be spawned, not forked by a fork server.
        environment["SHIMD_FORKSERVER"] = "0"
        result = subprocess.run(
            [sys.executable, "-c", script, *arguments],
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        stderr = result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 0, stderr)
        return result.stdout, stderr

    def assertLightweight(self, loaded: list[str], needed: Sequence[str] = ()) -> None:
        """
        None of C{loaded} is a heavy module, nor outside the standard library
        and shimd, nor a costly module of the standard library but those
        C{needed}.
        """
        heavy = [name for name in loaded if name.startswith(HEAVY_MODULES)]
        self.assertEqual(heavy, [])
        costly = [
            name
            for name in loaded
            if name in COSTLY_STANDARD_MODULES and name not in needed
        ]
        self.assertEqual(costly, [])
        foreign = [
            name
            for name in loaded
            if name.partition(".")[0] not in sys.stdlib_module_names
            and name.partition(".")[0] not in ("shimd", "__main__")
        ]
        self.assertEqual(foreign, [])

    def test_delete(self) -> None:
        """
        C{delete} answers with the response and loads nothing heavy.
        """
        bundle = makeBundle(self, "c1")
        writeFile(os.path.join(bundle, "runtime"), "")
        writeFile(
            os.path.join(bundle, "options.json"),
            json.dumps({"root": os.path.join(bundle, "runc-root")}),
        )
        writeFile(os.path.join(bundle, "init.pid"), "42")
        argv = list(DELETE_ARGV)
        argv[argv.index("sx1")] = "c1"
        stdout, stderr = self.runChild(DELETE_SCRIPT, argv, bundle)
        report = json.loads(stderr.splitlines()[-1])
        self.assertEqual(report["status"], 0, stderr)
        response = task_pb2.DeleteResponse.FromString(stdout)
        self.assertEqual((response.pid, response.exit_status), (42, 137))
        # options.json (the runc root) is JSON, whose decoder needs re (and
        # re, enum and collections).
        self.assertLightweight(
            report["loaded"], needed=("json", "re", "enum", "collections")
        )

    def test_start(self) -> None:
        """
        C{start} binds the socket, writes C{address}, spawns the daemon in a
        new session with the listening socket as fd 3 and C{/dev/null} as
        stdio, returns the address, and loads nothing heavy.
        """
        bundle = makeBundle(self, "c1")
        writeFile(os.path.join(bundle, "config.json"), '{"ociVersion": "1.0.2"}')
        daemon = os.path.join(bundle, "daemon")
        writeFile(daemon, DAEMON_STUB)
        socketDir = os.path.join(shortTemporaryDirectory(self), "s")
        argv = list(START_ARGV)
        argv[argv.index("sx1")] = "c1"
        stdout, stderr = self.runChild(
            START_SCRIPT, [daemon, bundle, socketDir, *argv], bundle
        )
        report = json.loads(stdout)
        expected = socketAddress("/tmp/t/c.sock", "sxref", "c1", socketDir)
        self.assertEqual(report["address"], expected)
        self.assertEqual(readFile(os.path.join(bundle, "address")), expected.encode())
        self.assertLightweight(report["loaded"])

        # One daemon was spawned, and it exited on its own, successfully.
        self.assertEqual(report["exits"], [[True, 0]], stderr)
        with open(os.path.join(bundle, "daemon.json")) as f:
            daemonReport = json.load(f)
        path = expected.removeprefix("unix://")
        self.assertEqual(
            daemonReport,
            {
                "argv": [
                    "-namespace",
                    "sxref",
                    "-id",
                    "c1",
                    "-address",
                    "/tmp/t/c.sock",
                    "-debug",
                ],
                "sessionLeader": True,
                "fd3IsSocket": True,
                "listening": 1,
                "unix": True,
                "socketName": path,
                "stdio": [True, True, True],
                "readyFd": "4",
            },
        )
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(socketDir).st_mode), 0o700)
