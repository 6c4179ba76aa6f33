"""
End-to-end tests of C{ctr run --log-uri}: the shim, not C{ctr}, sends the
container's output to a file (C{file://}) or to a logging program
(C{binary://}, as nerdctl uses it).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e.base import E2EMixin
from tests.e2e.runtimes import GO, SHIMD

LOGGER = """\
#!/bin/sh
# A binary:// logger: stdout on fd 3, stderr on fd 4, readiness on fd 5.
trap '' TERM
here=$(dirname "$0")
echo "$@" > "$here/args"
env > "$here/env"
cat <&3 > "$here/stdout" &
cat <&4 > "$here/stderr" &
echo ready >&5
exec 5>&-
wait
"""

OUTPUT = "echo out1; echo err1 >&2; echo out2"


class LoggingTestsMixin(E2EMixin):
    """
    Container output sent elsewhere than to C{ctr}.
    """

    def makeDirectory(self) -> str:
        """
        A host directory for this test, removed afterwards.
        """
        directory = tempfile.mkdtemp(prefix="shimd-e2e-log-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def read(self, path: str) -> str:
        """
        A file's text.
        """
        with open(path) as f:
            return f.read()

    def test_fileLogURI(self) -> None:
        """
        With C{--log-uri file:///PATH} the shim writes the container's
        stdout and stderr both to PATH (each stream in order); C{ctr} gets
        nothing; the file is complete when C{ctr run --rm} returns.
        """
        path = os.path.join(self.makeDirectory(), "container.log")
        result = self.runContainer(
            "filelog", "/bin/sh", "-c", OUTPUT, options=["--log-uri", f"file://{path}"]
        )
        self.assertEqual((result.code, result.out, result.err), (0, "", ""))
        lines = self.read(path).splitlines()
        self.skipKnownFileLogLoss(lines)
        self.assertEqual(sorted(lines), ["err1", "out1", "out2"])
        self.assertEqual(
            [line for line in lines if line.startswith("out")], ["out1", "out2"]
        )

    def skipKnownFileLogLoss(self, lines: list[str]) -> None:
        """
        Skip when the runtime lost output of a C{file://} log in a way known
        and not ours to fix; shimd loses nothing.
        """

    def test_binaryLogURI(self) -> None:
        """
        With C{--log-uri binary:///PROGRAM?key=value} the shim runs PROGRAM
        with C{key value} as arguments, C{CONTAINER_ID} and
        C{CONTAINER_NAMESPACE} in its environment, the container's stdout on
        fd 3 and stderr on fd 4, and waits for it to signal readiness on fd 5
        before starting the container; on delete it waits for the program
        to exit, so everything is written when C{ctr run --rm} returns.
        """
        directory = self.makeDirectory()
        logger = os.path.join(directory, "logger")
        with open(logger, "w") as f:
            f.write(LOGGER)
        os.chmod(logger, 0o755)
        result = self.runContainer(
            "binlog",
            "/bin/sh",
            "-c",
            OUTPUT,
            options=["--log-uri", f"binary://{logger}?key=value"],
        )
        self.assertEqual((result.code, result.out, result.err), (0, "", ""))
        self.assertEqual(self.read(os.path.join(directory, "args")), "key value\n")
        environment = self.read(os.path.join(directory, "env")).splitlines()
        self.assertIn("CONTAINER_ID=binlog", environment)
        self.assertIn(f"CONTAINER_NAMESPACE={self.namespace.name}", environment)
        self.assertEqual(self.read(os.path.join(directory, "stdout")), "out1\nout2\n")
        self.assertEqual(self.read(os.path.join(directory, "stderr")), "err1\n")


class LoggingTestsGo(LoggingTestsMixin, TestCase):
    runtime = GO

    def skipKnownFileLogLoss(self, lines: list[str]) -> None:
        """
        The Go shim loses stderr of a C{file://} log now and then (about 1
        run in 20 here): its C{copyPipes} gives the stdout copy the file
        itself rather than the closer it shares with stderr, so stdout's end
        closes the file and what stderr still had to copy is dropped
        (C{pkg/process/io.go}, in every containerd from 1.6 to 2.x).
        """
        if "err1" not in lines and sorted(lines) == ["out1", "out2"]:
            raise SkipTest(
                "the Go shim lost stderr of its file:// log: its stdout copy"
                " closed the shared file first (pkg/process/io.go copyPipes)"
            )


class LoggingTestsShimd(LoggingTestsMixin, TestCase):
    runtime = SHIMD
