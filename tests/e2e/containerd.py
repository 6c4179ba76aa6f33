"""
A private containerd for the end-to-end tests, and C{ctr} to drive it.

One containerd serves a whole trial process: L{sharedContainerd} starts it
the first time a test asks and stops it at interpreter exit. Every test gets
its own containerd namespace from L{TestNamespace}, whose L{cleanUp
<TestNamespace.cleanUp>} removes everything the test made and reports what
it had to remove by force.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, TypeVar

from tests.e2e import host

T = TypeVar("T")

TASK_PLUGIN_DIR = "io.containerd.runtime.v2.task"
RUNC_ROOT = "/run/containerd/runc"
SHIM_SOCKET_DIR = "/run/containerd/s"
FIFO_DIR = "/run/containerd/fifo"

SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CONFIG_TEMPLATE = """\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{ttrpcAddress}"

[debug]
  level = "debug"
"""


class CtrResult(NamedTuple):
    """
    What one C{ctr} command did.
    """

    code: int
    out: str
    err: str


class CtrTimeout(AssertionError):
    """
    A C{ctr} command did not finish in time; it was killed.
    """


def waitUntil(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """
    Poll C{predicate} until it returns something true, for at most
    C{timeout} seconds.

    @return: the first true value.
    @raise AssertionError: naming C{what} when time runs out.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class PrivateContainerd:
    """
    A containerd of our own: root, state, sockets and log under one
    temporary directory, the CRI plugin disabled, debug logging (so the
    shims' log fifo lines end up in L{log} as well).
    """

    def __init__(self, baseDir: str | None = None) -> None:
        """
        @ivar wrapper: a command that runs containerd's command line after
            setting up its process context (it must C{exec} it, so that
            L{process} is containerd itself).
        """
        if baseDir is None:
            baseDir = tempfile.mkdtemp(prefix="shimd-e2e-", dir="/tmp")
        self.baseDir = baseDir
        self.address = os.path.join(baseDir, "c.sock")
        self.ttrpcAddress = self.address + ".ttrpc"
        self.root = os.path.join(baseDir, "root")
        self.state = os.path.join(baseDir, "state")
        self.configPath = os.path.join(baseDir, "config.toml")
        self.logPath = os.path.join(baseDir, "containerd.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.wrapper: list[str] = []

    def writeConfig(self) -> None:
        """
        Write C{config.toml}.
        """
        with open(self.configPath, "w") as f:
            f.write(
                CONFIG_TEMPLATE.format(
                    root=self.root,
                    state=self.state,
                    address=self.address,
                    ttrpcAddress=self.ttrpcAddress,
                )
            )

    def environment(self) -> dict[str, str]:
        """
        The environment for containerd and C{ctr}: ours, with a C{PATH} on
        which the Go shim and runc are found.
        """
        env = dict(os.environ)
        path = env.get("PATH", "")
        env["PATH"] = f"{path}:{SEARCH_PATH}" if path else SEARCH_PATH
        return env

    def start(self, timeout: float = 30.0) -> None:
        """
        Start containerd and wait until C{ctr version} gets an answer from it.

        @raise AssertionError: when it exits or does not answer in time; the
            message carries the end of its log.
        """
        self.writeConfig()
        with open(self.logPath, "ab") as logFile:
            self.process = subprocess.Popen(
                [*self.wrapper, "containerd", "--config", self.configPath],
                stdin=subprocess.DEVNULL,
                stdout=logFile,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )

        def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"containerd exited with {self.process.returncode}:\n"
                    + self.logTail()
                )
            try:
                return self.ctr("version", timeout=5).code == 0
            except CtrTimeout:
                return False

        try:
            waitUntil(answers, timeout, "containerd to answer", interval=0.1)
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"{e}\n{self.logTail()}") from None

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop containerd: SIGTERM, and SIGKILL if it is still there after
        C{timeout} seconds. Shims it launched outlive it, as they should.
        """
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 30.0) -> None:
        """
        Stop containerd and start it again, on the same root, state, sockets
        and log. Running shims stay: the new containerd reconnects to them.
        """
        self.stop()
        self.start(timeout)

    def destroy(self) -> None:
        """
        Stop containerd, kill any shim it launched that is still running,
        unmount whatever is left under our directory, and remove it.
        """
        self.stop()
        leftovers = set(host.processesWithArguments("-address", self.address))
        leftovers.update(host.processesWorkingIn(self.state, below=True))
        for pid in leftovers:
            host.kill(pid)
        for mountPoint in host.mountsUnder(self.baseDir):
            subprocess.run(["umount", "-l", mountPoint], check=False)
        if not host.mountsUnder(self.baseDir):
            shutil.rmtree(self.baseDir, ignore_errors=True)

    def ctrCommand(self, *args: str, namespace: str | None = None) -> list[str]:
        """
        The argv of a C{ctr} command against this containerd.
        """
        argv = ["ctr", "-a", self.address]
        if namespace is not None:
            argv += ["-n", namespace]
        return argv + list(args)

    def ctr(
        self,
        *args: str,
        namespace: str | None = None,
        input: bytes | str | None = None,
        timeout: float = 60.0,
    ) -> CtrResult:
        """
        Run one C{ctr} command to completion.

        @param input: its stdin; C{/dev/null} when L{None}.
        @return: its exit code, stdout and stderr (decoded as UTF-8).
        @raise CtrTimeout: after killing it, when it takes more than
            C{timeout} seconds.
        """
        argv = self.ctrCommand(*args, namespace=namespace)
        if isinstance(input, str):
            input = input.encode()
        try:
            result = subprocess.run(
                argv,
                input=input,
                stdin=subprocess.DEVNULL if input is None else None,
                capture_output=True,
                timeout=timeout,
                env=self.environment(),
            )
        except subprocess.TimeoutExpired as e:
            raise CtrTimeout(
                f"{' '.join(argv)} did not finish in {timeout} s "
                f"(stdout {e.stdout!r}, stderr {e.stderr!r})"
            ) from None
        return CtrResult(
            result.returncode,
            result.stdout.decode("utf-8", "replace"),
            result.stderr.decode("utf-8", "replace"),
        )

    def logOffset(self) -> int:
        """
        The current length of the log, for L{log}C{(since=...)}.
        """
        try:
            return os.path.getsize(self.logPath)
        except OSError:
            return 0

    def log(self, since: int = 0) -> str:
        """
        containerd's log (its stderr, including the shims' log lines), from
        byte offset C{since}.
        """
        try:
            with open(self.logPath, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def logTail(self, lines: int = 40) -> str:
        """
        The last C{lines} lines of the log.
        """
        return "\n".join(self.log().splitlines()[-lines:])

    def bundlePath(self, namespace: str, containerID: str) -> str:
        """
        The bundle directory containerd makes for a task.
        """
        return os.path.join(self.state, TASK_PLUGIN_DIR, namespace, containerID)

    def shimAddress(self, namespace: str, groupID: str) -> str:
        """
        The address a runc-v2-compatible shim must serve for a task (or a
        group): C{unix:///run/containerd/s/} and the sha256 of our gRPC
        address joined with the namespace and id.
        """
        return host.shimAddress(self.address, namespace, groupID)


_shared: PrivateContainerd | None = None
_sharedFailure: AssertionError | None = None


def sharedContainerd() -> PrivateContainerd:
    """
    The containerd of this process, started on first use and stopped (and
    its directory removed) at interpreter exit. A failure to start is
    remembered, so later tests fail at once with the same reason.
    """
    global _shared, _sharedFailure
    if _sharedFailure is not None:
        raise _sharedFailure
    if _shared is None:
        containerd = PrivateContainerd()
        atexit.register(containerd.destroy)
        try:
            containerd.start()
        except AssertionError as e:
            _sharedFailure = e
            raise
        _shared = containerd
    return _shared


_namespaceCounter = itertools.count(1)


def uniqueNamespace(tag: str) -> str:
    """
    A namespace name nobody else uses: C{e2e-<tag>-<pid>-<n>}, a valid
    containerd identifier and short enough for cgroup and runc paths.
    """
    return f"e2e-{tag}-{os.getpid()}-{next(_namespaceCounter)}"


def parseTaskList(output: str) -> dict[str, tuple[int, str]]:
    """
    Parse C{ctr task ls}: C{{id: (pid, status)}}.
    """
    tasks = {}
    for line in output.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            tasks[fields[0]] = (int(fields[1]), fields[2])
    return tasks


class TestNamespace:
    """
    A containerd namespace of one test, and everything made in it.

    @ivar ids: container ids the test used; L{cleanUp} also looks for
        leftovers of these on the host.
    @ivar staleSockets: ids (of groups) whose shim is known to leave its
        socket file behind when it exits: L{cleanUp} removes it silently.
    """

    def __init__(self, containerd: PrivateContainerd, name: str) -> None:
        self.containerd = containerd
        self.name = name
        self.ids: set[str] = set()
        self.staleSockets: set[str] = set()

    def ctr(
        self,
        *args: str,
        input: bytes | str | None = None,
        timeout: float = 60.0,
    ) -> CtrResult:
        """
        Run C{ctr} in this namespace; see L{PrivateContainerd.ctr}.
        """
        return self.containerd.ctr(
            *args, namespace=self.name, input=input, timeout=timeout
        )

    def ctrCommand(self, *args: str) -> list[str]:
        """
        The argv of a C{ctr} command in this namespace.
        """
        return self.containerd.ctrCommand(*args, namespace=self.name)

    def tasks(self) -> dict[str, tuple[int, str]]:
        """
        C{ctr task ls}, parsed: C{{id: (pid, status)}}.
        """
        result = self.ctr("task", "ls")
        if result.code != 0:
            raise AssertionError(f"ctr task ls failed: {result}")
        return parseTaskList(result.out)

    def _listIDs(self, *args: str) -> list[str]:
        result = self.ctr(*args, timeout=30)
        if result.code != 0:
            return []
        return result.out.split()

    def _removeTasks(self, problems: list[str]) -> None:
        for taskID in self._listIDs("task", "ls", "-q"):
            self.ids.add(taskID)
            self.ctr("task", "kill", "-a", "-s", "SIGKILL", taskID, timeout=30)

            def deleted(taskID: str = taskID) -> bool:
                result = self.ctr("task", "rm", "-f", taskID, timeout=30)
                return result.code == 0 or "not found" in result.err

            try:
                waitUntil(deleted, 20, f"task {taskID} to be deleted", 0.2)
            except AssertionError as e:
                problems.append(str(e))

    def _removeContainersAndImages(self, problems: list[str]) -> None:
        containers = self._listIDs("containers", "ls", "-q")
        self.ids.update(containers)
        if containers:
            result = self.ctr("containers", "rm", *containers, timeout=30)
            if result.code != 0:
                problems.append(f"ctr containers rm: {result.err.strip()}")
        images = self._listIDs("images", "ls", "-q")
        if images:
            result = self.ctr("images", "rm", "--sync", *images, timeout=60)
            if result.code != 0:
                problems.append(f"ctr images rm: {result.err.strip()}")

    def _removeNamespace(self, problems: list[str]) -> None:
        refusals: list[str] = []
        # On a unified host, containerd 2.x's ctr fails "namespaces rm
        # --cgroup" ("cgroups: invalid group path": it loads the cgroup by a
        # path without its leading slash): the cgroup is removed by
        # cleanUp instead.
        options = [] if host.unified() else ["--cgroup"]

        def removed() -> bool:
            result = self.containerd.ctr(
                "namespaces", "rm", *options, self.name, timeout=30
            )
            refusals[:] = [result.err.strip()]
            return result.code == 0 or "not found" in result.err

        try:
            waitUntil(removed, 20, f"namespace {self.name} to be removed", 0.2)
        except AssertionError as e:
            problems.append(f"{e}: {refusals[0] if refusals else ''}")

    def cleanUp(self) -> None:
        """
        Kill and delete every task, delete every container and image, remove
        the namespace; then make sure that nothing of the namespace is left
        on the host (processes, shims, runc state, mounts, cgroups, shim
        sockets), removing by force whatever is.

        @raise AssertionError: listing anything that had to be removed by
            force or could not be removed: a leak.
        """
        problems: list[str] = []
        self._removeTasks(problems)
        self._removeContainersAndImages(problems)
        problems.extend(self.removeHostLeftovers())
        self._removeNamespace(problems)
        for path in host.cgroupDirectories(f"/{self.name}"):
            _rmdir(path)
        if problems:
            raise AssertionError(
                f"namespace {self.name} left things behind:\n  " + "\n  ".join(problems)
            )

    def shimProcesses(self) -> list[int]:
        """
        Shim processes (of any runtime) that our containerd launched for this
        namespace: those given C{-namespace NAME -address OURS}, and those
        working in one of the namespace's bundle directories.
        """
        byArguments = {
            pid
            for pid in host.processesWithArguments("-namespace", self.name)
            if self.containerd.address in host.arguments(pid)
        }
        bundles = os.path.join(self.containerd.state, TASK_PLUGIN_DIR, self.name)
        byDirectory = set(host.processesWorkingIn(bundles, below=True))
        return sorted(byArguments | byDirectory)

    def removeHostLeftovers(self) -> list[str]:
        """
        Remove by force what is left of this namespace's containers on the
        host, and say what that was. The namespace's own parent cgroups and
        runc root are not containers' leftovers: they are removed silently
        (the cgroups by L{cleanUp}, after the namespace).
        """
        leaks: list[str] = []
        try:
            waitUntil(lambda: not self.shimProcesses(), 5, "the shims to exit", 0.1)
        except AssertionError:
            pass
        for pid in self.shimProcesses():
            leaks.append(f"shim process {pid}: {host.commandLine(pid)}")
            host.kill(pid)
        for pid in host.processesInCgroup(f"/{self.name}"):
            leaks.append(f"container process {pid}: {host.commandLine(pid)}")
            host.kill(pid)
        try:
            waitUntil(
                lambda: not host.processesInCgroup(f"/{self.name}"),
                10,
                "killed container processes to go",
            )
        except AssertionError as e:
            leaks.append(str(e))
        runcRoot = os.path.join(RUNC_ROOT, self.name)
        for containerID in _listDir(runcRoot):
            leaks.append(f"runc state {runcRoot}/{containerID}")
            subprocess.run(
                ["runc", "--root", runcRoot, "delete", "--force", containerID],
                capture_output=True,
                env=self.containerd.environment(),
                check=False,
            )
            shutil.rmtree(os.path.join(runcRoot, containerID), ignore_errors=True)
        _rmdir(runcRoot)
        bundles = os.path.join(self.containerd.state, TASK_PLUGIN_DIR, self.name)
        for mountPoint in host.mountsUnder(bundles):
            leaks.append(f"mount {mountPoint}")
            subprocess.run(["umount", "-l", mountPoint], check=False)
        for entry in _listDir(bundles):
            leaks.append(f"bundle {bundles}/{entry}")
            if not host.mountsUnder(os.path.join(bundles, entry)):
                shutil.rmtree(os.path.join(bundles, entry), ignore_errors=True)
        for containerID in sorted(self.ids):
            socket = host.socketPath(
                self.containerd.shimAddress(self.name, containerID)
            )
            if os.path.exists(socket):
                if containerID not in self.staleSockets:
                    leaks.append(f"shim socket {socket} of {containerID}")
                os.unlink(socket)
        for path in host.cgroupDirectories(f"/{self.name}"):
            for directory in sorted(
                (d for d, _, _ in os.walk(path)), key=len, reverse=True
            ):
                if directory != path:
                    leaks.append(f"cgroup {directory}")
                    _rmdir(directory)
        return leaks


def _listDir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


_version: list[tuple[int, int]] = []


def containerdVersion() -> tuple[int, int]:
    """
    The major and minor version of the C{containerd} on our C{PATH} (what
    C{containerd --version} says), asked once per process; C{(0, 0)} when it
    cannot say.
    """
    if not _version:
        path = f"{os.environ.get('PATH', '')}:{SEARCH_PATH}"
        binary = shutil.which("containerd", path=path)
        found = (0, 0)
        if binary is not None:
            output = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, check=False
            ).stdout
            match = re.search(r" v?(\d+)\.(\d+)\.\d+", output)
            if match:
                found = (int(match.group(1)), int(match.group(2)))
        _version.append(found)
    return _version[0]


def unknownSuffix() -> str:
    """
    What C{ctr} appends to an error of code UNKNOWN: C{": unknown"} up to
    containerd 1.7; nothing from 2.0, whose error conversion leaves an
    unknown error's text as it is.
    """
    return ": unknown" if containerdVersion() < (2, 0) else ""


def missingExecutables(names: Iterable[str]) -> list[str]:
    """
    Those of C{names} not found on our C{PATH} extended with the sbin
    directories.
    """
    path = f"{os.environ.get('PATH', '')}:{SEARCH_PATH}"
    return [name for name in names if shutil.which(name, path=path) is None]


def parseMetricsTable(output: str) -> dict[str, str]:
    """
    Parse the C{METRIC VALUE} table of C{ctr task metrics}.
    """
    metrics = {}
    inTable = False
    for line in output.splitlines():
        if line.startswith("METRIC"):
            inTable = True
            continue
        if inTable and line.strip():
            name, _, value = line.strip().partition(" ")
            metrics[name] = value.strip()
    return metrics


def parseProcessList(output: str) -> dict[int, str]:
    """
    Parse C{ctr task ps}: C{{pid: info}}.
    """
    processes = {}
    for line in output.splitlines()[1:]:
        match = re.match(r"\s*(\d+)\s+(.*?)\s*$", line)
        if match:
            processes[int(match.group(1))] = match.group(2)
    return processes


def splitCommand(command: str) -> Sequence[str]:
    """
    C{/bin/sh -c COMMAND} as argv.
    """
    return ["/bin/sh", "-c", command]
