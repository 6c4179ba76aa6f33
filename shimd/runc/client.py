# -*- test-case-name: tests.test_runc -*-
"""
runc, driven under the reactor.

L{Runc} builds every command line the Go shim gives runc, in the same order,
and runs it with C{spawnProcess} through a L{RuncProtocol}: nothing waits on
a child, and the exit is reported by Twisted (which the shim's reaper leaves
Twisted's children to). Commands that take the container's stdio (create,
exec, restore) get the pipes as their fds 0-2; every other command gets
C{/dev/null} as stdin, or the bytes it needs, and its output is captured.

A failure is a L{RuncError} with the Go shim's text: the last error in the
bundle's C{log.json}, or else the command's exit status and output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attr
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from shimd.interfaces import IOCIRuntime, IOCIRuntimeFactory
from shimd.runc.options import DEFAULT_ROOT, globalArguments

LOG_TAIL = 64 * 1024

Spawner = Callable[
    [ProcessProtocol, str, Sequence[str], Mapping[str, str], dict[int, Any]], Any
]


class RuncError(Exception):
    """
    A runc command failed.

    @ivar message: the text the client sees.
    @ivar output: what runc printed, when it was captured.
    """

    def __init__(self, message: str, output: bytes = b"") -> None:
        super().__init__(message)
        self.message = message
        self.output = output

    def __str__(self) -> str:
        return self.message


@attr.s(frozen=True, auto_attribs=True)
class RunResult:
    """
    A finished runc command.
    """

    exitCode: int
    stdout: bytes
    output: bytes


class RuncProtocol(ProcessProtocol):
    """
    Supervises one runc process: writes its stdin, collects its output, and
    fires L{finished} when it has exited and its pipes are closed.
    """

    def __init__(self, stdin: bytes | None = None) -> None:
        self._stdin = stdin
        self.stdout = bytearray()
        self.output = bytearray()
        self.finished: Deferred[RunResult] = Deferred()

    def connectionMade(self) -> None:
        if self._stdin is not None:
            self.transport.write(self._stdin)  # type: ignore[union-attr]
            self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        self.output += data

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        error = reason.value
        if isinstance(error, ProcessDone):
            code = 0
        elif isinstance(error, ProcessTerminated):
            code = (
                error.exitCode
                if error.exitCode is not None
                else 128 + (error.signal or 0)
            )
        else:
            code = 255
        self.finished.callback(RunResult(code, bytes(self.stdout), bytes(self.output)))

    def kill(self) -> None:
        """
        Kill the process, when the call that runs it is cancelled.
        """
        try:
            self.transport.signalProcess(signal.SIGKILL)  # type: ignore[union-attr]
        except (ProcessExitedAlready, AttributeError):
            pass


def reactorSpawner(reactor: Any) -> Spawner:
    """
    Spawn with C{reactor.spawnProcess}.
    """

    def spawn(
        protocol: ProcessProtocol,
        executable: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        childFDs: dict[int, Any],
    ) -> Any:
        return reactor.spawnProcess(
            protocol, executable, list(argv), dict(env), childFDs=childFDs
        )

    return spawn


def lastRuntimeError(logPath: str) -> str:
    """
    The message of the last C{error} entry in runc's JSON log, or C{""}.
    Only the tail of the log is read: it grows with every runc call.
    """
    try:
        with open(logPath, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL))
            tail = f.read()
    except OSError:
        return ""
    message = ""
    for line in tail.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") == "error":
            message = str(entry.get("msg", "")).strip()
    return message


@implementer(IOCIRuntime)
class Runc:
    """
    runc, as configured for one container.

    @ivar binary: the runc executable, as given (looked up on C{$PATH}).
    @ivar root: runc's state root for the namespace (C{--root}).
    @ivar logPath: the bundle's C{log.json}.
    """

    def __init__(
        self,
        spawn: Spawner,
        binary: str,
        root: str,
        logPath: str,
        criu: str = "",
        systemdCgroup: bool = False,
        environ: Mapping[str, str] | None = None,
        which: Callable[[str], str | None] | None = None,
    ) -> None:
        """
        @param which: finds an executable on C{$PATH}; by default, looked up
            once and remembered.
        """
        self._spawn = spawn
        self._which = which or _which
        self.binary = binary or "runc"
        self.root = root
        self.logPath = logPath
        self.criu = criu
        self.systemdCgroup = systemdCgroup
        environment = dict(os.environ if environ is None else environ)
        environment.pop("NOTIFY_SOCKET", None)
        self._environ = environment

    def globalArguments(self) -> list[str]:
        """
        The flags before every subcommand, in go-runc's order.
        """
        return globalArguments(self.root, self.logPath, self.criu, self.systemdCgroup)

    def lastError(self) -> str:
        return lastRuntimeError(self.logPath)

    def create(
        self,
        id: str,
        bundle: str,
        pidFile: str,
        stdio: dict[int, int],
        consoleSocket: str | None = None,
        noPivot: bool = False,
        noNewKeyring: bool = False,
    ) -> Deferred[RunResult]:
        arguments = ["create", "--bundle", bundle, "--pid-file", pidFile]
        if consoleSocket:
            arguments += ["--console-socket", consoleSocket]
        if noPivot:
            arguments.append("--no-pivot")
        if noNewKeyring:
            arguments.append("--no-new-keyring")
        return self._lifecycle("OCI runtime create failed", [*arguments, id], stdio)

    def start(self, id: str) -> Deferred[RunResult]:
        return self._checked("OCI runtime start failed", ["start", id])

    def exec(
        self,
        id: str,
        processPath: str,
        pidFile: str,
        stdio: dict[int, int],
        consoleSocket: str | None = None,
    ) -> Deferred[RunResult]:
        arguments = ["exec", "--process", processPath]
        if consoleSocket:
            arguments += ["--console-socket", consoleSocket]
        arguments += ["--detach", "--pid-file", pidFile, id]
        return self._lifecycle("OCI runtime exec failed", arguments, stdio)

    def restore(
        self,
        id: str,
        bundle: str,
        imagePath: str,
        workPath: str,
        pidFile: str,
        stdio: dict[int, int],
        parentPath: str = "",
        consoleSocket: str | None = None,
        noPivot: bool = False,
    ) -> Deferred[RunResult]:
        arguments = ["restore", "--image-path", imagePath, "--work-path", workPath]
        if parentPath:
            arguments += ["--parent-path", parentPath]
        arguments += ["--detach", "--pid-file", pidFile]
        if consoleSocket:
            arguments += ["--console-socket", consoleSocket]
        if noPivot:
            arguments.append("--no-pivot")
        arguments += ["-no-subreaper", "--bundle", bundle, id]
        return self._lifecycle("OCI runtime restore failed", arguments, stdio)

    def kill(self, id: str, signal: int, all: bool = False) -> Deferred[RunResult]:
        arguments = ["kill", *(["--all"] if all else []), id, str(signal)]
        return self._run(arguments)

    def delete(self, id: str, force: bool = False) -> Deferred[RunResult]:
        return self._run(["delete", *(["--force"] if force else []), id])

    def pause(self, id: str) -> Deferred[RunResult]:
        return self._checked("OCI runtime pause failed", ["pause", id])

    def resume(self, id: str) -> Deferred[RunResult]:
        return self._checked("OCI runtime resume failed", ["resume", id])

    def update(self, id: str, resources: bytes) -> Deferred[RunResult]:
        """
        C{runc update --resources - ID}, the OCI LinuxResources JSON on stdin.
        """
        return self._run(["update", "--resources", "-", id], stdin=resources)

    def ps(self, id: str) -> Deferred[list[int]]:
        """
        The host pids of the container's processes.
        """

        def parse(result: RunResult) -> list[int]:
            if result.exitCode != 0:
                raise self._failure(result)
            try:
                pids = json.loads(result.stdout or b"null")
                return [int(pid) for pid in pids or []]
            except (ValueError, TypeError) as e:
                raise RuncError(str(e), result.output) from e

        return self._spawnCommand(["ps", "--format", "json", id]).addCallback(parse)

    def checkpoint(
        self,
        id: str,
        imagePath: str,
        workPath: str,
        openTCP: bool = False,
        externalUnixSockets: bool = False,
        terminal: bool = False,
        fileLocks: bool = False,
        emptyNamespaces: Sequence[str] = (),
        leaveRunning: bool = True,
    ) -> Deferred[RunResult]:
        arguments = ["checkpoint", "--image-path", imagePath, "--work-path", workPath]
        if openTCP:
            arguments.append("--tcp-established")
        if externalUnixSockets:
            arguments.append("--ext-unix-sk")
        if terminal:
            arguments.append("--shell-job")
        if fileLocks:
            arguments.append("--file-locks")
        for namespace in emptyNamespaces:
            arguments += ["--empty-ns", namespace]
        if leaveRunning:
            arguments.append("--leave-running")
        return self._run([*arguments, id])

    def _run(
        self, arguments: list[str], stdin: bytes | None = None
    ) -> Deferred[RunResult]:
        """
        Run a command whose output is captured; fail with the Go error text
        when it exits non-zero.
        """

        def check(result: RunResult) -> RunResult:
            if result.exitCode != 0:
                raise self._failure(result)
            return result

        return self._spawnCommand(arguments, stdin).addCallback(check)

    def _checked(self, what: str, arguments: list[str]) -> Deferred[RunResult]:
        """
        Run a lifecycle command whose failure is reported with runc's own
        last logged error.
        """
        return self._run(arguments).addErrback(self._explain, what)

    def _lifecycle(
        self, what: str, arguments: list[str], stdio: dict[int, int]
    ) -> Deferred[RunResult]:
        """
        Run a command that gets the container's stdio as its own.
        """

        def check(result: RunResult) -> RunResult:
            if result.exitCode != 0:
                raise RuncError(
                    f"{self.binary} did not terminate successfully: "
                    f"exit status {result.exitCode}"
                )
            return result

        running = self._spawnCommand(arguments, childFDs=dict(stdio))
        return running.addCallback(check).addErrback(self._explain, what)

    def _explain(self, failure: Failure, what: str) -> Failure:
        failure.trap(RuncError)
        message = lastRuntimeError(self.logPath) or str(failure.value)
        error = failure.value
        assert isinstance(error, RuncError)
        return Failure(RuncError(f"{what}: {message}", error.output))

    def _failure(self, result: RunResult) -> RuncError:
        output = result.output.decode("utf-8", "replace")
        return RuncError(
            f"{self.binary} did not terminate successfully: "
            f"exit status {result.exitCode}: {output}",
            result.output,
        )

    def _spawnCommand(
        self,
        arguments: list[str],
        stdin: bytes | None = None,
        childFDs: dict[int, Any] | None = None,
    ) -> Deferred[RunResult]:
        executable = self._which(self.binary)
        if executable is None:
            return fail(
                RuncError(f'exec: "{self.binary}": executable file not found in $PATH')
            )
        argv = [self.binary, *self.globalArguments(), *arguments]
        if childFDs is None:
            devnull = "w" if stdin is not None else _devnull()
            childFDs = {0: devnull, 1: "r", 2: "r"}
        protocol = RuncProtocol(stdin)
        finished = protocol.finished
        try:
            self._spawn(protocol, executable, argv, self._environ, childFDs)
        except OSError as e:
            return fail(RuncError(f"exec {self.binary}: {e}"))
        result: Deferred[RunResult] = Deferred(lambda _: protocol.kill())

        def deliver(outcome: RunResult | Failure) -> None:
            # Once cancelled, the killed process's end has nowhere to go.
            if not result.called:
                result.callback(outcome)

        finished.addBoth(deliver)
        return result


@implementer(IOCIRuntimeFactory)
class RuncRuntime:
    """
    runc, for each container: the runtime plugin C{runc}.

    @ivar spawn: starts the runc processes.
    @ivar which: finds runc on C{$PATH} (L{None}: looked up once and
        remembered).
    """

    def __init__(
        self, spawn: Spawner, which: Callable[[str], str | None] | None = None
    ) -> None:
        self.spawn = spawn
        self.which = which

    def runtime(self, options: Any, namespace: str, bundle: str) -> Runc:
        """
        runc as the container's options ask: binary, C{--root} (per
        namespace), C{--criu}, C{--systemd-cgroup}, logging to the bundle's
        C{log.json}.
        """
        return Runc(
            self.spawn,
            options.binary_name,
            os.path.join(options.root or DEFAULT_ROOT, namespace),
            os.path.join(bundle, "log.json"),
            criu=options.criu_path,
            systemdCgroup=options.systemd_cgroup,
            which=self.which,
        )


_executables: dict[str, str | None] = {}
_devnullFD: int | None = None


def _which(binary: str) -> str | None:
    """
    Look an executable up on C{$PATH} once; a miss is looked up again next
    time, in case it has been installed since.
    """
    found = _executables.get(binary)
    if found is None:
        found = shutil.which(binary)
        if found is not None:
            _executables[binary] = found
    return found


def _devnull() -> int:
    """
    A descriptor on C{/dev/null}, opened once and shared by every runc run.
    """
    global _devnullFD
    if _devnullFD is None:
        _devnullFD = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnullFD
