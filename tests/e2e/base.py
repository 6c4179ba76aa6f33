"""
The base of every end-to-end test: a mixin that skips when the host cannot
run containers, gives the test its own containerd namespace (cleaned up
afterwards, leaks reported), and wraps the C{ctr} commands the tests use.

A test module writes its tests once in a subclass of L{E2EMixin} and derives
one L{TestCase} per runtime::

    class FooTestsMixin(E2EMixin):
        def test_foo(self) -> None: ...

    class FooTestsGo(FooTestsMixin, TestCase):
        runtime = GO

    class FooTestsShimd(FooTestsMixin, TestCase):
        runtime = SHIMD
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, cast

from google.protobuf import any_pb2
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime, IReactorUNIX
from twisted.trial.unittest import SkipTest

from shimd.protos import task_pb2
from shimd.ttrpc.client import ServiceClient, TTRPCClientProtocol, connectTTRPC
from tests.e2e import host
from tests.e2e.containerd import (
    CtrResult,
    PrivateContainerd,
    TestNamespace,
    sharedContainerd,
    uniqueNamespace,
    waitUntil,
)
from tests.e2e.events import Event, EventRecorder
from tests.e2e.rootfs import IMAGE_NAME, busyboxRootfs, ociArchivePath
from tests.e2e.runtimes import SHIMD, Runtime, missingPrerequisites

# The type URL containerd gives the OCI LinuxResources it sends in Update.
LINUX_RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _Base = TestCase
else:
    _Base = object


class E2EMixin(_Base):
    """
    Helpers for a test against a private containerd with one runtime.

    @cvar runtime: the runtime under test, set by each concrete class.
    @ivar containerd: the shared private containerd.
    @ivar namespace: this test's namespace.
    """

    runtime: Runtime
    timeout = 300

    containerd: PrivateContainerd
    namespace: TestNamespace

    def setUp(self) -> None:
        missing = missingPrerequisites(self.runtime)
        if missing:
            raise SkipTest(
                f"end-to-end test of {self.runtime.binaryName} needs: "
                + ", ".join(missing)
            )
        self.containerd = self.makeContainerd()
        self._logStart = self.containerd.logOffset()
        self.namespace = TestNamespace(
            self.containerd, uniqueNamespace(self.runtime.name)
        )
        self.addCleanup(self.namespace.cleanUp)
        self.assertCtr(self.ctr("namespaces", "create", self.namespace.name))

    def makeContainerd(self) -> PrivateContainerd:
        """
        The containerd this test runs against: the shared one. A test that
        stops or restarts containerd may override this to start one of its
        own (and register its C{destroy} as a cleanup, so that it runs after
        the namespace's).
        """
        return sharedContainerd()

    # Diagnostics

    def containerdLog(self, lines: int = 80) -> str:
        """
        The last C{lines} lines containerd logged since this test began
        (shim log lines included).
        """
        return "\n".join(self.containerd.log(self._logStart).splitlines()[-lines:])

    def assertCtr(self, result: CtrResult, code: int = 0, what: str = "") -> None:
        """
        Fail, with the command's output and containerd's log, unless C{ctr}
        exited with C{code}.
        """
        if result.code != code:
            self.fail(
                f"{what or 'ctr'}: expected exit code {code}, got {result.code}\n"
                f"stdout: {result.out!r}\nstderr: {result.err!r}\n"
                f"containerd log:\n{self.containerdLog()}"
            )

    # ctr

    def ctr(
        self, *args: str, input: bytes | str | None = None, timeout: float = 30.0
    ) -> CtrResult:
        """
        Run C{ctr} in this test's namespace.
        """
        return self.namespace.ctr(*args, input=input, timeout=timeout)

    def runtimeOptions(self, runtimeArgument: str | None = None) -> list[str]:
        """
        The C{ctr run} options selecting the runtime under test, by
        C{runtimeArgument} if given.
        """
        return ["--runtime", runtimeArgument or self.runtime.runtimeArgument]

    def runContainer(
        self,
        containerID: str,
        *command: str,
        options: Sequence[str] = (),
        input: bytes | str | None = None,
        timeout: float = 60.0,
    ) -> CtrResult:
        """
        C{ctr run --rm} a busybox container (C{--rootfs}) to completion.
        """
        self.namespace.ids.add(containerID)
        return self.ctr(
            "run",
            "--rm",
            *self.runtimeOptions(),
            *options,
            "--rootfs",
            busyboxRootfs(),
            containerID,
            *command,
            input=input,
            timeout=timeout,
        )

    def importImage(self) -> str:
        """
        Import the busybox OCI image into this namespace.

        @return: its name.
        """
        self.assertCtr(
            self.ctr("images", "import", ociArchivePath(), timeout=120),
            what="ctr images import",
        )
        return IMAGE_NAME

    def runDetached(
        self,
        containerID: str,
        *command: str,
        options: Sequence[str] = (),
        image: str | None = None,
        runtimeArgument: str | None = None,
    ) -> int:
        """
        C{ctr run -d} a busybox container from C{image}, or from the busybox
        rootfs directory when L{None}, and wait until it is running.

        @param runtimeArgument: C{--runtime} to use instead of the runtime's
            usual one.

        @return: the pid of its init process.
        """
        self.namespace.ids.add(containerID)
        source = [image] if image else ["--rootfs", busyboxRootfs()]
        result = self.ctr(
            "run",
            "-d",
            *self.runtimeOptions(runtimeArgument),
            *options,
            *source,
            containerID,
            *command,
        )
        self.assertCtr(result, what=f"ctr run -d {containerID}")
        self.assertEqual(result.out, "", "ctr run -d prints nothing")
        return self.waitForStatus(containerID, "RUNNING")

    def taskStatus(self, containerID: str) -> tuple[int, str] | None:
        """
        C{(pid, status)} of a task as C{ctr task ls} shows it, or L{None}.
        """
        return self.namespace.tasks().get(containerID)

    def statusOf(self, containerID: str) -> str:
        """
        The status of a task as C{ctr task ls} shows it (C{RUNNING} etc.),
        or C{MISSING}.
        """
        return self.namespace.tasks().get(containerID, (0, "MISSING"))[1]

    def waitForStatus(self, containerID: str, status: str, timeout: float = 30) -> int:
        """
        Poll C{ctr task ls} until the task has C{status}.

        @return: its pid.
        """

        def reached() -> int | None:
            current = self.taskStatus(containerID)
            return current[0] if current and current[1] == status else None

        try:
            return waitUntil(reached, timeout, f"{containerID} to be {status}", 0.1)
        except AssertionError as e:
            self.fail(
                f"{e}: task is {self.taskStatus(containerID)}\n"
                f"containerd log:\n{self.containerdLog()}"
            )

    def execute(
        self,
        containerID: str,
        execID: str,
        *command: str,
        timeout: float = 30.0,
    ) -> CtrResult:
        """
        C{ctr task exec --exec-id EXECID} to completion.
        """
        return self.ctr(
            "task", "exec", "--exec-id", execID, containerID, *command, timeout=timeout
        )

    def killAndDelete(self, containerID: str) -> CtrResult:
        """
        SIGKILL a task, wait until it is stopped, delete it and its
        container.

        @return: the result of C{ctr task rm}.
        """
        self.assertCtr(
            self.ctr("task", "kill", "-s", "SIGKILL", containerID), what="ctr task kill"
        )
        self.waitForStatus(containerID, "STOPPED")
        result = self.ctr("task", "rm", containerID)
        self.assertCtr(result, what="ctr task rm")
        self.assertCtr(self.ctr("containers", "rm", containerID), what="ctr c rm")
        return result

    def recordEvents(self) -> EventRecorder:
        """
        Start recording this namespace's events (stopped at cleanup).
        """
        recorder = EventRecorder(self.namespace)
        self.addCleanup(recorder.stop)
        recorder.start()
        return recorder

    def waitForTaskDelete(
        self, events: EventRecorder, containerID: str, timeout: float = 30.0
    ) -> Event:
        """
        Wait for the C{/tasks/delete} the shim publishes about
        C{containerID}, the last event of its task.

        The Go shim of containerd 1.7 and 2.x loses it now and then (about 1
        run in 5 with containerd 2.1.9 beside a running suite): its C{Delete}
        queues the event for a goroutine that forwards it, and after
        C{Shutdown} the process exits once its shutdown callbacks have run,
        without waiting for that goroutine
        (C{cmd/containerd-shim-runc-v2/task/service.go}, C{pkg/shim/shim.go}
        since containerd PR 9230). shimd publishes every event before it
        exits.
        """
        return self._waitForTaskEvent(
            events,
            containerID,
            "/tasks/delete",
            self.runtime.losesTaskDelete,
            "it does not wait for its event forwarder at shutdown",
            timeout,
        )

    def waitForOOM(
        self, events: EventRecorder, containerID: str, timeout: float = 30.0
    ) -> Event:
        """
        Wait for the C{/tasks/oom} the shim publishes about C{containerID}.

        The Go shim misses it now and then on cgroup v2, with the cgroupfs
        driver as with systemd's (CI lost it once with containerd 2.1.9's,
        for a container killed at 32 MiB): it watches C{memory.events} from
        C{Start} on, and a container that the kernel kills before the watch
        is armed, or whose cgroup is gone before the watcher reads the file,
        leaves no event (containerd issue 8893; pull requests 12405 and
        12714 of containerd 2.3 arm it at C{Create} and send it before the
        exit). shimd arms its watch at C{Create}.
        """
        return self._waitForTaskEvent(
            events,
            containerID,
            "/tasks/oom",
            self.runtime.losesOOM,
            "its known race (containerd issue 8893, pull requests 12405 and 12714)",
            timeout,
        )

    def _waitForTaskEvent(
        self,
        events: EventRecorder,
        containerID: str,
        topic: str,
        knownLoss: bool,
        cause: str,
        timeout: float,
    ) -> Event:
        """
        Wait for the shim's C{topic} about C{containerID}. When it never
        comes, a runtime known to lose it (C{knownLoss}) whose task exit was
        seen has the test skip, saying C{cause}; any other runtime (shimd)
        fails it.
        """
        try:
            return events.waitForTopic(containerID, topic, timeout)
        except AssertionError:
            if not (knownLoss and "/tasks/exit" in events.topics(containerID)):
                raise
            raise SkipTest(
                f"{self.runtime.binaryName} lost {topic} of {containerID}: {cause}"
            ) from None

    def assertOOMBeforeExit(self, events: EventRecorder, containerID: str) -> None:
        """
        For shimd, C{/tasks/oom} came before the C{/tasks/exit} of the
        process the kernel killed: it reads the kill count when it reaps.
        (The Go shim orders them only from containerd 2.3 on.)
        """
        if self.runtime is not SHIMD:
            return
        topics = events.topics(containerID)
        self.assertLess(topics.index("/tasks/oom"), topics.index("/tasks/exit"), topics)

    def shimProcesses(self, containerID: str | None = None) -> list[int]:
        """
        Live shim processes in this namespace (of the task or group
        C{containerID}, if given): processes of the runtime under test whose
        command line names them, and processes working in their bundle
        directories (however their command line looks).
        """
        found = set(self.runtime.shimProcesses(self.namespace.name, containerID))
        if containerID is None:
            directory = os.path.dirname(self.bundle("x"))
            found.update(host.processesWorkingIn(directory, below=True))
        else:
            found.update(host.processesWorkingIn(self.bundle(containerID)))
        return sorted(found)

    def bundle(self, containerID: str) -> str:
        """
        The bundle directory of a task of this namespace.
        """
        return self.containerd.bundlePath(self.namespace.name, containerID)

    def readBundleFile(self, containerID: str, name: str) -> str:
        """
        The content of a file of a task's bundle.
        """
        with open(os.path.join(self.bundle(containerID), name)) as f:
            return f.read()

    def shimAddressOf(self, containerID: str) -> str:
        """
        The address of the shim serving a task, from its bundle.
        """
        return host.bundleShimAddress(self.bundle(containerID))

    def taskClient(
        self, protocol: TTRPCClientProtocol, containerID: str
    ) -> ServiceClient:
        """
        A client of the task service on a connection to a task's shim, in
        the version of the task API the shim serves.
        """
        return ServiceClient(
            protocol,
            task_pb2.DESCRIPTOR.services_by_name["Task"],
            name=host.bundleTaskService(self.bundle(containerID)),
        )

    @inlineCallbacks
    def updateResources(
        self, containerID: str, resources: dict[str, Any]
    ) -> Generator[Deferred[Any], Any, None]:
        """
        Send C{Update} to a task's shim as containerd sends it: the OCI
        C{LinuxResources} as JSON in an C{Any}. ctr has no C{task update}
        (neither 1.6 nor 2.1), so the tests talk to the shim's socket.

        @param resources: the C{LinuxResources} object, such as
            C{{"memory": {"limit": N}}}.
        """
        protocol = yield connectTTRPC(
            cast(IReactorUNIX, reactor),
            cast(IReactorTime, reactor),
            self.shimAddressOf(containerID),
        )
        try:
            yield self.taskClient(protocol, containerID).call(
                "Update",
                task_pb2.UpdateTaskRequest(
                    id=containerID,
                    resources=any_pb2.Any(
                        type_url=LINUX_RESOURCES_URL,
                        value=json.dumps(resources).encode(),
                    ),
                ),
                timeout=30,
            )
        finally:
            protocol.transport.loseConnection()
            yield protocol.whenClosed

    def containerCgroup(self, containerID: str) -> str:
        """
        The cgroup path ctr gives a container: C{/NAMESPACE/ID}.
        """
        return f"/{self.namespace.name}/{containerID}"

    def processesOf(self, containerID: str) -> list[int]:
        """
        Live processes in the container's cgroup.
        """
        return host.processesInCgroup(self.containerCgroup(containerID))


class TerminalResult:
    """
    What a command run on a pseudo-terminal did.

    @ivar output: every byte it wrote to the terminal.
    @ivar code: its exit code (negative: killed by that signal).
    """

    def __init__(self, output: bytes, code: int) -> None:
        self.output = output
        self.code = code

    def __repr__(self) -> str:
        return f"TerminalResult(output={self.output!r}, code={self.code})"


def runOnTerminal(
    argv: Sequence[str],
    env: dict[str, str],
    timeout: float = 30.0,
    rows: int = 24,
    columns: int = 80,
) -> TerminalResult:
    """
    Run C{argv} with a new pseudo-terminal as its controlling terminal and
    stdin, stdout and stderr, and collect everything it writes there.

    The terminal starts in raw mode without C{ONLCR}, so its output is
    exactly the bytes the program wrote.

    @raise AssertionError: after killing the program, if it runs longer
        than C{timeout} seconds.
    """
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            attributes = termios.tcgetattr(0)
            attributes[0] = 0
            attributes[1] &= ~(termios.OPOST | termios.ONLCR)
            attributes[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG)
            termios.tcsetattr(0, termios.TCSANOW, attributes)
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            os.execvpe(argv[0], list(argv), env)
        finally:
            os._exit(127)
    output: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(
                    f"{' '.join(argv)} on a terminal did not finish in {timeout} s;"
                    f" output {b''.join(output)!r}"
                )
            ready, _, _ = select.select([master], [], [], remaining)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError as e:
                if e.errno == errno.EIO:
                    break
                raise
            if not data:
                break
            output.append(data)
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return TerminalResult(b"".join(output), os.waitstatus_to_exitcode(status))


class Watchdog:
    """
    Kill a process that runs longer than a bound.
    """

    def __init__(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        self.fired = False
        self._process = process
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        self._process.kill()

    def cancel(self) -> None:
        self._timer.cancel()
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
