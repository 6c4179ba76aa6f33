# -*- test-case-name: tests.test_task_service -*-
"""
Tests for L{shimd.runc.task.service} and L{shimd.runc.task.container}: the
C{containerd.task.v2.Task} handlers, called directly with request messages,
against runc faked by expectation (L{tests.fakes.FakeRunc}), a real
L{shimd.shim.reaper.Reaper} fed by a fake kernel, and a recording publisher.

Each test states the runc command lines it expects, in order; a command that
was not expected, or an expected one that did not run, fails the test.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import Message
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from shimd.interfaces import (
    IMounter,
    IOCIRuntime,
    IOCIRuntimeFactory,
    IPublisher,
    IReaper,
    IShutdown,
    ITTRPCService,
)
from shimd.protos import (
    events_pb2,
    mount_pb2,
    runc_options_pb2,
    task_pb2,
    task_types_pb2,
)
from shimd.runc import mount
from shimd.runc.cgroups.errors import CgroupError, CgroupNotFound
from shimd.runc.client import RuncRuntime
from shimd.runc.plugins import (
    RUNTIME_PLUGIN,
    Mounter,
    mounterPlugin,
    reaperPlugin,
    runtimeID,
)
from shimd.runc.task.container import DRAIN_TIMEOUT, Environment
from shimd.runc.task.ordering import EXEC_EXIT_WAIT
from shimd.runc.task.process import GO_ZERO_TIME_SECONDS
from shimd.runc.task.service import TaskService, taskPlugin
from shimd.shim.config import ShimConfig
from shimd.shim.plugin import EVENT_PLUGIN, INTERNAL_PLUGIN, PluginContext
from shimd.ttrpc.server import CallContext
from shimd.ttrpc.status import Code, TTRPCError
from tests.fakes import (
    ExpectRunc,
    FakeCgroup,
    FakeIO,
    FakeIOFactory,
    FakeKernel,
    FakeMounts,
    FakeOOMWatcher,
    FakePublisher,
    FakeRunc,
    FakeShutdown,
    FakeV2Cgroup,
    RuncCall,
    StartingWith,
    argumentAfter,
    writeBundle,
)

NAMESPACE = "default"
ROOT = f"/run/containerd/runc/{NAMESPACE}"
CONTEXT = CallContext(
    service="containerd.task.v2.Task",
    method="Test",
    streamID=1,
    metadata={},
    timeout=None,
)
SIGKILL = 9


def splitNanoseconds(nanoseconds: int) -> tuple[int, int]:
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    return seconds, nanos


def timestampOf(message: Any) -> tuple[int, int]:
    return message.seconds, message.nanos


class TaskServiceTestCase(SynchronousTestCase):
    """
    A L{TaskService} on fakes, and helpers to drive it.

    @ivar runc: the fake runc; tests add their expectations to it.
    @ivar kernel: delivers exits to the service's reaper.
    @ivar publisher: records the events.
    @ivar stdio: makes the processes' L{FakeIO}s.
    @ivar mounts: records rootfs mounts.
    @ivar cgroups: the cgroup L{shimd.runc.cgroups.load.loadCgroup} gives each pid.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.runc = FakeRunc()
        self.addCleanup(self.runc.verify)
        self.kernel = FakeKernel()
        self.publisher = FakePublisher()
        self.shutdown = FakeShutdown()
        self.mounts = FakeMounts()
        self.stdio = FakeIOFactory()
        self.cgroups: dict[int, Any] = {}
        self.killed: list[tuple[int, int]] = []
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.runtimeDirectory = os.path.join(self.root, "xdg")
        os.makedirs(self.runtimeDirectory)
        self.setEnvironment("XDG_RUNTIME_DIR", self.runtimeDirectory)
        self.oomWatcher = FakeOOMWatcher()
        self.environment = Environment(
            reactor=self.reactor,
            namespace=NAMESPACE,
            reaper=self.kernel.reaper,
            runtime=RuncRuntime(self.runc, which=self.which),
            mounter=self.mounts,
            spawn=self.runc,
            createIO=self.stdio,
            loadCgroup=self.loadCgroup,
            publish=self.publisher.publish,
            oomWatcher=self.oomWatcher,
        )
        self.service = TaskService(self.environment, self.publisher, self.shutdown)
        self.environment.onOOM = self.service.publishOOM

    # -- fixtures ---------------------------------------------------------

    def setEnvironment(self, name: str, value: str | None) -> None:
        """
        Set (or unset) an environment variable for the test's duration.
        """
        old = os.environ.get(name)

        def restore() -> None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old

        self.addCleanup(restore)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def loadCgroup(self, pid: int) -> Any:
        try:
            return self.cgroups[pid]
        except KeyError:
            raise CgroupNotFound(f"process {pid} not found") from None

    @staticmethod
    def which(binary: str) -> str:
        return binary if os.path.isabs(binary) else f"/usr/sbin/{binary}"

    def fakeKill(self, vanished: Sequence[int] = ()) -> None:
        """
        Replace C{os.kill} for the test: it records, and fails with
        C{ESRCH} for the pids in C{vanished}.
        """

        def kill(pid: int, signal: int) -> None:
            if pid in vanished:
                raise ProcessLookupError(pid)
            self.killed.append((pid, signal))

        self.patch(os, "kill", kill)

    def bundle(self, id: str = "c1", pidNamespace: bool = True) -> str:
        return writeBundle(os.path.join(self.root, id), pidNamespace)

    def runcArgv(
        self, bundle: str, *arguments: str | StartingWith, binary: str = "runc"
    ) -> list[str | StartingWith]:
        """
        A runc command line with the global flags the shim gives every
        command: C{--root}, C{--log <bundle>/log.json}, C{--log-format json}.
        """
        return [
            binary,
            "--root",
            ROOT,
            "--log",
            os.path.join(bundle, "log.json"),
            "--log-format",
            "json",
            *arguments,
        ]

    def expect(self, bundle: str, *arguments: str | StartingWith) -> ExpectRunc:
        """
        Expect the next runc command to be C{arguments} after the global
        flags, for the container of C{bundle}.
        """
        expectation = ExpectRunc(*self.runcArgv(bundle, *arguments))
        self.runc.expect(expectation)
        return expectation

    def expectCreate(
        self, bundle: str, id: str = "c1", terminal: bool = False
    ) -> ExpectRunc:
        console = ["--console-socket", "/run/fake-console/pty.sock"] if terminal else []
        return self.expect(
            bundle,
            "create",
            "--bundle",
            bundle,
            "--pid-file",
            os.path.join(bundle, "init.pid"),
            *console,
            id,
        )

    def expectExec(
        self, bundle: str, execID: str = "e1", id: str = "c1", terminal: bool = False
    ) -> ExpectRunc:
        console = ["--console-socket", "/run/fake-console/pty.sock"] if terminal else []
        return self.expect(
            bundle,
            "exec",
            "--process",
            StartingWith(os.path.join(self.runtimeDirectory, "runc-process")),
            *console,
            "--detach",
            "--pid-file",
            os.path.join(bundle, f"{execID}.pid"),
            id,
        )

    # -- calls ------------------------------------------------------------

    def call(self, method: Callable[[Any, CallContext], Any], request: Message) -> Any:
        """
        Call a handler as the ttrpc server does: its result, or its error,
        as a Deferred.
        """
        return maybeDeferred(method, request, CONTEXT)

    def succeed(
        self, method: Callable[[Any, CallContext], Any], request: Message
    ) -> Any:
        """
        Call a handler that must reply at once, successfully.
        """
        return self.successResultOf(self.call(method, request))

    def assertFails(self, result: Deferred[Any], code: Code, message: str) -> None:
        """
        C{result} has failed with a L{TTRPCError} of C{code} and C{message}.
        """
        failure = self.failureResultOf(result, TTRPCError)
        error = failure.value
        assert isinstance(error, TTRPCError)
        self.assertEqual((error.code, error.message), (code, message))

    def assertCallFails(
        self,
        method: Callable[[Any, CallContext], Any],
        request: Message,
        code: Code,
        message: str,
    ) -> None:
        self.assertFails(self.call(method, request), code, message)

    def create(
        self,
        id: str = "c1",
        pid: int = 100,
        pidNamespace: bool = True,
        **fields: Any,
    ) -> str:
        """
        Create a container whose init gets C{pid}.

        @return: its bundle.
        """
        bundle = self.bundle(id, pidNamespace)
        self.expectCreate(bundle, id, fields.get("terminal", False)).pid(pid)
        response = self.succeed(
            self.service.Create,
            task_pb2.CreateTaskRequest(id=id, bundle=bundle, **fields),
        )
        self.assertEqual(response.pid, pid)
        return bundle

    def start(self, bundle: str, id: str = "c1") -> None:
        self.expect(bundle, "start", id)
        self.succeed(self.service.Start, task_pb2.StartRequest(id=id))

    def runContainer(
        self, id: str = "c1", pid: int = 100, pidNamespace: bool = True, **fields: Any
    ) -> str:
        """
        Create and start a container.

        @return: its bundle.
        """
        bundle = self.create(id, pid, pidNamespace, **fields)
        self.start(bundle, id)
        return bundle

    def addExec(
        self,
        id: str = "c1",
        execID: str = "e1",
        spec: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        document = spec if spec is not None else {"args": ["sh"], "cwd": "/"}
        self.succeed(
            self.service.Exec,
            task_pb2.ExecProcessRequest(
                id=id,
                exec_id=execID,
                spec=AnyMessage(
                    type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                    value=json.dumps(document).encode(),
                ),
                **fields,
            ),
        )

    def startExec(
        self, bundle: str, id: str = "c1", execID: str = "e1", pid: int = 200
    ) -> None:
        """
        Add and start an exec whose process gets C{pid}.
        """
        self.addExec(id, execID)
        self.expectExec(bundle, execID, id).pid(pid)
        response = self.succeed(
            self.service.Start, task_pb2.StartRequest(id=id, exec_id=execID)
        )
        self.assertEqual(response.pid, pid)

    def state(self, id: str = "c1", execID: str = "") -> task_pb2.StateResponse:
        response = self.succeed(
            self.service.State, task_pb2.StateRequest(id=id, exec_id=execID)
        )
        assert isinstance(response, task_pb2.StateResponse)
        return response

    def status(self, id: str = "c1", execID: str = "") -> int:
        return self.state(id, execID).status

    def wait(self, id: str = "c1", execID: str = "") -> Deferred[Any]:
        result: Deferred[Any] = self.call(
            self.service.Wait, task_pb2.WaitRequest(id=id, exec_id=execID)
        )
        return result

    def events(self, topic: str) -> list[Any]:
        return [event for t, event in self.publisher.events if t == topic]

    def io(self, index: int = 0) -> FakeIO:
        return self.stdio.ios[index]

    def lastCall(self) -> RuncCall:
        return self.runc.calls[-1]


class CreateTests(TaskServiceTestCase):
    """
    C{Create}: option decoding, the bundle's files, rootfs mounts, the
    C{runc create} command line, errors, and C{/tasks/create}.
    """

    def test_createArgv(self) -> None:
        """
        C{Create} runs C{runc create --bundle B --pid-file B/init.pid ID}
        after the global flags (C{--root <root>/<namespace>}, the bundle's
        C{log.json} in JSON), with the process's stdio as its fds, and
        replies with the pid runc wrote; the init is then created.
        """
        bundle = self.create("c1", pid=4242)
        call = self.runc.calls[0]
        self.assertEqual(call.executable, "/usr/sbin/runc")
        self.assertEqual(call.childFDs, self.io().runcStdio)
        self.assertEqual(
            self.io().calls, ["prepare", "spawned", "attach"], "stdio life"
        )
        state = self.state()
        self.assertEqual(
            (state.id, state.bundle, state.pid, state.status),
            ("c1", bundle, 4242, task_types_pb2.CREATED),
        )

    def test_createEvent(self) -> None:
        """
        C{/tasks/create} carries the container id, the bundle, the rootfs
        mounts, the stdio as requested and the pid.
        """
        rootfs = [
            mount_pb2.Mount(type="overlay", source="overlay", options=["lowerdir=/l"]),
            mount_pb2.Mount(type="bind", source="/src", options=["rbind", "rw"]),
        ]
        bundle = self.create(
            "c1",
            pid=101,
            rootfs=rootfs,
            stdin="/fifo/in",
            stdout="/fifo/out",
            stderr="/fifo/err",
        )
        expected = events_pb2.TaskCreate(
            container_id="c1",
            bundle=bundle,
            rootfs=rootfs,
            io=events_pb2.TaskIO(
                stdin="/fifo/in", stdout="/fifo/out", stderr="/fifo/err"
            ),
            pid=101,
        )
        self.assertEqual(self.publisher.events, [("/tasks/create", expected)])

    def test_terminal(self) -> None:
        """
        With a terminal, runc gets the console socket after the pid file,
        and C{/tasks/create} says C{terminal}.
        """
        bundle = self.bundle()
        self.runc.expect(
            ExpectRunc(
                *self.runcArgv(
                    bundle,
                    "create",
                    "--bundle",
                    bundle,
                    "--pid-file",
                    os.path.join(bundle, "init.pid"),
                    "--console-socket",
                    "/run/fake-console/pty.sock",
                    "c1",
                )
            ).pid(100)
        )
        self.succeed(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1", bundle=bundle, terminal=True, stdout="/fifo/out"
            ),
        )
        self.assertTrue(self.io().terminal)
        [event] = self.events("/tasks/create")
        self.assertTrue(event.io.terminal)
        self.assertTrue(self.state().terminal)

    def test_noOptions(self) -> None:
        """
        Without options, C{options.json} is C{{}} and C{runtime} is empty,
        both mode 0600, as Go writes them.
        """
        bundle = self.create()
        for name, content in (("options.json", b"{}"), ("runtime", b"")):
            path = os.path.join(bundle, name)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), content)
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_optionsJSON(self) -> None:
        """
        C{options.json} is Go's JSON of the options: their JSON names, in
        field order, without the unset ones and without spaces.
        """
        options = runc_options_pb2.Options(
            no_new_keyring=True, root="/run/containerd/runc-sx"
        )
        bundle = self.bundle()
        self.runc.expect(
            ExpectRunc(
                "runc",
                "--root",
                f"/run/containerd/runc-sx/{NAMESPACE}",
                "--log",
                os.path.join(bundle, "log.json"),
                "--log-format",
                "json",
                "create",
                "--bundle",
                bundle,
                "--pid-file",
                os.path.join(bundle, "init.pid"),
                "--no-new-keyring",
                "c1",
            ).pid(100)
        )
        self.succeed(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1",
                bundle=bundle,
                options=AnyMessage(
                    type_url="containerd.runc.v1.Options",
                    value=options.SerializeToString(),
                ),
            ),
        )
        path = os.path.join(bundle, "options.json")
        with open(path, "rb") as f:
            self.assertEqual(
                f.read(), b'{"no_new_keyring":true,"root":"/run/containerd/runc-sx"}'
            )
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_allOptions(self) -> None:
        """
        C{binary_name} is the executable and argv[0], C{root} the parent of
        C{--root}, C{criu_path} gives C{--criu} and C{systemd_cgroup}
        C{--systemd-cgroup} (global flags, in go-runc's order);
        C{no_pivot_root} and C{no_new_keyring} are create flags; the
        C{runtime} file holds the binary name; the stdio gets the io owner.
        """
        options = runc_options_pb2.Options(
            no_pivot_root=True,
            no_new_keyring=True,
            io_uid=1000,
            io_gid=1001,
            binary_name="/opt/bin/crun",
            root="/run/other",
            criu_path="/opt/bin/criu",
            systemd_cgroup=True,
        )
        bundle = self.bundle()
        self.runc.expect(
            ExpectRunc(
                "/opt/bin/crun",
                "--root",
                f"/run/other/{NAMESPACE}",
                "--log",
                os.path.join(bundle, "log.json"),
                "--log-format",
                "json",
                "--criu",
                "/opt/bin/criu",
                "--systemd-cgroup",
                "create",
                "--bundle",
                bundle,
                "--pid-file",
                os.path.join(bundle, "init.pid"),
                "--no-pivot",
                "--no-new-keyring",
                "c1",
            ).pid(100)
        )
        self.succeed(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1",
                bundle=bundle,
                options=AnyMessage(
                    type_url="containerd.runc.v1.Options",
                    value=options.SerializeToString(),
                ),
            ),
        )
        self.assertEqual(self.runc.calls[0].executable, "/opt/bin/crun")
        with open(os.path.join(bundle, "runtime"), "rb") as f:
            self.assertEqual(f.read(), b"/opt/bin/crun")
        with open(os.path.join(bundle, "options.json"), "rb") as f:
            self.assertEqual(
                json.loads(f.read()),
                {
                    "no_pivot_root": True,
                    "no_new_keyring": True,
                    "io_uid": 1000,
                    "io_gid": 1001,
                    "binary_name": "/opt/bin/crun",
                    "root": "/run/other",
                    "criu_path": "/opt/bin/criu",
                    "systemd_cgroup": True,
                },
            )
        self.assertEqual((self.io().ioUID, self.io().ioGID), (1000, 1001))

    def test_runtimeOptionsFile(self) -> None:
        """
        A C{runtimeoptions.v1.Options} (what containerd's CRI plugin sends
        for a runtime type other than its runc ones) names a TOML file of
        runc options by containerd's names; they are used as if sent
        directly.
        """
        config = os.path.join(self.root, "runc.toml")
        with open(config, "w") as f:
            f.write('BinaryName = "/opt/bin/runc2"\nRoot = "/run/other"\n')
        bundle = self.bundle()
        self.runc.expect(
            ExpectRunc(
                "/opt/bin/runc2",
                "--root",
                f"/run/other/{NAMESPACE}",
                "--log",
                os.path.join(bundle, "log.json"),
                "--log-format",
                "json",
                "create",
                "--bundle",
                bundle,
                "--pid-file",
                os.path.join(bundle, "init.pid"),
                "c1",
            ).pid(100)
        )
        wrapper = AnyMessage(
            type_url="runtimeoptions.v1.Options",
            value=b"\x12" + bytes([len(config)]) + config.encode(),
        )
        self.succeed(
            self.service.Create,
            task_pb2.CreateTaskRequest(id="c1", bundle=bundle, options=wrapper),
        )
        with open(os.path.join(bundle, "options.json"), "rb") as f:
            self.assertEqual(
                json.loads(f.read()),
                {"binary_name": "/opt/bin/runc2", "root": "/run/other"},
            )

    def test_runtimeOptionsFileUnusable(self) -> None:
        """
        An options file that is missing or sets an unknown option fails the
        C{Create} with INVALID_ARGUMENT naming it.
        """
        config = os.path.join(self.root, "bad.toml")
        with open(config, "w") as f:
            f.write("Frobnicate = true\n")
        bundle = self.bundle()
        for path, reason in ((config, "unknown option Frobnicate"), ("/nope", "/nope")):
            wrapper = AnyMessage(
                type_url="runtimeoptions.v1.Options",
                value=b"\x12" + bytes([len(path)]) + path.encode(),
            )
            result = self.call(
                self.service.Create,
                task_pb2.CreateTaskRequest(id="c1", bundle=bundle, options=wrapper),
            )
            error = self.failureResultOf(result, TTRPCError).value
            self.assertEqual(error.code, Code.INVALID_ARGUMENT)
            self.assertIn(reason, error.message)

    def test_unknownOptionsType(self) -> None:
        """
        Options of any other type fail with UNKNOWN C{type with url X: not
        found}, before anything is written or run.
        """
        bundle = self.bundle()
        self.assertCallFails(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1",
                bundle=bundle,
                options=AnyMessage(type_url="containerd.runc.v1.Nope", value=b""),
            ),
            Code.UNKNOWN,
            "type with url containerd.runc.v1.Nope: not found",
        )
        self.assertEqual(sorted(os.listdir(bundle)), ["config.json"])

    def test_rootfsMounted(self) -> None:
        """
        The rootfs mounts are mounted, in order, on C{<bundle>/rootfs},
        which is created, before runc runs.
        """
        bundle = self.bundle()
        rootfsMounts: list[Any] = []
        self.expectCreate(bundle).pid(100).do(
            lambda call: rootfsMounts.extend(self.mounts.calls)
        )
        self.succeed(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1",
                bundle=bundle,
                rootfs=[
                    mount_pb2.Mount(type="overlay", source="overlay", options=["a"]),
                    mount_pb2.Mount(type="bind", source="/x", options=["rbind"]),
                ],
            ),
        )
        rootfs = os.path.join(bundle, "rootfs")
        expected = [
            (
                "mount",
                [("overlay", "overlay", ["a"]), ("bind", "/x", ["rbind"])],
                rootfs,
            )
        ]
        self.assertEqual(rootfsMounts, expected)
        self.assertEqual(self.mounts.calls, expected)
        self.assertTrue(os.path.isdir(rootfs))

    def test_noRootfsNoMount(self) -> None:
        """
        Without rootfs mounts nothing is mounted or made.
        """
        bundle = self.create()
        self.assertEqual(self.mounts.calls, [])
        self.assertFalse(os.path.exists(os.path.join(bundle, "rootfs")))

    def test_runcFailure(self) -> None:
        """
        When runc fails, C{Create} fails with UNKNOWN C{OCI runtime create
        failed: <the last error in log.json>}; the rootfs is unmounted, the
        stdio closed, no event published, and no container is left.
        """
        bundle = self.bundle()
        self.expectCreate(bundle).logError("first error").logError(
            "runc create failed: container with given ID already exists"
        ).exit(1)
        self.assertCallFails(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1",
                bundle=bundle,
                rootfs=[mount_pb2.Mount(type="bind", source="/x", options=["rbind"])],
            ),
            Code.UNKNOWN,
            "OCI runtime create failed: runc create failed: "
            "container with given ID already exists",
        )
        rootfs = os.path.join(bundle, "rootfs")
        self.assertEqual(
            self.mounts.calls,
            [("mount", [("bind", "/x", ["rbind"])], rootfs), ("unmount", rootfs)],
        )
        self.assertEqual(self.io().calls[-1], "close")
        self.assertEqual(self.publisher.events, [])
        self.assertCallFails(
            self.service.State,
            task_pb2.StateRequest(id="c1"),
            Code.NOT_FOUND,
            "container not created: not found",
        )

    def test_runcFailureWithoutLog(self) -> None:
        """
        When runc logged no error, the error gives its exit status.
        """
        bundle = self.bundle()
        self.expectCreate(bundle).exit(3)
        self.assertCallFails(
            self.service.Create,
            task_pb2.CreateTaskRequest(id="c1", bundle=bundle),
            Code.UNKNOWN,
            "OCI runtime create failed: runc did not terminate successfully: "
            "exit status 3",
        )

    def test_noPidFile(self) -> None:
        """
        When runc succeeds without writing the pid file, C{Create} fails with
        UNKNOWN (not the NOT_FOUND of a bare ENOENT) and cleans up.
        """
        bundle = self.bundle()
        self.expectCreate(bundle)
        result = self.call(
            self.service.Create, task_pb2.CreateTaskRequest(id="c1", bundle=bundle)
        )
        failure = self.failureResultOf(result, TTRPCError)
        error = failure.value
        assert isinstance(error, TTRPCError)
        self.assertEqual(error.code, Code.UNKNOWN)
        self.assertTrue(
            error.message.startswith("failed to retrieve OCI runtime pid: "),
            error.message,
        )
        self.assertEqual(self.io().calls[-1], "close")
        self.assertEqual(self.publisher.events, [])

    def test_mountFailure(self) -> None:
        """
        A rootfs mount that fails makes C{Create} fail with Go's text, before
        runc runs.
        """
        bundle = self.bundle()
        self.mounts.mountError = mount.MountError(
            22,
            "invalid argument",
            target=os.path.join(bundle, "rootfs"),
            description="&{bind /x [rbind]}",
        )
        self.assertCallFails(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1",
                bundle=bundle,
                rootfs=[mount_pb2.Mount(type="bind", source="/x", options=["rbind"])],
            ),
            Code.UNKNOWN,
            "failed to mount rootfs component &{bind /x [rbind]}: invalid argument",
        )
        self.assertEqual(self.publisher.events, [])

    def test_stdioFailure(self) -> None:
        """
        Stdio that cannot be made fails C{Create} with UNKNOWN, unmounts the
        rootfs and runs no runc.
        """
        bundle = self.bundle()
        self.stdio.failWith = "unknown STDIO scheme nope"
        self.assertCallFails(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1",
                bundle=bundle,
                stdout="nope://x",
                rootfs=[mount_pb2.Mount(type="bind", source="/x", options=["rbind"])],
            ),
            Code.UNKNOWN,
            "failed to create process I/O: unknown STDIO scheme nope",
        )
        self.assertEqual(self.mounts.calls[-1], ("unmount", f"{bundle}/rootfs"))

    def test_attachFailure(self) -> None:
        """
        When the stdio cannot be connected after runc create, C{Create}
        fails, the stdio is closed and no C{/tasks/create} is published.
        """
        from shimd.runc.stdio.errors import StdioError

        bundle = self.bundle()

        def failAttach(call: RuncCall) -> None:
            self.io().attachError = StdioError("failed to open stdio: boom")

        self.expectCreate(bundle).pid(100).do(failAttach)
        self.assertCallFails(
            self.service.Create,
            task_pb2.CreateTaskRequest(id="c1", bundle=bundle, stdout="/f"),
            Code.UNKNOWN,
            "failed to open stdio: boom",
        )
        self.assertEqual(self.io().calls[-1], "close")
        self.assertEqual(self.publisher.events, [])

    def test_invalidIdentifiers(self) -> None:
        """
        An id that is not a containerd identifier (empty, too long, with
        path characters) is refused with INVALID_ARGUMENT before anything
        touches a path or runs.
        """
        bundle = self.bundle()
        for id in ("", "../x", "a/b", "x" * 100, ".hidden", "a..b"):
            result = self.call(
                self.service.Create, task_pb2.CreateTaskRequest(id=id, bundle=bundle)
            )
            failure = self.failureResultOf(result, TTRPCError)
            error = failure.value
            assert isinstance(error, TTRPCError)
            self.assertEqual(error.code, Code.INVALID_ARGUMENT, id)
            self.assertTrue(error.message.endswith(": invalid argument"), id)
        self.assertEqual(sorted(os.listdir(bundle)), ["config.json"])
        self.assertEqual(sorted(os.listdir(self.root)), ["c1", "xdg"])
        self.assertEqual(self.mounts.calls, [])

    def test_longestIdentifier(self) -> None:
        """
        An id of 76 characters, containerd's maximum, is accepted.
        """
        id = "a" * 76
        self.create(id)
        self.assertEqual(self.state(id).id, id)

    def test_duplicate(self) -> None:
        """
        A second C{Create} of an existing id fails with ALREADY_EXISTS, and
        touches neither the bundle nor the running container.
        """
        bundle = self.create("c1")
        with open(os.path.join(bundle, "options.json"), "rb") as f:
            before = f.read()
        self.assertCallFails(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1",
                bundle=bundle,
                options=AnyMessage(
                    type_url="containerd.runc.v1.Options",
                    value=runc_options_pb2.Options(root="/x").SerializeToString(),
                ),
            ),
            Code.ALREADY_EXISTS,
            "container c1: already exists",
        )
        with open(os.path.join(bundle, "options.json"), "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(self.status(), task_types_pb2.CREATED)

    def test_duplicateWhileCreating(self) -> None:
        """
        A C{Create} of an id whose creation is in progress fails with
        ALREADY_EXISTS; the first one completes.
        """
        bundle = self.bundle()
        self.expectCreate(bundle).pid(100).hold()
        first = self.call(
            self.service.Create, task_pb2.CreateTaskRequest(id="c1", bundle=bundle)
        )
        self.assertNoResult(first)
        self.assertCallFails(
            self.service.Create,
            task_pb2.CreateTaskRequest(id="c1", bundle=bundle),
            Code.ALREADY_EXISTS,
            "container c1: already exists",
        )
        self.runc.pending()[0].finish()
        self.assertEqual(self.successResultOf(first).pid, 100)

    def test_badBundle(self) -> None:
        """
        A bundle that is not an absolute path to a directory is refused
        with INVALID_ARGUMENT.
        """
        for bundle in ("", "relative/dir", os.path.join(self.root, "missing")):
            result = self.call(
                self.service.Create, task_pb2.CreateTaskRequest(id="c1", bundle=bundle)
            )
            failure = self.failureResultOf(result, TTRPCError)
            error = failure.value
            assert isinstance(error, TTRPCError)
            self.assertEqual(error.code, Code.INVALID_ARGUMENT, bundle)
        self.assertFalse(os.path.exists(os.path.join(self.root, "missing")))

    def test_notifySocketNotPassed(self) -> None:
        """
        runc gets the shim's environment without C{NOTIFY_SOCKET}.
        """
        self.setEnvironment("NOTIFY_SOCKET", "/run/systemd/notify")
        self.setEnvironment("SHIMD_TEST_VARIABLE", "kept")
        self.create()
        env = self.runc.calls[0].env
        self.assertNotIn("NOTIFY_SOCKET", env)
        self.assertEqual(env["SHIMD_TEST_VARIABLE"], "kept")

    def test_initExitsDuringCreate(self) -> None:
        """
        An init that dies while runc create runs (reaped before its pid file
        is read) is not lost: its exit is published after C{/tasks/create},
        and the container is stopped.
        """
        bundle = self.bundle()
        self.expectCreate(bundle).pid(100).do(lambda call: self.kernel.exit(100, 7))
        self.succeed(
            self.service.Create, task_pb2.CreateTaskRequest(id="c1", bundle=bundle)
        )
        self.assertEqual(self.publisher.topics(), ["/tasks/create", "/tasks/exit"])
        [exit] = self.events("/tasks/exit")
        self.assertEqual((exit.id, exit.pid, exit.exit_status), ("c1", 100, 7))
        self.assertEqual(self.status(), task_types_pb2.STOPPED)
        self.assertCallFails(
            self.service.Start,
            task_pb2.StartRequest(id="c1"),
            Code.UNKNOWN,
            "cannot start a stopped process",
        )

    def test_cgroupLoaded(self) -> None:
        """
        The container's cgroup is the one of its init's pid, for C{Stats}.
        """
        self.cgroups[100] = FakeCgroup()
        self.create(pid=100)
        response = self.succeed(self.service.Stats, task_pb2.StatsRequest(id="c1"))
        self.assertEqual(response.stats.type_url, "io.containerd.cgroups.v1.Metrics")


class CheckpointRestoreTests(TaskServiceTestCase):
    """
    A C{Create} from a checkpoint runs nothing; its C{Start} restores.
    """

    def createFromCheckpoint(self, **fields: Any) -> str:
        bundle = self.bundle()
        response = self.succeed(
            self.service.Create,
            task_pb2.CreateTaskRequest(
                id="c1", bundle=bundle, checkpoint="/ckpt", **fields
            ),
        )
        self.assertEqual(response.pid, 0)
        return bundle

    def test_createRunsNothing(self) -> None:
        """
        C{Create} from a checkpoint runs no runc, replies pid 0 and
        publishes C{/tasks/create} with the checkpoint and no pid.
        """
        bundle = self.createFromCheckpoint()
        [event] = self.events("/tasks/create")
        self.assertEqual(
            event,
            events_pb2.TaskCreate(
                container_id="c1",
                bundle=bundle,
                io=events_pb2.TaskIO(),
                checkpoint="/ckpt",
            ),
        )
        self.assertEqual(self.status(), task_types_pb2.CREATED)

    def test_startRestores(self) -> None:
        """
        C{Start} runs C{runc restore} with the work path C{<bundle>/work},
        detached, with the pid file, without subreaper, and the init runs.
        """
        bundle = self.createFromCheckpoint(parent_checkpoint="/parent")
        self.expect(
            bundle,
            "restore",
            "--image-path",
            "/ckpt",
            "--work-path",
            os.path.join(bundle, "work"),
            "--parent-path",
            "/parent",
            "--detach",
            "--pid-file",
            os.path.join(bundle, "init.pid"),
            "-no-subreaper",
            "--bundle",
            bundle,
            "c1",
        ).pid(300)
        response = self.succeed(self.service.Start, task_pb2.StartRequest(id="c1"))
        self.assertEqual(response.pid, 300)
        self.assertEqual(self.status(), task_types_pb2.RUNNING)
        self.assertEqual(
            self.events("/tasks/start"),
            [events_pb2.TaskStart(container_id="c1", pid=300)],
        )

    def test_deleteNeverStarted(self) -> None:
        """
        Deleting a task that never ran replies pid 0 and Go's zero time, and
        publishes C{/tasks/delete} with them, without any C{/tasks/exit}.
        """
        self.createFromCheckpoint()
        response = self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        self.assertEqual(response.pid, 0)
        self.assertEqual(timestampOf(response.exited_at), (GO_ZERO_TIME_SECONDS, 0))
        self.assertEqual(self.publisher.topics(), ["/tasks/create", "/tasks/delete"])
        [event] = self.events("/tasks/delete")
        self.assertEqual(timestampOf(event.exited_at), (GO_ZERO_TIME_SECONDS, 0))

    def test_execRefused(self) -> None:
        """
        No exec is added to a task still to be restored.
        """
        self.createFromCheckpoint()
        self.assertCallFails(
            self.service.Exec,
            task_pb2.ExecProcessRequest(id="c1", exec_id="e1"),
            Code.UNKNOWN,
            "cannot exec in a created state",
        )


class StartTests(TaskServiceTestCase):
    """
    C{Start} of the init process.
    """

    def test_start(self) -> None:
        """
        C{Start} runs C{runc start ID}, replies with the pid, publishes
        C{/tasks/start} and the init is running.
        """
        bundle = self.create(pid=100)
        self.expect(bundle, "start", "c1")
        response = self.succeed(self.service.Start, task_pb2.StartRequest(id="c1"))
        self.assertEqual(response.pid, 100)
        self.assertEqual(
            self.publisher.events[1:],
            [("/tasks/start", events_pb2.TaskStart(container_id="c1", pid=100))],
        )
        self.assertEqual(self.status(), task_types_pb2.RUNNING)

    def test_startBeforeExit(self) -> None:
        """
        An init that exits while runc start still runs has its
        C{/tasks/exit} published after C{/tasks/start}.
        """
        bundle = self.create(pid=100)
        self.expect(bundle, "start", "c1").hold()
        started = self.call(self.service.Start, task_pb2.StartRequest(id="c1"))
        self.kernel.exit(100, 3)
        self.assertEqual(self.publisher.topics(), ["/tasks/create"])
        self.runc.pending()[0].finish()
        self.assertEqual(self.successResultOf(started).pid, 100)
        self.assertEqual(
            self.publisher.topics(), ["/tasks/create", "/tasks/start", "/tasks/exit"]
        )
        self.assertEqual(self.status(), task_types_pb2.STOPPED)

    def test_startBeforeExitKillingAll(self) -> None:
        """
        The start-before-exit order holds when the init shares the host's
        pid namespace, whose exit first runs C{runc kill --all}.
        """
        bundle = self.create(pid=100, pidNamespace=False)
        self.expect(bundle, "start", "c1").do(lambda call: self.kernel.exit(100, 0))
        self.expect(bundle, "kill", "--all", "c1", "9")
        self.succeed(self.service.Start, task_pb2.StartRequest(id="c1"))
        self.assertEqual(
            self.publisher.topics(), ["/tasks/create", "/tasks/start", "/tasks/exit"]
        )

    def test_startTwice(self) -> None:
        """
        A running init cannot be started again.
        """
        self.runContainer()
        self.assertCallFails(
            self.service.Start,
            task_pb2.StartRequest(id="c1"),
            Code.UNKNOWN,
            "cannot start a running process",
        )

    def test_startPaused(self) -> None:
        """
        A paused init cannot be started.
        """
        bundle = self.runContainer()
        self.expect(bundle, "pause", "c1")
        self.succeed(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        self.assertCallFails(
            self.service.Start,
            task_pb2.StartRequest(id="c1"),
            Code.UNKNOWN,
            "cannot start a paused process",
        )

    def test_startFailure(self) -> None:
        """
        When runc start fails, C{Start} fails with UNKNOWN C{OCI runtime
        start failed: <log error>}, publishes nothing and the init stays
        created.
        """
        bundle = self.create()
        self.expect(bundle, "start", "c1").logError("cannot start").exit(1)
        self.assertCallFails(
            self.service.Start,
            task_pb2.StartRequest(id="c1"),
            Code.UNKNOWN,
            "OCI runtime start failed: cannot start",
        )
        self.assertEqual(self.publisher.topics(), ["/tasks/create"])
        self.assertEqual(self.status(), task_types_pb2.CREATED)

    def test_unknownIds(self) -> None:
        """
        An unknown container is NOT_FOUND C{container not created}; an
        unknown exec NOT_FOUND C{process does not exist <id>}.
        """
        self.create()
        self.assertCallFails(
            self.service.Start,
            task_pb2.StartRequest(id="c9"),
            Code.NOT_FOUND,
            "container not created: not found",
        )
        self.assertCallFails(
            self.service.Start,
            task_pb2.StartRequest(id="c1", exec_id="e9"),
            Code.NOT_FOUND,
            "process does not exist e9: not found",
        )

    def test_cgroupV2AndOOM(self) -> None:
        """
        At create, before the container runs, its cgroup is watched for OOM
        kills; at start, a cgroup v2 cgroup gets its controllers enabled.
        """
        cgroup = FakeV2Cgroup()
        self.cgroups[100] = cgroup
        bundle = self.create(pid=100)
        self.assertIs(self.oomWatcher.watched["c1"][0], cgroup)
        self.assertEqual(cgroup.enabled, 0)
        self.start(bundle)
        self.assertEqual(cgroup.enabled, 1)
        self.assertIs(self.oomWatcher.watched["c1"][0], cgroup)


class ExecTests(TaskServiceTestCase):
    """
    C{Exec}, and C{Start} of an exec.
    """

    def test_execAdded(self) -> None:
        """
        C{Exec} registers a created exec with the requested stdio, runs
        nothing and publishes C{/tasks/exec-added}.
        """
        self.runContainer()
        self.addExec(
            "c1", "e1", stdin="/in", stdout="/out", stderr="/err", terminal=True
        )
        self.assertEqual(
            self.publisher.events[-1],
            (
                "/tasks/exec-added",
                events_pb2.TaskExecAdded(container_id="c1", exec_id="e1"),
            ),
        )
        state = self.state("c1", "e1")
        self.assertEqual(
            (state.id, state.pid, state.status, state.exec_id),
            ("e1", 0, task_types_pb2.CREATED, ""),
        )
        self.assertEqual(
            (state.stdin, state.stdout, state.stderr, state.terminal),
            ("/in", "/out", "/err", True),
        )

    def test_execInCreatedContainer(self) -> None:
        """
        An exec may be added to a container that is only created.
        """
        self.create()
        self.addExec()
        self.assertEqual(self.status("c1", "e1"), task_types_pb2.CREATED)

    def test_duplicate(self) -> None:
        """
        An exec id in use, even by an exec that has exited but is not
        deleted, is ALREADY_EXISTS C{id <exec id>}.
        """
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        request = task_pb2.ExecProcessRequest(id="c1", exec_id="e1")
        self.assertCallFails(
            self.service.Exec, request, Code.ALREADY_EXISTS, "id e1: already exists"
        )
        self.kernel.exit(200)
        self.assertCallFails(
            self.service.Exec, request, Code.ALREADY_EXISTS, "id e1: already exists"
        )

    def test_execRefusedByState(self) -> None:
        """
        No exec is added to a paused or stopped container, and the refused
        id is not kept.
        """
        bundle = self.runContainer()
        self.expect(bundle, "pause", "c1")
        self.succeed(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        request = task_pb2.ExecProcessRequest(id="c1", exec_id="e1")
        self.assertCallFails(
            self.service.Exec, request, Code.UNKNOWN, "cannot exec in a paused state"
        )
        self.expect(bundle, "resume", "c1")
        self.succeed(self.service.Resume, task_pb2.ResumeRequest(id="c1"))
        self.kernel.exit(100)
        self.assertCallFails(
            self.service.Exec, request, Code.UNKNOWN, "cannot exec in a stopped state"
        )
        self.assertCallFails(
            self.service.State,
            task_pb2.StateRequest(id="c1", exec_id="e1"),
            Code.NOT_FOUND,
            "process does not exist e1: not found",
        )

    def test_invalidExecID(self) -> None:
        """
        An exec id that is not an identifier is INVALID_ARGUMENT.
        """
        self.runContainer()
        result = self.call(
            self.service.Exec, task_pb2.ExecProcessRequest(id="c1", exec_id="../e")
        )
        failure = self.failureResultOf(result, TTRPCError)
        self.assertEqual(failure.value.code, Code.INVALID_ARGUMENT)

    def test_execStart(self) -> None:
        """
        C{Start} of an exec runs C{runc exec --process <file> --detach
        --pid-file <bundle>/<exec id>.pid <id>}; the file holds the OCI
        process with C{terminal} forced to the request's and is removed
        afterwards; C{/tasks/exec-started} is published with the pid and the
        exec runs.
        """
        bundle = self.runContainer()
        spec = {"args": ["sh", "-c", "true"], "cwd": "/", "terminal": True}
        self.addExec("c1", "e1", spec=spec, terminal=False)
        processFiles: list[tuple[str, Any, int]] = []

        def readProcess(call: RuncCall) -> None:
            path = argumentAfter(call.argv, "--process")
            with open(path) as f:
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
                processFiles.append((path, json.load(f), mode))

        self.expectExec(bundle, "e1").pid(200).do(readProcess)
        response = self.succeed(
            self.service.Start, task_pb2.StartRequest(id="c1", exec_id="e1")
        )
        self.assertEqual(response.pid, 200)
        [(path, written, mode)] = processFiles
        self.assertEqual(written, dict(spec, terminal=False))
        self.assertEqual(mode, 0o600)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(
            self.publisher.events[-1],
            (
                "/tasks/exec-started",
                events_pb2.TaskExecStarted(container_id="c1", exec_id="e1", pid=200),
            ),
        )
        self.assertEqual(self.status("c1", "e1"), task_types_pb2.RUNNING)
        self.assertEqual(self.state("c1", "e1").pid, 200)

    def test_execStartTerminal(self) -> None:
        """
        An exec with a terminal gets the console socket before C{--detach},
        and C{terminal: true} in its process file.
        """
        bundle = self.runContainer()
        self.addExec("c1", "e1", spec={"args": ["sh"]}, terminal=True)
        written: list[Any] = []

        def readProcess(call: RuncCall) -> None:
            with open(argumentAfter(call.argv, "--process")) as f:
                written.append(json.load(f))

        self.expectExec(bundle, "e1", terminal=True).pid(200).do(readProcess)
        self.succeed(self.service.Start, task_pb2.StartRequest(id="c1", exec_id="e1"))
        self.assertEqual(written, [{"args": ["sh"], "terminal": True}])

    def test_execExit(self) -> None:
        """
        An exec's exit is published with the exec id as C{id}, after
        C{/tasks/exec-started}, and the exec is stopped.
        """
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        self.kernel.exit(200, 5)
        self.assertEqual(
            self.publisher.topics()[-3:],
            ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"],
        )
        [exit] = self.events("/tasks/exit")
        self.assertEqual(
            (exit.container_id, exit.id, exit.pid, exit.exit_status),
            ("c1", "e1", 200, 5),
        )
        self.assertEqual(self.status("c1", "e1"), task_types_pb2.STOPPED)
        self.assertEqual(self.status("c1"), task_types_pb2.RUNNING)

    def test_execFailure(self) -> None:
        """
        When runc exec fails, C{Start} fails with UNKNOWN C{OCI runtime exec
        failed: <log error>}, the exec's waiters are released, its stdio is
        closed, its process file removed, and nothing is published.
        """
        bundle = self.runContainer()
        self.addExec()
        waiting = self.wait("c1", "e1")
        paths: list[str] = []
        self.expectExec(bundle, "e1").logError("exec failed: no such file").do(
            lambda call: paths.append(argumentAfter(call.argv, "--process"))
        ).exit(1)
        self.assertCallFails(
            self.service.Start,
            task_pb2.StartRequest(id="c1", exec_id="e1"),
            Code.UNKNOWN,
            "OCI runtime exec failed: exec failed: no such file",
        )
        self.successResultOf(waiting)
        self.assertIn("close", self.io(1).calls)
        self.assertFalse(os.path.exists(paths[0]))
        self.assertEqual(self.publisher.topics()[-1], "/tasks/exec-added")

    def test_execExitDuringLaunch(self) -> None:
        """
        An exec reaped while runc exec runs, before its pid file is read, is
        not lost: its exit is published after C{/tasks/exec-started}.
        """
        bundle = self.runContainer()
        self.addExec()
        self.expectExec(bundle, "e1").pid(200).do(lambda call: self.kernel.exit(200, 1))
        self.succeed(self.service.Start, task_pb2.StartRequest(id="c1", exec_id="e1"))
        self.assertEqual(
            self.publisher.topics()[-2:], ["/tasks/exec-started", "/tasks/exit"]
        )
        [exit] = self.events("/tasks/exit")
        self.assertEqual((exit.id, exit.pid, exit.exit_status), ("e1", 200, 1))
        self.assertEqual(self.status("c1", "e1"), task_types_pb2.STOPPED)
        response = self.successResultOf(self.wait("c1", "e1"))
        self.assertEqual(response.exit_status, 1)

    def test_execExitWhileStartHeld(self) -> None:
        """
        An exec exit that comes while its start is still in progress is
        published only once C{/tasks/exec-started} has been.
        """
        bundle = self.runContainer()
        self.addExec()
        self.expectExec(bundle, "e1").pid(200).hold()
        started = self.call(
            self.service.Start, task_pb2.StartRequest(id="c1", exec_id="e1")
        )
        self.kernel.exit(200, 2)
        self.assertEqual(self.publisher.topics()[-1], "/tasks/exec-added")
        self.runc.pending()[0].finish()
        self.successResultOf(started)
        self.assertEqual(
            self.publisher.topics()[-2:], ["/tasks/exec-started", "/tasks/exit"]
        )

    def test_execStartTwice(self) -> None:
        """
        A running exec cannot be started again; an exited one neither.
        """
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        request = task_pb2.StartRequest(id="c1", exec_id="e1")
        self.assertCallFails(
            self.service.Start, request, Code.UNKNOWN, "cannot start a running process"
        )
        self.kernel.exit(200)
        self.assertCallFails(
            self.service.Start, request, Code.UNKNOWN, "cannot start a stopped process"
        )


class ConcurrentStartTests(TaskServiceTestCase):
    """
    A C{Start} that comes while another of the same process is in progress.
    """

    def test_exec(self) -> None:
        """
        A second C{Start} of an exec being started is refused as running:
        one runc exec, one process, one C{/tasks/exec-started}.
        """
        bundle = self.runContainer()
        self.addExec()
        self.expectExec(bundle, "e1").pid(200).hold()
        request = task_pb2.StartRequest(id="c1", exec_id="e1")
        first = self.call(self.service.Start, request)
        self.assertCallFails(
            self.service.Start, request, Code.UNKNOWN, "cannot start a running process"
        )
        self.runc.pending()[0].finish()
        self.assertEqual(self.successResultOf(first).pid, 200)
        self.assertEqual(self.publisher.topics().count("/tasks/exec-started"), 1)

    def test_init(self) -> None:
        """
        A second C{Start} of an init being started is refused as running.
        """
        bundle = self.create()
        self.expect(bundle, "start", "c1").hold()
        request = task_pb2.StartRequest(id="c1")
        first = self.call(self.service.Start, request)
        self.assertCallFails(
            self.service.Start, request, Code.UNKNOWN, "cannot start a running process"
        )
        self.runc.pending()[0].finish()
        self.successResultOf(first)
        self.assertEqual(self.publisher.topics().count("/tasks/start"), 1)

    def test_retryAfterFailure(self) -> None:
        """
        Once a start has failed, the process may be started again.
        """
        bundle = self.create()
        self.expect(bundle, "start", "c1").logError("try again").exit(1)
        self.assertCallFails(
            self.service.Start,
            task_pb2.StartRequest(id="c1"),
            Code.UNKNOWN,
            "OCI runtime start failed: try again",
        )
        self.start(bundle)
        self.assertEqual(self.status(), task_types_pb2.RUNNING)


class KillTests(TaskServiceTestCase):
    """
    C{Kill} of the init (runc kill) and of execs (kill(2)).
    """

    def test_kill(self) -> None:
        """
        C{Kill} runs C{runc kill ID SIGNAL}, with C{--all} when asked.
        """
        bundle = self.runContainer()
        self.expect(bundle, "kill", "c1", "15")
        self.succeed(self.service.Kill, task_pb2.KillRequest(id="c1", signal=15))
        self.expect(bundle, "kill", "--all", "c1", "9")
        self.succeed(
            self.service.Kill, task_pb2.KillRequest(id="c1", signal=9, all=True)
        )

    def test_killCreated(self) -> None:
        """
        A created init can be killed.
        """
        bundle = self.create()
        self.expect(bundle, "kill", "c1", "9")
        self.succeed(self.service.Kill, task_pb2.KillRequest(id="c1", signal=9))

    def test_notRunning(self) -> None:
        """
        runc's C{container not running} is NOT_FOUND C{process already
        finished}.
        """
        bundle = self.runContainer()
        self.kernel.exit(100)
        self.expect(bundle, "kill", "c1", "9").stderr(b"container not running\n").exit(
            1
        )
        self.assertCallFails(
            self.service.Kill,
            task_pb2.KillRequest(id="c1", signal=9),
            Code.NOT_FOUND,
            "process already finished: not found",
        )

    def test_doesNotExist(self) -> None:
        """
        runc's C{does not exist} is NOT_FOUND C{no such container}.
        """
        bundle = self.runContainer()
        self.expect(bundle, "kill", "c1", "9").stderr(
            b"container c1 does not exist\n"
        ).exit(1)
        self.assertCallFails(
            self.service.Kill,
            task_pb2.KillRequest(id="c1", signal=9),
            Code.NOT_FOUND,
            "no such container: not found",
        )

    def test_otherError(self) -> None:
        """
        Any other runc error is UNKNOWN C{unknown error after kill: ...}.
        """
        bundle = self.runContainer()
        self.expect(bundle, "kill", "c1", "9").stderr(b"boom\n").exit(1)
        self.assertCallFails(
            self.service.Kill,
            task_pb2.KillRequest(id="c1", signal=9),
            Code.UNKNOWN,
            "unknown error after kill: runc did not terminate successfully: "
            "exit status 1: boom\n",
        )

    def test_execBeforeStart(self) -> None:
        """
        An exec not started is FAILED_PRECONDITION C{process not created}.
        """
        self.runContainer()
        self.addExec()
        self.assertCallFails(
            self.service.Kill,
            task_pb2.KillRequest(id="c1", exec_id="e1", signal=9),
            Code.FAILED_PRECONDITION,
            "process not created: failed precondition",
        )

    def test_exec(self) -> None:
        """
        An exec is signalled directly, without runc; C{all} is ignored.
        """
        self.fakeKill()
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        self.succeed(
            self.service.Kill,
            task_pb2.KillRequest(id="c1", exec_id="e1", signal=15, all=True),
        )
        self.assertEqual(self.killed, [(200, 15)])

    def test_execAfterExit(self) -> None:
        """
        An exec that has exited is NOT_FOUND C{process already finished};
        so is one whose process is gone before its exit is reaped.
        """
        self.fakeKill(vanished=[201])
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        self.startExec(bundle, "c1", "e2", pid=201)
        self.kernel.exit(200)
        for execID in ("e1", "e2"):
            self.assertCallFails(
                self.service.Kill,
                task_pb2.KillRequest(id="c1", exec_id=execID, signal=9),
                Code.NOT_FOUND,
                "process already finished: not found",
            )
        self.assertEqual(self.killed, [])


class WaitTests(TaskServiceTestCase):
    """
    C{Wait}.
    """

    def test_blocksUntilExit(self) -> None:
        """
        C{Wait} replies once the process has exited, with its status and
        exit time.
        """
        self.runContainer()
        waiting = self.wait()
        self.assertNoResult(waiting)
        self.kernel.now = 1_800_000_000_000_000_042
        self.kernel.exit(100, 42)
        response = self.successResultOf(waiting)
        self.assertEqual(response.exit_status, 42)
        self.assertEqual(timestampOf(response.exited_at), (1_800_000_000, 42))

    def test_afterExit(self) -> None:
        """
        C{Wait} on a process that has exited replies at once.
        """
        self.runContainer()
        self.kernel.exit(100, 1)
        self.assertEqual(self.successResultOf(self.wait()).exit_status, 1)

    def test_severalWaiters(self) -> None:
        """
        Every waiter is released by the exit.
        """
        self.runContainer()
        waiters = [self.wait() for _ in range(3)]
        self.kernel.exit(100, 4)
        self.assertEqual(
            [self.successResultOf(w).exit_status for w in waiters], [4, 4, 4]
        )

    def test_cancelledWait(self) -> None:
        """
        A cancelled C{Wait} (its client gone) fails with L{CancelledError}
        and leaves the other waiters waiting, and released at the exit.
        """
        self.runContainer()
        first, second = self.wait(), self.wait()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertNoResult(second)
        self.kernel.exit(100, 6)
        self.assertEqual(self.successResultOf(second).exit_status, 6)

    def test_releasedBeforeExitEvent(self) -> None:
        """
        C{Wait} is released before C{/tasks/exit} is published.
        """
        self.runContainer()
        seen: list[list[str]] = []
        self.wait().addCallback(lambda _: seen.append(self.publisher.topics()))
        self.kernel.exit(100)
        self.assertEqual(seen, [["/tasks/create", "/tasks/start"]])
        self.assertEqual(self.publisher.topics()[-1], "/tasks/exit")

    def test_execWait(self) -> None:
        """
        C{Wait} on an exec is released by the exec's exit alone.
        """
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        execWait, initWait = self.wait("c1", "e1"), self.wait("c1")
        self.kernel.exit(200, 3)
        self.assertEqual(self.successResultOf(execWait).exit_status, 3)
        self.assertNoResult(initWait)

    def test_execDeletedUnstarted(self) -> None:
        """
        C{Wait} on an exec that never started is released when it is
        deleted, with status 0 and Go's zero time.
        """
        self.runContainer()
        self.addExec()
        waiting = self.wait("c1", "e1")
        self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1", exec_id="e1"))
        response = self.successResultOf(waiting)
        self.assertEqual(response.exit_status, 0)
        self.assertEqual(timestampOf(response.exited_at), (GO_ZERO_TIME_SECONDS, 0))


class ExitTests(TaskServiceTestCase):
    """
    What happens when a container's processes are reaped.
    """

    def test_exitWaitsForOutput(self) -> None:
        """
        An exit is recorded (releasing C{Wait}) and published only once the
        process's output has been copied to the end: containerd's client
        closes its fifos as soon as C{Wait} returns.
        """
        self.runContainer(pid=100)
        drained: Deferred[None] = Deferred()
        self.io().drained = drained
        waiting = self.call(self.service.Wait, task_pb2.WaitRequest(id="c1"))
        self.kernel.exit(100, 0)
        self.assertNoResult(waiting)
        self.assertNotIn("/tasks/exit", self.publisher.topics())
        drained.callback(None)
        self.successResultOf(waiting)
        self.assertIn("/tasks/exit", self.publisher.topics())

    def test_killAllWithHostPidNamespace(self) -> None:
        """
        When the container has no pid namespace of its own, its init's exit
        first runs C{runc kill --all ID 9}; the exit is recorded and
        published after it.
        """
        bundle = self.runContainer(pid=100, pidNamespace=False)
        self.expect(bundle, "kill", "--all", "c1", "9").hold()
        waiting = self.wait()
        self.kernel.exit(100, 0)
        self.assertNoResult(waiting)
        self.assertNotIn("/tasks/exit", self.publisher.topics())
        self.assertEqual(self.status(), task_types_pb2.RUNNING)
        self.runc.pending()[0].finish()
        self.successResultOf(waiting)
        self.assertEqual(self.publisher.topics()[-1], "/tasks/exit")
        self.assertEqual(self.status(), task_types_pb2.STOPPED)

    def test_killAllFailureStillExits(self) -> None:
        """
        A failed C{runc kill --all} does not hold back the exit.
        """
        bundle = self.runContainer(pid=100, pidNamespace=False)
        self.expect(bundle, "kill", "--all", "c1", "9").stderr(b"oops").exit(1)
        self.kernel.exit(100, 2)
        self.assertEqual(self.publisher.topics()[-1], "/tasks/exit")

    def test_noKillAllWithOwnPidNamespace(self) -> None:
        """
        With its own pid namespace, the init's exit runs no runc: the
        kernel kills the rest.
        """
        self.runContainer(pid=100, pidNamespace=True)
        self.kernel.exit(100, 0)
        self.assertEqual(self.publisher.topics()[-1], "/tasks/exit")
        self.assertEqual(len(self.runc.calls), 2)

    def test_killAllWhenConfigUnreadable(self) -> None:
        """
        When C{config.json} cannot be read, the init's exit kills all, as in
        Go.
        """
        bundle = self.bundle()
        os.unlink(os.path.join(bundle, "config.json"))
        self.expectCreate(bundle).pid(100)
        self.succeed(
            self.service.Create, task_pb2.CreateTaskRequest(id="c1", bundle=bundle)
        )
        self.expect(bundle, "kill", "--all", "c1", "9")
        self.kernel.exit(100)
        self.assertEqual(self.publisher.topics()[-1], "/tasks/exit")

    def test_initExitAfterExecExits(self) -> None:
        """
        The init's exit is published after the exits of the container's
        running execs, which die with it.
        """
        bundle = self.runContainer(pid=100)
        self.startExec(bundle, "c1", "e1", pid=200)
        self.startExec(bundle, "c1", "e2", pid=201)
        initWait = self.wait()
        self.kernel.exit(100, 0)
        self.assertNotIn("/tasks/exit", self.publisher.topics())
        self.assertNoResult(initWait)
        self.kernel.exit(201, 137)
        self.kernel.exit(200, 137)
        exits = [(e.id, e.pid) for e in self.events("/tasks/exit")]
        self.assertEqual(exits, [("e2", 201), ("e1", 200), ("c1", 100)])
        self.successResultOf(initWait)

    def test_initExitAfterExecWait(self) -> None:
        """
        If an exec does not exit, the init's exit is published anyway after
        L{EXEC_EXIT_WAIT}, and the exec's exit later.
        """
        bundle = self.runContainer(pid=100)
        self.startExec(bundle, "c1", "e1", pid=200)
        self.kernel.exit(100, 0)
        self.assertNotIn("/tasks/exit", self.publisher.topics())
        self.reactor.advance(EXEC_EXIT_WAIT)
        self.assertEqual([e.id for e in self.events("/tasks/exit")], ["c1"])
        self.assertEqual(self.status(), task_types_pb2.STOPPED)
        self.kernel.exit(200, 9)
        self.assertEqual([e.id for e in self.events("/tasks/exit")], ["c1", "e1"])

    def test_startingExecHoldsExit(self) -> None:
        """
        An exec being started when the init exits holds the init's exit
        back until its start has ended, even when the start fails.
        """
        bundle = self.runContainer(pid=100)
        self.addExec()
        self.expectExec(bundle, "e1").logError("container not running").exit(1).hold()
        starting = self.call(
            self.service.Start, task_pb2.StartRequest(id="c1", exec_id="e1")
        )
        self.kernel.exit(100, 0)
        self.assertNotIn("/tasks/exit", self.publisher.topics())
        self.runc.pending()[0].finish()
        self.assertFails(
            starting, Code.UNKNOWN, "OCI runtime exec failed: container not running"
        )
        self.assertEqual(
            [(e.id, e.pid) for e in self.events("/tasks/exit")], [("c1", 100)]
        )

    def test_createdExecDoesNotHoldExit(self) -> None:
        """
        An exec that was added but never started does not hold the init's
        exit back.
        """
        self.runContainer(pid=100)
        self.addExec()
        self.kernel.exit(100, 0)
        self.assertEqual(self.publisher.topics()[-1], "/tasks/exit")

    def test_signalStatus(self) -> None:
        """
        A process killed by SIGKILL exits with status 137.
        """
        self.runContainer(pid=100)
        self.kernel.exit(100, signal=SIGKILL)
        [exit] = self.events("/tasks/exit")
        self.assertEqual(exit.exit_status, 137)
        self.assertEqual(self.state().exit_status, 137)

    def test_exitedAtIsReapTime(self) -> None:
        """
        C{exited_at} is the time the process was reaped, the same in
        C{/tasks/exit}, C{Wait}, C{State} and C{Delete}.
        """
        bundle = self.runContainer(pid=100)
        self.kernel.now = 1_750_000_000_987_654_321
        self.kernel.exit(100, 0)
        expected = splitNanoseconds(1_750_000_000_987_654_321)
        [exit] = self.events("/tasks/exit")
        self.assertEqual(timestampOf(exit.exited_at), expected)
        self.assertEqual(
            timestampOf(self.successResultOf(self.wait()).exited_at), expected
        )
        self.assertEqual(timestampOf(self.state().exited_at), expected)
        self.expect(bundle, "delete", "c1")
        response = self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        self.assertEqual(timestampOf(response.exited_at), expected)

    def test_pausedInitExit(self) -> None:
        """
        An init that exits while paused is resumed (so that the rest can
        die) and is stopped.
        """
        bundle = self.runContainer(pid=100)
        self.expect(bundle, "pause", "c1")
        self.succeed(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        self.expect(bundle, "resume", "c1")
        self.kernel.exit(100, signal=SIGKILL)
        self.assertEqual(self.status(), task_types_pb2.STOPPED)
        self.assertEqual(self.publisher.topics()[-1], "/tasks/exit")

    def test_unknownPid(self) -> None:
        """
        The exit of a pid no container knows publishes nothing.
        """
        self.runContainer(pid=100)
        self.kernel.exit(555, 1)
        self.assertEqual(self.publisher.topics(), ["/tasks/create", "/tasks/start"])


class DeleteTests(TaskServiceTestCase):
    """
    C{Delete} of the init (the container) and of execs.
    """

    def test_running(self) -> None:
        """
        A running init cannot be deleted; nor a paused one.
        """
        bundle = self.runContainer()
        self.assertCallFails(
            self.service.Delete,
            task_pb2.DeleteRequest(id="c1"),
            Code.UNKNOWN,
            "cannot delete a running process",
        )
        self.expect(bundle, "pause", "c1")
        self.succeed(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        self.assertCallFails(
            self.service.Delete,
            task_pb2.DeleteRequest(id="c1"),
            Code.UNKNOWN,
            "cannot delete a paused process",
        )

    def test_delete(self) -> None:
        """
        After the exit, C{Delete} waits (bounded) for the output, runs
        C{runc delete ID}, closes the stdio, unmounts the rootfs, forgets
        the container, stops watching it for OOM, and publishes
        C{/tasks/delete} (empty C{id}) after C{/tasks/exit}.
        """
        bundle = self.runContainer(
            pid=100,
            rootfs=[mount_pb2.Mount(type="bind", source="/x", options=["rbind"])],
        )
        self.kernel.now = 1_750_000_000_000_000_005
        self.kernel.exit(100, 3)
        self.expect(bundle, "delete", "c1")
        response = self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        exitedAt = splitNanoseconds(1_750_000_000_000_000_005)
        self.assertEqual((response.pid, response.exit_status), (100, 3))
        self.assertEqual(timestampOf(response.exited_at), exitedAt)
        # Once before the exit is reported, once more at Delete.
        self.assertEqual(self.io().drainTimeouts, [DRAIN_TIMEOUT, DRAIN_TIMEOUT])
        self.assertEqual(self.io().calls[-2:], ["waitDrained", "close"])
        self.assertEqual(self.mounts.calls[-1], ("unmount", f"{bundle}/rootfs"))
        self.assertEqual(self.oomWatcher.removed, ["c1"])
        self.assertEqual(
            self.publisher.topics(),
            ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"],
        )
        expected = events_pb2.TaskDelete(container_id="c1", pid=100, exit_status=3)
        expected.exited_at.seconds, expected.exited_at.nanos = exitedAt
        self.assertEqual(self.events("/tasks/delete"), [expected])
        self.assertCallFails(
            self.service.State,
            task_pb2.StateRequest(id="c1"),
            Code.NOT_FOUND,
            "container not created: not found",
        )
        connect = self.succeed(self.service.Connect, task_pb2.ConnectRequest(id="c1"))
        self.assertEqual(connect.task_pid, 0)

    def test_deleteTwice(self) -> None:
        """
        A second C{Delete} is NOT_FOUND, and publishes nothing.
        """
        bundle = self.runContainer()
        self.kernel.exit(100)
        self.expect(bundle, "delete", "c1")
        self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        events = list(self.publisher.events)
        self.assertCallFails(
            self.service.Delete,
            task_pb2.DeleteRequest(id="c1"),
            Code.NOT_FOUND,
            "container not created: not found",
        )
        self.assertEqual(self.publisher.events, events)

    def test_deleteCreated(self) -> None:
        """
        A created init can be deleted: pid, status 0 and Go's zero time in
        reply and event, and no C{/tasks/exit} when runc's kill of it is
        reaped later.
        """
        bundle = self.create(pid=100)
        self.expect(bundle, "delete", "c1")
        response = self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        self.assertEqual((response.pid, response.exit_status), (100, 0))
        self.assertEqual(timestampOf(response.exited_at), (GO_ZERO_TIME_SECONDS, 0))
        self.kernel.exit(100, signal=SIGKILL)
        self.assertEqual(self.publisher.topics(), ["/tasks/create", "/tasks/delete"])

    def test_doesNotExistIgnored(self) -> None:
        """
        A C{runc delete} that fails because runc no longer knows the
        container (after a checkpoint, say) is no error.
        """
        bundle = self.runContainer()
        self.kernel.exit(100)
        self.expect(bundle, "delete", "c1").stderr(b"container c1 does not exist").exit(
            1
        )
        self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        self.assertEqual(self.publisher.topics()[-1], "/tasks/delete")

    def test_failure(self) -> None:
        """
        Any other C{runc delete} failure is UNKNOWN C{failed to delete task:
        <log error>}, and the container stays.
        """
        bundle = self.runContainer()
        self.kernel.exit(100)
        self.expect(bundle, "delete", "c1").logError("permission denied").exit(1)
        self.assertCallFails(
            self.service.Delete,
            task_pb2.DeleteRequest(id="c1"),
            Code.UNKNOWN,
            "failed to delete task: permission denied",
        )
        self.assertEqual(self.status(), task_types_pb2.STOPPED)
        self.assertNotIn("/tasks/delete", self.publisher.topics())

    def test_waitsForOutput(self) -> None:
        """
        C{Delete} runs runc only once the output has drained (or the bound
        has passed, which the stdio enforces).
        """
        bundle = self.runContainer()
        self.kernel.exit(100)
        drained: Deferred[None] = Deferred()
        self.io().drained = drained
        deleting = self.call(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        self.assertNoResult(deleting)
        self.assertEqual(len(self.runc.calls), 2)
        self.expect(bundle, "delete", "c1")
        drained.callback(None)
        self.successResultOf(deleting)

    def test_concurrentDelete(self) -> None:
        """
        A C{Delete} that comes while another is in progress is NOT_FOUND
        C{cannot delete a deleted process}: runc delete runs once and
        C{/tasks/delete} is published once.
        """
        bundle = self.runContainer()
        self.kernel.exit(100)
        self.expect(bundle, "delete", "c1").hold()
        first = self.call(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        self.assertCallFails(
            self.service.Delete,
            task_pb2.DeleteRequest(id="c1"),
            Code.NOT_FOUND,
            "cannot delete a deleted process: not found",
        )
        self.runc.pending()[0].finish()
        self.assertEqual(self.successResultOf(first).pid, 100)
        self.assertEqual(self.publisher.topics().count("/tasks/delete"), 1)

    def test_deleteAgainAfterFailure(self) -> None:
        """
        After a failed C{Delete}, another may be tried.
        """
        bundle = self.runContainer()
        self.kernel.exit(100)
        self.expect(bundle, "delete", "c1").logError("busy").exit(1)
        self.assertCallFails(
            self.service.Delete,
            task_pb2.DeleteRequest(id="c1"),
            Code.UNKNOWN,
            "failed to delete task: busy",
        )
        self.expect(bundle, "delete", "c1")
        self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        self.assertEqual(self.publisher.topics()[-1], "/tasks/delete")

    def test_exec(self) -> None:
        """
        Deleting an exited exec replies with its exit, publishes nothing,
        removes its pid file and forgets it: a second delete is NOT_FOUND.
        """
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        self.kernel.exit(200, 4)
        events = list(self.publisher.events)
        response = self.succeed(
            self.service.Delete, task_pb2.DeleteRequest(id="c1", exec_id="e1")
        )
        self.assertEqual((response.pid, response.exit_status), (200, 4))
        self.assertEqual(self.publisher.events, events)
        self.assertFalse(os.path.exists(os.path.join(bundle, "e1.pid")))
        self.assertEqual(self.io(1).calls[-2:], ["waitDrained", "close"])
        self.assertCallFails(
            self.service.Delete,
            task_pb2.DeleteRequest(id="c1", exec_id="e1"),
            Code.NOT_FOUND,
            "process does not exist e1: not found",
        )
        self.assertEqual(self.status(), task_types_pb2.RUNNING)

    def test_execRunning(self) -> None:
        """
        A running exec cannot be deleted.
        """
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        self.assertCallFails(
            self.service.Delete,
            task_pb2.DeleteRequest(id="c1", exec_id="e1"),
            Code.UNKNOWN,
            "cannot delete a running process",
        )

    def test_execIdReusable(self) -> None:
        """
        Once deleted, an exec id can be used again.
        """
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        self.kernel.exit(200)
        self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1", exec_id="e1"))
        self.startExec(bundle, "c1", "e1", pid=201)
        self.assertEqual(self.state("c1", "e1").pid, 201)


class StateTests(TaskServiceTestCase):
    """
    C{State}.
    """

    def test_statusMapping(self) -> None:
        """
        The status follows the init: created 1, running 2, pausing 5 while
        runc pause runs, paused 4, running again, stopped 3.
        """
        bundle = self.create()
        self.assertEqual(self.status(), 1)
        self.start(bundle)
        self.assertEqual(self.status(), 2)
        self.expect(bundle, "pause", "c1").hold()
        pausing = self.call(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        self.assertEqual(self.status(), 5)
        self.runc.pending()[0].finish()
        self.successResultOf(pausing)
        self.assertEqual(self.status(), 4)
        self.expect(bundle, "resume", "c1")
        self.succeed(self.service.Resume, task_pb2.ResumeRequest(id="c1"))
        self.assertEqual(self.status(), 2)
        self.kernel.exit(100)
        self.assertEqual(self.status(), 3)

    def test_fields(self) -> None:
        """
        C{State} gives the container id, bundle, pid, status and the stdio
        as requested; the exit status and Go's zero time before the exit,
        which is what goes on the wire.
        """
        bundle = self.runContainer(
            pid=321, stdin="/s/in", stdout="/s/out", stderr="/s/err", terminal=False
        )
        state = self.state()
        self.assertEqual(
            state,
            task_pb2.StateResponse(
                id="c1",
                bundle=bundle,
                pid=321,
                status=task_types_pb2.RUNNING,
                stdin="/s/in",
                stdout="/s/out",
                stderr="/s/err",
                exited_at={"seconds": GO_ZERO_TIME_SECONDS},
            ),
        )
        self.assertIn(
            bytes.fromhex("520b0880 92b8c398 feffffff 01".replace(" ", "")),
            state.SerializeToString(),
        )

    def test_exec(self) -> None:
        """
        The State of an exec has the exec id as C{id}, never C{exec_id},
        and the exec's own pid, stdio and exit.
        """
        bundle = self.runContainer()
        self.addExec("c1", "e1", stdout="/e/out")
        self.expectExec(bundle, "e1").pid(200)
        self.succeed(self.service.Start, task_pb2.StartRequest(id="c1", exec_id="e1"))
        self.kernel.exit(200, 8)
        state = self.state("c1", "e1")
        self.assertEqual(
            (state.id, state.exec_id, state.bundle, state.pid, state.stdout),
            ("e1", "", bundle, 200, "/e/out"),
        )
        self.assertEqual((state.status, state.exit_status), (task_types_pb2.STOPPED, 8))

    def test_execOfPausedContainer(self) -> None:
        """
        An exec reports the container's pausing and paused status.
        """
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        self.expect(bundle, "pause", "c1").hold()
        pausing = self.call(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        self.assertEqual(self.status("c1", "e1"), task_types_pb2.PAUSING)
        self.runc.pending()[0].finish()
        self.successResultOf(pausing)
        self.assertEqual(self.status("c1", "e1"), task_types_pb2.PAUSED)

    def test_unknown(self) -> None:
        """
        Unknown container and exec ids are NOT_FOUND.
        """
        self.runContainer()
        self.assertCallFails(
            self.service.State,
            task_pb2.StateRequest(id="nope"),
            Code.NOT_FOUND,
            "container not created: not found",
        )
        self.assertCallFails(
            self.service.State,
            task_pb2.StateRequest(id="c1", exec_id="nope"),
            Code.NOT_FOUND,
            "process does not exist nope: not found",
        )


class PauseResumeTests(TaskServiceTestCase):
    """
    C{Pause} and C{Resume}.
    """

    def test_pauseResume(self) -> None:
        """
        C{Pause} runs C{runc pause ID} and publishes C{/tasks/paused};
        C{Resume} runs C{runc resume ID} and publishes C{/tasks/resumed}.
        """
        bundle = self.runContainer()
        self.expect(bundle, "pause", "c1")
        self.succeed(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        self.assertEqual(
            self.publisher.events[-1],
            ("/tasks/paused", events_pb2.TaskPaused(container_id="c1")),
        )
        self.expect(bundle, "resume", "c1")
        self.succeed(self.service.Resume, task_pb2.ResumeRequest(id="c1"))
        self.assertEqual(
            self.publisher.events[-1],
            ("/tasks/resumed", events_pb2.TaskResumed(container_id="c1")),
        )

    def test_pauseRefused(self) -> None:
        """
        C{Pause} is refused in created, pausing, paused and stopped states.
        """
        bundle = self.create()
        request = task_pb2.PauseRequest(id="c1")
        self.assertCallFails(
            self.service.Pause,
            request,
            Code.UNKNOWN,
            "cannot pause task in created state",
        )
        self.start(bundle)
        self.expect(bundle, "pause", "c1").hold()
        pausing = self.call(self.service.Pause, request)
        self.assertCallFails(
            self.service.Pause, request, Code.UNKNOWN, "cannot pause a paused container"
        )
        self.runc.pending()[0].finish()
        self.successResultOf(pausing)
        self.assertCallFails(
            self.service.Pause, request, Code.UNKNOWN, "cannot pause a paused container"
        )
        self.expect(bundle, "resume", "c1")
        self.succeed(self.service.Resume, task_pb2.ResumeRequest(id="c1"))
        self.kernel.exit(100)
        self.assertCallFails(
            self.service.Pause,
            request,
            Code.UNKNOWN,
            "cannot pause a stopped container",
        )

    def test_resumeRefused(self) -> None:
        """
        C{Resume} is refused in created, running and stopped states.
        """
        bundle = self.create()
        request = task_pb2.ResumeRequest(id="c1")
        self.assertCallFails(
            self.service.Resume,
            request,
            Code.UNKNOWN,
            "cannot resume task in created state",
        )
        self.start(bundle)
        self.assertCallFails(
            self.service.Resume,
            request,
            Code.UNKNOWN,
            "cannot resume a running process",
        )
        self.kernel.exit(100)
        self.assertCallFails(
            self.service.Resume,
            request,
            Code.UNKNOWN,
            "cannot resume a stopped container",
        )
        self.assertEqual(
            self.publisher.topics(), ["/tasks/create", "/tasks/start", "/tasks/exit"]
        )

    def test_pauseFailure(self) -> None:
        """
        A failed runc pause is UNKNOWN C{OCI runtime pause failed: ...}, the
        init is running again and nothing is published.
        """
        bundle = self.runContainer()
        self.expect(bundle, "pause", "c1").logError("freezer broken").exit(1)
        self.assertCallFails(
            self.service.Pause,
            task_pb2.PauseRequest(id="c1"),
            Code.UNKNOWN,
            "OCI runtime pause failed: freezer broken",
        )
        self.assertEqual(self.status(), task_types_pb2.RUNNING)
        self.assertNotIn("/tasks/paused", self.publisher.topics())

    def test_resumeFailure(self) -> None:
        """
        A failed runc resume is UNKNOWN C{OCI runtime resume failed: ...},
        and the init stays paused.
        """
        bundle = self.runContainer()
        self.expect(bundle, "pause", "c1")
        self.succeed(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        self.expect(bundle, "resume", "c1").logError("thaw failed").exit(1)
        self.assertCallFails(
            self.service.Resume,
            task_pb2.ResumeRequest(id="c1"),
            Code.UNKNOWN,
            "OCI runtime resume failed: thaw failed",
        )
        self.assertEqual(self.status(), task_types_pb2.PAUSED)


class UpdateTests(TaskServiceTestCase):
    """
    C{Update}.
    """

    def update(self) -> Deferred[Any]:
        resources = {"memory": {"limit": 33554432}, "cpu": {"shares": 512}}
        result: Deferred[Any] = self.call(
            self.service.Update,
            task_pb2.UpdateTaskRequest(
                id="c1",
                resources=AnyMessage(
                    type_url="types.containerd.io/opencontainers/runtime-spec/1/"
                    "LinuxResources",
                    value=json.dumps(resources).encode(),
                ),
                annotations={"ignored": "yes"},
            ),
        )
        return result

    def test_update(self) -> None:
        """
        C{Update} runs C{runc update --resources - ID} with the resources'
        JSON on its stdin, which is then closed.
        """
        bundle = self.runContainer()
        self.expect(bundle, "update", "--resources", "-", "c1")
        self.successResultOf(self.update())
        call = self.lastCall()
        self.assertEqual(
            json.loads(call.stdin),
            {"memory": {"limit": 33554432}, "cpu": {"shares": 512}},
        )
        self.assertTrue(call.transport.stdinClosed)

    def test_createdAndPaused(self) -> None:
        """
        A created or paused container can be updated.
        """
        bundle = self.create()
        self.expect(bundle, "update", "--resources", "-", "c1")
        self.successResultOf(self.update())
        self.start(bundle)
        self.expect(bundle, "pause", "c1")
        self.succeed(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        self.expect(bundle, "update", "--resources", "-", "c1")
        self.successResultOf(self.update())

    def test_stopped(self) -> None:
        """
        A stopped container cannot be updated.
        """
        self.runContainer()
        self.kernel.exit(100)
        self.assertFails(
            self.update(), Code.UNKNOWN, "cannot update a stopped container"
        )

    def test_failure(self) -> None:
        """
        A failed runc update is UNKNOWN, with runc's output.
        """
        bundle = self.runContainer()
        self.expect(bundle, "update", "--resources", "-", "c1").stderr(
            b"bad limit\n"
        ).exit(1)
        self.assertFails(
            self.update(),
            Code.UNKNOWN,
            "runc did not terminate successfully: exit status 1: bad limit\n",
        )


class CheckpointTests(TaskServiceTestCase):
    """
    C{Checkpoint}.
    """

    def checkpoint(
        self, options: runc_options_pb2.CheckpointOptions | None = None
    ) -> Deferred[Any]:
        request = task_pb2.CheckpointTaskRequest(id="c1", path="/ckpt")
        if options is not None:
            request.options.CopyFrom(
                AnyMessage(
                    type_url="containerd.runc.v1.CheckpointOptions",
                    value=options.SerializeToString(),
                )
            )
        result: Deferred[Any] = self.call(self.service.Checkpoint, request)
        return result

    def test_defaults(self) -> None:
        """
        Without options, C{runc checkpoint --image-path P --work-path
        <bundle>/work/criu-work --leave-running ID}; the work directory is
        removed afterwards and nothing is published.
        """
        bundle = self.runContainer()
        work = os.path.join(bundle, "work", "criu-work")
        self.expect(
            bundle,
            "checkpoint",
            "--image-path",
            "/ckpt",
            "--work-path",
            work,
            "--leave-running",
            "c1",
        ).do(lambda call: os.makedirs(work))
        self.successResultOf(self.checkpoint())
        self.assertFalse(os.path.exists(work))
        self.assertEqual(self.publisher.topics(), ["/tasks/create", "/tasks/start"])

    def test_options(self) -> None:
        """
        Each checkpoint option gives its flag, in go-runc's order; C{exit}
        leaves out C{--leave-running}; a given work path is kept.
        """
        bundle = self.runContainer()
        work = os.path.join(self.root, "work")
        self.expect(
            bundle,
            "checkpoint",
            "--image-path",
            "/ckpt",
            "--work-path",
            work,
            "--tcp-established",
            "--ext-unix-sk",
            "--shell-job",
            "--file-locks",
            "--empty-ns",
            "network",
            "--empty-ns",
            "ipc",
            "c1",
        ).do(lambda call: os.makedirs(work))
        self.successResultOf(
            self.checkpoint(
                runc_options_pb2.CheckpointOptions(
                    exit=True,
                    open_tcp=True,
                    external_unix_sockets=True,
                    terminal=True,
                    file_locks=True,
                    empty_namespaces=["network", "ipc"],
                    work_path=work,
                )
            )
        )
        self.assertTrue(os.path.isdir(work))

    def test_failure(self) -> None:
        """
        A failed checkpoint is UNKNOWN C{<first line of the error> path=
        <bundle>/criu-dump.log}, with criu's C{dump.log} copied there.
        """
        bundle = self.runContainer()
        work = os.path.join(bundle, "work", "criu-work")

        def dump(call: RuncCall) -> None:
            os.makedirs(work)
            with open(os.path.join(work, "dump.log"), "w") as f:
                f.write("criu says no\n")

        self.expect(
            bundle,
            "checkpoint",
            "--image-path",
            "/ckpt",
            "--work-path",
            work,
            "--leave-running",
            "c1",
        ).do(dump).stderr(b"criu failed: type NOTIFY errno 0\nmore\n").exit(1)
        dumpLog = os.path.join(bundle, "criu-dump.log")
        self.assertFails(
            self.checkpoint(),
            Code.UNKNOWN,
            "runc did not terminate successfully: exit status 1: "
            f"criu failed: type NOTIFY errno 0 path= {dumpLog}",
        )
        with open(dumpLog) as f:
            self.assertEqual(f.read(), "criu says no\n")

    def test_refusedByState(self) -> None:
        """
        A created or stopped container cannot be checkpointed.
        """
        bundle = self.create()
        self.assertFails(
            self.checkpoint(), Code.UNKNOWN, "cannot checkpoint a task in created state"
        )
        self.start(bundle)
        self.kernel.exit(100)
        self.assertFails(
            self.checkpoint(), Code.UNKNOWN, "cannot checkpoint a stopped container"
        )

    def test_paused(self) -> None:
        """
        A paused container can be checkpointed.
        """
        bundle = self.runContainer()
        self.expect(bundle, "pause", "c1")
        self.succeed(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        work = os.path.join(bundle, "work", "criu-work")
        self.expect(
            bundle,
            "checkpoint",
            "--image-path",
            "/ckpt",
            "--work-path",
            work,
            "--leave-running",
            "c1",
        )
        self.successResultOf(self.checkpoint())

    def test_unknownOptionsType(self) -> None:
        """
        Options of another type are UNKNOWN C{type with url X: not found}.
        """
        self.runContainer()
        result = self.call(
            self.service.Checkpoint,
            task_pb2.CheckpointTaskRequest(
                id="c1", path="/ckpt", options=AnyMessage(type_url="x.Y")
            ),
        )
        self.assertFails(result, Code.UNKNOWN, "type with url x.Y: not found")


class PidsTests(TaskServiceTestCase):
    """
    C{Pids}.
    """

    def test_pids(self) -> None:
        """
        C{Pids} runs C{runc ps --format json ID}; each pid is a
        C{ProcessInfo}, an exec's with C{containerd.runc.v1.ProcessDetails}.
        """
        bundle = self.runContainer(pid=100)
        self.startExec(bundle, "c1", "e1", pid=200)
        self.expect(bundle, "ps", "--format", "json", "c1").stdout(b"[100,150,200]\n")
        response = self.succeed(self.service.Pids, task_pb2.PidsRequest(id="c1"))
        details = runc_options_pb2.ProcessDetails(exec_id="e1")
        expected = task_pb2.PidsResponse(
            processes=[
                task_types_pb2.ProcessInfo(pid=100),
                task_types_pb2.ProcessInfo(pid=150),
                task_types_pb2.ProcessInfo(
                    pid=200,
                    info=AnyMessage(
                        type_url="containerd.runc.v1.ProcessDetails",
                        value=details.SerializeToString(),
                    ),
                ),
            ]
        )
        self.assertEqual(response, expected)

    def test_failure(self) -> None:
        """
        A failed runc ps is UNKNOWN.
        """
        bundle = self.runContainer()
        self.expect(bundle, "ps", "--format", "json", "c1").stderr(b"nope\n").exit(1)
        self.assertCallFails(
            self.service.Pids,
            task_pb2.PidsRequest(id="c1"),
            Code.UNKNOWN,
            "runc did not terminate successfully: exit status 1: nope\n",
        )


class StatsTests(TaskServiceTestCase):
    """
    C{Stats}.
    """

    def test_noCgroup(self) -> None:
        """
        Without a known cgroup, C{Stats} is NOT_FOUND C{cgroup does not
        exist}.
        """
        self.runContainer()
        self.assertCallFails(
            self.service.Stats,
            task_pb2.StatsRequest(id="c1"),
            Code.NOT_FOUND,
            "cgroup does not exist: not found",
        )

    def test_stats(self) -> None:
        """
        C{Stats} is an C{Any} of the cgroup's metrics with its type URL,
        still after the exit, until C{Delete}.
        """
        cgroup = FakeV2Cgroup()
        self.cgroups[100] = cgroup
        self.runContainer(pid=100)
        self.kernel.exit(100)
        response = self.succeed(self.service.Stats, task_pb2.StatsRequest(id="c1"))
        self.assertEqual(
            response.stats,
            AnyMessage(
                type_url="io.containerd.cgroups.v2.Metrics",
                value=cgroup.metrics.SerializeToString(),
            ),
        )

    def test_readFailure(self) -> None:
        """
        A cgroup that cannot be read is UNKNOWN.
        """
        cgroup = FakeCgroup()
        cgroup.statsError = OSError(2, "gone")
        self.cgroups[100] = cgroup
        self.runContainer(pid=100)
        result = self.call(self.service.Stats, task_pb2.StatsRequest(id="c1"))
        failure = self.failureResultOf(result, TTRPCError)
        self.assertEqual(failure.value.code, Code.UNKNOWN)


class StatsErrorTests(TaskServiceTestCase):
    """
    C{Stats} errors that come from the cgroup.
    """

    def test_cgroupError(self) -> None:
        """
        A cgroup whose files cannot be parsed gives UNKNOWN too.
        """
        cgroup = FakeCgroup()
        cgroup.statsError = CgroupError("parse memory.stat: bad line")
        self.cgroups[100] = cgroup
        self.runContainer(pid=100)
        self.assertCallFails(
            self.service.Stats,
            task_pb2.StatsRequest(id="c1"),
            Code.UNKNOWN,
            "failed to read cgroup stats: parse memory.stat: bad line",
        )


class ConnectShutdownTests(TaskServiceTestCase):
    """
    C{Connect} and C{Shutdown}.
    """

    def test_connect(self) -> None:
        """
        C{Connect} gives the shim's pid and the task's; for an unknown id,
        task pid 0, and no error.
        """
        self.runContainer(pid=100)
        response = self.succeed(self.service.Connect, task_pb2.ConnectRequest(id="c1"))
        self.assertEqual(
            (response.shim_pid, response.task_pid, response.version),
            (os.getpid(), 100, ""),
        )
        response = self.succeed(self.service.Connect, task_pb2.ConnectRequest(id="x"))
        self.assertEqual((response.shim_pid, response.task_pid), (os.getpid(), 0))

    def test_shutdownWithContainer(self) -> None:
        """
        C{Shutdown} does nothing while the shim holds a container.
        """
        self.runContainer()
        self.succeed(self.service.Shutdown, task_pb2.ShutdownRequest(id="c1"))
        self.assertEqual(self.shutdown.shutdowns, 0)

    def test_shutdownWhileCreating(self) -> None:
        """
        C{Shutdown} does nothing while a container is being created.
        """
        bundle = self.bundle()
        self.expectCreate(bundle).pid(100).hold()
        creating = self.call(
            self.service.Create, task_pb2.CreateTaskRequest(id="c1", bundle=bundle)
        )
        self.succeed(self.service.Shutdown, task_pb2.ShutdownRequest(now=True))
        self.assertEqual(self.shutdown.shutdowns, 0)
        self.runc.pending()[0].finish()
        self.successResultOf(creating)

    def test_shutdownEmpty(self) -> None:
        """
        With no container left, C{Shutdown} shuts the shim down; the
        publisher is closed by the shutdown service's callbacks.
        """
        bundle = self.runContainer()
        self.kernel.exit(100)
        self.expect(bundle, "delete", "c1")
        self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        self.succeed(self.service.Shutdown, task_pb2.ShutdownRequest(id="c1"))
        self.assertEqual(self.shutdown.shutdowns, 1)
        self.assertEqual(self.shutdown.callbacks, [self.publisher.close])


class StdioCallTests(TaskServiceTestCase):
    """
    C{ResizePty} and C{CloseIO}, which go to the process's stdio.
    """

    def test_resize(self) -> None:
        """
        C{ResizePty} resizes the terminal of the process named.
        """
        bundle = self.runContainer(terminal=True, stdout="/out")
        self.addExec("c1", "e1", terminal=True)
        self.expectExec(bundle, "e1", terminal=True).pid(200)
        self.succeed(self.service.Start, task_pb2.StartRequest(id="c1", exec_id="e1"))
        self.succeed(
            self.service.ResizePty,
            task_pb2.ResizePtyRequest(id="c1", width=100, height=40),
        )
        self.succeed(
            self.service.ResizePty,
            task_pb2.ResizePtyRequest(id="c1", exec_id="e1", width=80, height=24),
        )
        self.assertEqual(self.io(0).resizes, [(100, 40)])
        self.assertEqual(self.io(1).resizes, [(80, 24)])

    def test_resizeStoppedExec(self) -> None:
        """
        A stopped exec's terminal cannot be resized; the init's can, in any
        state.
        """
        bundle = self.runContainer()
        self.startExec(bundle, "c1", "e1", pid=200)
        self.kernel.exit(200)
        self.assertCallFails(
            self.service.ResizePty,
            task_pb2.ResizePtyRequest(id="c1", exec_id="e1", width=1, height=1),
            Code.UNKNOWN,
            "cannot resize a stopped container",
        )
        self.kernel.exit(100)
        self.succeed(
            self.service.ResizePty,
            task_pb2.ResizePtyRequest(id="c1", width=1, height=1),
        )

    def test_closeIO(self) -> None:
        """
        C{CloseIO} closes the stdin of the process named, whatever C{stdin}
        says.
        """
        bundle = self.runContainer(stdin="/in")
        self.startExec(bundle, "c1", "e1", pid=200)
        self.succeed(self.service.CloseIO, task_pb2.CloseIORequest(id="c1"))
        self.succeed(
            self.service.CloseIO,
            task_pb2.CloseIORequest(id="c1", exec_id="e1", stdin=True),
        )
        self.assertEqual(self.io(0).calls.count("closeStdin"), 1)
        self.assertEqual(self.io(1).calls.count("closeStdin"), 1)

    def test_closeIOUnstartedExec(self) -> None:
        """
        C{CloseIO} on an exec without stdio yet does nothing.
        """
        self.runContainer()
        self.addExec()
        self.succeed(
            self.service.CloseIO, task_pb2.CloseIORequest(id="c1", exec_id="e1")
        )


class GroupingTests(TaskServiceTestCase):
    """
    One shim serves several containers (a pod): every call is keyed by
    container and exec id, and one container's failure leaves the others
    alone.
    """

    def test_twoContainers(self) -> None:
        """
        Two containers run side by side; each call reaches its own, with
        its own bundle in runc's command line, and an exit stops only its
        container.
        """
        first = self.runContainer("c1", pid=100)
        second = self.runContainer("c2", pid=110)
        self.expect(second, "kill", "c2", "15")
        self.succeed(self.service.Kill, task_pb2.KillRequest(id="c2", signal=15))
        self.kernel.exit(110, 143)
        self.assertEqual(self.status("c1"), task_types_pb2.RUNNING)
        self.assertEqual(self.status("c2"), task_types_pb2.STOPPED)
        [exit] = self.events("/tasks/exit")
        self.assertEqual((exit.container_id, exit.id), ("c2", "c2"))
        self.assertEqual(self.state("c1").bundle, first)
        self.assertEqual(self.state("c2").bundle, second)

    def test_failedCreateLeavesOthers(self) -> None:
        """
        A failed C{Create} of one container leaves the running one alone,
        and its id free.
        """
        first = self.runContainer("c1", pid=100)
        second = self.bundle("c2")
        self.expectCreate(second, "c2").logError("bad config").exit(1)
        self.assertCallFails(
            self.service.Create,
            task_pb2.CreateTaskRequest(id="c2", bundle=second),
            Code.UNKNOWN,
            "OCI runtime create failed: bad config",
        )
        self.assertEqual(self.status("c1"), task_types_pb2.RUNNING)
        self.startExec(first, "c1", "e1", pid=200)
        self.expectCreate(second, "c2").pid(110)
        self.succeed(
            self.service.Create, task_pb2.CreateTaskRequest(id="c2", bundle=second)
        )
        self.assertEqual(self.status("c2"), task_types_pb2.CREATED)

    def test_deadContainerLeavesOthers(self) -> None:
        """
        A container that died and was deleted leaves the other working, and
        the shim up.
        """
        first = self.runContainer("c1", pid=100)
        second = self.runContainer("c2", pid=110)
        self.kernel.exit(110, signal=SIGKILL)
        self.expect(second, "delete", "c2")
        self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c2"))
        self.succeed(self.service.Shutdown, task_pb2.ShutdownRequest(id="c2"))
        self.assertEqual(self.shutdown.shutdowns, 0)
        self.expect(first, "pause", "c1")
        self.succeed(self.service.Pause, task_pb2.PauseRequest(id="c1"))
        self.assertEqual(self.status("c1"), task_types_pb2.PAUSED)

    def test_execIdsPerContainer(self) -> None:
        """
        The same exec id in two containers names two execs.
        """
        first = self.runContainer("c1", pid=100)
        second = self.runContainer("c2", pid=110)
        self.startExec(first, "c1", "e1", pid=200)
        self.startExec(second, "c2", "e1", pid=210)
        self.kernel.exit(210, 1)
        self.assertEqual(self.status("c1", "e1"), task_types_pb2.RUNNING)
        self.assertEqual(self.status("c2", "e1"), task_types_pb2.STOPPED)
        [exit] = self.events("/tasks/exit")
        self.assertEqual((exit.container_id, exit.id, exit.pid), ("c2", "e1", 210))
        self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c2", exec_id="e1"))
        self.assertEqual(self.state("c1", "e1").pid, 200)


class OOMTests(TaskServiceTestCase):
    """
    OOM events.
    """

    def test_publishOOM(self) -> None:
        """
        An OOM in a watched container's cgroup publishes C{/tasks/oom}; the
        watch ends at C{Delete}.
        """
        cgroup = FakeCgroup()
        self.cgroups[100] = cgroup
        bundle = self.runContainer(pid=100)
        self.oomWatcher.oom("c1")
        self.assertEqual(
            self.publisher.events[-1],
            ("/tasks/oom", events_pb2.TaskOOM(container_id="c1")),
        )
        self.kernel.exit(100, signal=SIGKILL)
        self.expect(bundle, "delete", "c1")
        self.succeed(self.service.Delete, task_pb2.DeleteRequest(id="c1"))
        self.assertNotIn("c1", self.oomWatcher.watched)

    def test_oomBeforeExit(self) -> None:
        """
        An OOM kill counted but not yet reported when the init is reaped is
        published then, before its C{/tasks/exit}.
        """
        self.cgroups[100] = FakeCgroup()
        self.runContainer(pid=100)
        self.oomWatcher.killed("c1")
        self.kernel.exit(100, signal=SIGKILL)
        self.assertEqual(self.oomWatcher.checked, ["c1"])
        topics = [topic for topic, _ in self.publisher.events]
        self.assertEqual(topics[-2:], ["/tasks/oom", "/tasks/exit"])

    def test_oomCheckFails(self) -> None:
        """
        A watcher that fails to look at the cgroup when the init is reaped
        is logged; the exit is published all the same.
        """
        self.cgroups[100] = FakeCgroup()
        self.runContainer(pid=100)
        self.oomWatcher.checkError = OSError("bad file descriptor")
        self.kernel.exit(100, signal=SIGKILL)
        self.assertEqual(self.publisher.events[-1][0], "/tasks/exit")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_plugin(self) -> None:
        """
        The task plugin builds a L{TaskService} whose OOM watcher publishes
        C{/tasks/oom} through the event plugin.
        """
        watcher = FakeOOMWatcher()
        context = PluginContext(self.reactor, ShimConfig(namespace=NAMESPACE))
        publisher, shutdown = FakePublisher(), FakeShutdown()
        context.add(_registration(EVENT_PLUGIN, "publisher"), publisher)
        context.add(_registration(INTERNAL_PLUGIN, "shutdown"), shutdown)
        context.add(_registration(INTERNAL_PLUGIN, "oom"), watcher)
        context.add(_registration(INTERNAL_PLUGIN, "reaper"), self.kernel.reaper)
        context.add(_registration(INTERNAL_PLUGIN, "mount"), self.mounts)
        context.add(
            _registration(RUNTIME_PLUGIN, "runc"), RuncRuntime(self.runc, self.which)
        )
        service = taskPlugin.initialise(context)
        assert isinstance(service, TaskService)
        self.assertTrue(verifyObject(ITTRPCService, service))
        self.assertTrue(verifyObject(IPublisher, publisher))
        self.assertTrue(verifyObject(IShutdown, shutdown))
        service.publishOOM("c7")
        self.assertEqual(
            publisher.events, [("/tasks/oom", events_pb2.TaskOOM(container_id="c7"))]
        )
        self.assertEqual(shutdown.callbacks, [publisher.close])


def _registration(type: str, id: str) -> Any:
    from shimd.shim.plugin import Registration

    return Registration(type, id, lambda context: None)


class SeamTests(TaskServiceTestCase):
    """
    What the task service is given through the plugin registry, real and
    fake, provides the interfaces it is used through.
    """

    def test_fakes(self) -> None:
        """
        The fakes these tests hand in provide the interfaces.
        """
        self.assertTrue(verifyObject(IMounter, self.mounts))
        self.assertTrue(verifyObject(IReaper, self.kernel.reaper))
        runtime = RuncRuntime(self.runc, which=self.which)
        self.assertTrue(verifyObject(IOCIRuntimeFactory, runtime))
        self.assertTrue(
            verifyObject(
                IOCIRuntime,
                runtime.runtime(runc_options_pb2.Options(), NAMESPACE, "/b"),
            )
        )

    def test_plugins(self) -> None:
        """
        The reaper and mount plugins provide the interfaces; the reaper is
        installed once the reactor runs.
        """
        context = PluginContext(self.reactor, ShimConfig(namespace=NAMESPACE))
        self.assertTrue(verifyObject(IMounter, mounterPlugin.initialise(context)))
        self.assertTrue(verifyObject(IMounter, Mounter()))
        reaper = reaperPlugin.initialise(context)
        self.assertTrue(verifyObject(IReaper, reaper))
        self.assertEqual(
            [hook for hook, args, kwargs in self.reactor.whenRunningHooks],
            [reaper.install],
        )

    def test_runtimeOptions(self) -> None:
        """
        The runc runtime follows the container's options: binary, root per
        namespace, criu, systemd cgroups, the bundle's log.
        """
        options = runc_options_pb2.Options(
            binary_name="crun", root="/r", criu_path="/c", systemd_cgroup=True
        )
        runc = RuncRuntime(self.runc).runtime(options, "ns", "/b")
        self.assertEqual(
            runc.globalArguments(),
            [
                "--root",
                "/r/ns",
                "--log",
                "/b/log.json",
                "--log-format",
                "json",
                "--criu",
                "/c",
                "--systemd-cgroup",
            ],
        )
        self.assertEqual(runc.binary, "crun")

    def test_runtimeID(self) -> None:
        """
        The task service uses the C{runc} runtime plugin, or the only runtime
        plugin there is when C{runc} is not there.
        """
        context = PluginContext(self.reactor, ShimConfig(namespace=NAMESPACE))
        self.assertEqual(runtimeID(context), "runc")
        context.add(_registration(RUNTIME_PLUGIN, "crun"), RuncRuntime(self.runc))
        self.assertEqual(runtimeID(context), "crun")
        context.add(_registration(RUNTIME_PLUGIN, "runc"), RuncRuntime(self.runc))
        self.assertEqual(runtimeID(context), "runc")
