"""
Pods the way Kubernetes runs them: a kubelet's CRI calls to containerd's CRI
plugin, with shimd as the runtime handler C{pyrunc}, and the very same
tests with containerd's Go shim as the handler C{runc}, so that they encode
what containerd really does.

Each pod uses the host's network (no CNI), its own cgroup parent and its own
log directory; after it is removed nothing of it may be left (see
L{tests.cri.containerd.podLeftovers}).
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.trial.unittest import SkipTest, TestCase

from tests.cri import cri_api_pb2 as api
from tests.cri.client import CRIClient, CRIError, grpcMissing
from tests.cri.containerd import (
    BUSYBOX_IMAGE,
    CRIContainerd,
    podLeftovers,
    sharedCRIContainerd,
)
from tests.e2e import host
from tests.e2e.containerd import waitUntil
from tests.e2e.runtimes import GO, SHIMD, Runtime, missingPrerequisites

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object

MiB = 1024 * 1024

# A line of a CRI container log: "<RFC 3339 time> <stream> <F|P> <content>".
LOG_LINE = re.compile(
    r"^(?P<time>\S+) (?P<stream>stdout|stderr) (?P<tag>[FP]) (?P<content>.*)$"
)
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")

_podCounter = itertools.count(1)


@dataclass
class Pod:
    """
    A pod sandbox a test runs, and the containers it created in it.

    @ivar config: the C{PodSandboxConfig} it was run with.
    @ivar cgroupParent: its cgroup parent, unique to the pod.
    @ivar sandboxID: its id, once running.
    @ivar containerIDs: the ids of its containers, in creation order.
    """

    config: api.PodSandboxConfig
    cgroupParent: str
    sandboxID: str = ""
    containerIDs: list[str] = field(default_factory=list)

    @property
    def logDirectory(self) -> str:
        """
        The directory of the pod's container logs.
        """
        return self.config.log_directory


def parseLog(data: str) -> dict[str, list[str]]:
    """
    The lines of a CRI container log by stream, each line checked for the
    CRI format (a full C{F} line, with an RFC 3339 timestamp).

    @raise ValueError: for a line that is not in that format.
    """
    streams: dict[str, list[str]] = {}
    for line in data.splitlines():
        match = LOG_LINE.match(line)
        if match is None or not RFC3339.match(match.group("time")):
            raise ValueError(f"not a CRI log line: {line!r}")
        if match.group("tag") != "F":
            raise ValueError(f"partial CRI log line for a short line: {line!r}")
        streams.setdefault(match.group("stream"), []).append(match.group("content"))
    return streams


def parentOf(pid: int) -> int | None:
    """
    The parent of process C{pid}, or L{None} when it is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def descendsFrom(pid: int, ancestor: int) -> bool:
    """
    Whether process C{pid} is a child, grandchild, ... of C{ancestor}.
    """
    parent = parentOf(pid)
    while parent is not None and parent > 1:
        if parent == ancestor:
            return True
        parent = parentOf(parent)
    return False


class PodTestsMixin(_Base):
    """
    Pods through containerd's CRI plugin with one runtime handler.

    @cvar runtime: the shim the handler runs.
    @cvar handler: the CRI runtime handler's name.
    """

    runtime: Runtime
    handler: str
    timeout = 300

    containerd: CRIContainerd
    client: CRIClient

    def setUp(self) -> None:
        missing = missingPrerequisites(self.runtime)
        if missing:
            raise SkipTest(
                f"CRI test of {self.runtime.binaryName} needs: " + ", ".join(missing)
            )
        reason = grpcMissing()
        if reason is not None:
            raise SkipTest(reason)
        self.containerd = sharedCRIContainerd()
        self._logStart = self.containerd.logOffset()
        self.client = self.containerd.client()
        self.addCleanup(self.client.close)

    # Diagnostics

    def containerdLog(self, lines: int = 60) -> str:
        """
        The last C{lines} lines containerd logged since this test began.
        """
        return "\n".join(self.containerd.log(self._logStart).splitlines()[-lines:])

    # Pods and containers

    def cgroupParent(self, number: int) -> str:
        """
        The cgroup parent of this process's pod number C{number}: a cgroup
        of its own, as the kubelet gives each pod.
        """
        return f"/shimd-cri-{self.runtime.name}-{os.getpid()}-{number}"

    def runPod(self, name: str) -> Pod:
        """
        Run a host-network pod sandbox with our handler; its removal and a
        check that nothing of it is left are cleanups.
        """
        cgroupParent = self.cgroupParent(next(_podCounter))
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(
                name=name, uid=str(uuid.uuid4()), namespace="shimd-cri"
            ),
            log_directory=os.path.abspath(self.mktemp()),
            linux=api.LinuxPodSandboxConfig(
                cgroup_parent=cgroupParent,
                security_context=api.LinuxSandboxSecurityContext(
                    namespace_options=api.NamespaceOption(network=api.NODE)
                ),
            ),
        )
        pod = Pod(config, cgroupParent)
        try:
            pod.sandboxID = self.client.runPodSandbox(config, self.handler)
        except CRIError as e:
            self.fail(f"{e}\ncontainerd log:\n{self.containerdLog()}")
        self.addCleanup(self.removePod, pod)
        return pod

    def removePod(self, pod: Pod) -> None:
        """
        Stop and remove a pod (if still there), then fail if that failed or
        if anything of it is left.
        """
        errors = []
        for call in (self.client.stopPodSandbox, self.client.removePodSandbox):
            try:
                call(pod.sandboxID)
            except CRIError as e:
                if e.code != "NOT_FOUND":
                    errors.append(str(e))
        try:
            self.assertNothingLeft(pod)
        finally:
            if errors:
                self.fail("removing the pod failed: " + "; ".join(errors))

    def assertNothingLeft(self, pod: Pod) -> None:
        """
        Fail, listing them, if a removed pod left anything behind (which is
        removed by force).
        """
        leaks = podLeftovers(
            self.containerd, pod.sandboxID, pod.containerIDs, pod.cgroupParent
        )
        if leaks:
            self.fail(
                f"pod {pod.sandboxID} left things behind:\n  " + "\n  ".join(leaks)
            )

    def startContainer(
        self,
        pod: Pod,
        name: str,
        command: Sequence[str],
        memoryLimit: int = 0,
    ) -> str:
        """
        Create and start a busybox container in C{pod}, in the kubelet's
        way: the host's network, a pid namespace of its own, its log at
        C{<name>/0.log} in the pod's log directory.

        @param memoryLimit: a memory limit in bytes (for swap as well), or
            0 for none.
        @return: its id.
        """
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name),
            image=api.ImageSpec(image=BUSYBOX_IMAGE),
            command=list(command),
            log_path=f"{name}/0.log",
            linux=api.LinuxContainerConfig(
                resources=api.LinuxContainerResources(
                    memory_limit_in_bytes=memoryLimit,
                    memory_swap_limit_in_bytes=memoryLimit,
                ),
                security_context=api.LinuxContainerSecurityContext(
                    namespace_options=api.NamespaceOption(
                        network=api.NODE, pid=api.CONTAINER
                    )
                ),
            ),
        )
        try:
            containerID = self.client.createContainer(pod.sandboxID, config, pod.config)
            pod.containerIDs.append(containerID)
            self.client.startContainer(containerID)
        except CRIError as e:
            self.fail(f"{e}\ncontainerd log:\n{self.containerdLog()}")
        return containerID

    def waitForOOMKilled(self, containerID: str) -> api.ContainerStatus:
        """
        Wait until the container is C{EXITED} with the reason C{OOMKilled}
        (which needs the shim's C{/tasks/oom} before its exit).

        A runtime known to lose C{/tasks/oom} (the Go shim, see
        L{tests.e2e.base.E2EMixin.waitForOOM}) leaves the container
        C{EXITED} 137 with the reason C{Error}: the test then skips, saying
        so; shimd's still fails.
        """
        try:
            return self.waitForState(containerID, api.CONTAINER_EXITED, "OOMKilled")
        except self.failureException:
            status = self.client.containerStatus(containerID)
            lost = (status.state, status.exit_code) == (api.CONTAINER_EXITED, 137)
            if not (self.runtime.losesOOM and lost):
                raise
            raise SkipTest(
                f"{self.runtime.binaryName} lost /tasks/oom of {containerID},"
                " its known race (containerd issue 8893, pull requests 12405"
                " and 12714)"
            ) from None

    def waitForState(
        self,
        containerID: str,
        state: int,
        reason: str | None = None,
        timeout: float = 30.0,
    ) -> api.ContainerStatus:
        """
        Poll C{ContainerStatus} until the container is in C{state} (and has
        C{reason}, if given).

        @return: that status.
        """

        def reached() -> api.ContainerStatus | None:
            status = self.client.containerStatus(containerID)
            if status.state != state:
                return None
            if reason is not None and status.reason != reason:
                return None
            return status

        name = api.ContainerState.Name(state)
        try:
            return waitUntil(reached, timeout, f"{containerID} to be {name}", 0.1)
        except AssertionError as e:
            self.fail(
                f"{e}: {self.client.containerStatus(containerID)}\n"
                f"containerd log:\n{self.containerdLog()}"
            )

    def waitForLog(
        self, status: api.ContainerStatus, expected: dict[str, list[str]]
    ) -> None:
        """
        Wait until the container's CRI log file holds exactly the C{expected}
        lines per stream, every line in the CRI format.
        """
        current: dict[str, list[str]] = {}

        def complete() -> bool:
            nonlocal current
            try:
                with open(status.log_path) as f:
                    current = parseLog(f.read())
            except FileNotFoundError:
                return False
            return current == expected

        try:
            waitUntil(complete, 30, f"the log {status.log_path}", 0.1)
        except ValueError as e:
            self.fail(f"{status.log_path}: {e}")
        except AssertionError:
            self.assertEqual(current, expected, status.log_path)

    def sandboxTaskStatus(self, pod: Pod) -> str:
        """
        The status of the pod's sandbox task as containerd (C{ctr task ls})
        shows it, or C{MISSING}.
        """
        tasks = self.containerd.k8sNamespace().tasks()
        return tasks.get(pod.sandboxID, (0, "MISSING"))[1]

    def assertShimBinary(self, containerID: str) -> None:
        """
        The bundle's C{shim-binary-path}, which containerd writes, is the
        runtime under test: the handler really ran the shim we mean.
        """
        with open(
            os.path.join(self.containerd.bundle(containerID), "shim-binary-path")
        ) as f:
            used = f.read()
        expected = self.runtime.binaryPath()
        assert expected is not None
        self.assertEqual(os.path.realpath(used), os.path.realpath(expected))

    def assertOneShim(self, pod: Pod, running: Sequence[str]) -> int:
        """
        The sandbox and the C{running} containers of C{pod} are served by
        one shim process: every one of their bundles names the pod's socket
        (the sandbox id's address) in its C{address} file; exactly one
        process listens on it, working in the sandbox's bundle; and there is
        no other shim process of our containerd in C{k8s.io}.

        A shimd daemon forked by its fork server shows C{python -m
        shimd.shim.forkserver} as its command line, so shims are found by their
        socket and working directory as well as by their arguments.
        Processes the shim itself started (a C{runc} call, which works in the
        shim's directory) are not other shims.

        @return: the shim's pid.
        """
        address = self.containerd.podShimAddress(pod.sandboxID)
        for containerID in [pod.sandboxID, *running]:
            bundle = self.containerd.bundle(containerID)
            self.assertEqual(host.bundleShimAddress(bundle), address, bundle)
        listeners = host.processesListeningOn(host.socketPath(address))
        self.assertEqual(len(listeners), 1, f"processes listening: {listeners}")
        [shim] = listeners
        self.assertEqual(
            host.workingDirectory(shim), self.containerd.bundle(pod.sandboxID)
        )
        shims = set(self.containerd.k8sNamespace().shimProcesses())
        for containerID in [pod.sandboxID, *running]:
            shims.update(host.processesWorkingIn(self.containerd.bundle(containerID)))
        shims = {pid for pid in shims if not descendsFrom(pid, shim)}
        self.assertEqual(
            shims,
            {shim},
            "shims: "
            + "; ".join(f"{pid}: {host.commandLine(pid)}" for pid in sorted(shims)),
        )
        return shim

    def assertExec(
        self, containerID: str, command: Sequence[str], result: tuple[bytes, bytes, int]
    ) -> None:
        """
        C{ExecSync} of C{command} gives C{(stdout, stderr, exit code)}.
        """
        try:
            response = self.client.execSync(containerID, command)
        except CRIError as e:
            self.fail(f"{e}\ncontainerd log:\n{self.containerdLog()}")
        self.assertEqual((response.stdout, response.stderr, response.exit_code), result)

    # Tests

    def test_podLifecycle(self) -> None:
        """
        A pod through the CRI plugin, as a kubelet drives it:

          - C{RunPodSandbox} with our handler gives a ready sandbox whose
            status names the handler and the node's network, run by our
            shim binary;
          - two long-running containers start in it, and the sandbox and
            both are served by a single shim process;
          - C{ExecSync} returns a command's stdout, stderr and exit code;
          - what a container writes lands in its CRI log file
            (C{log_directory}/C{log_path}) as C{<time> <stream> F <line>};
          - containers that exit with 0 and with 7 are C{EXITED} with those
            exit codes and the reasons C{Completed} and C{Error}; their
            neighbours and the sandbox keep running on the same shim and
            keep answering C{ExecSync};
          - C{StopPodSandbox} makes the sandbox not ready and kills the
            running containers (exit code 137);
          - after C{RemovePodSandbox} the CRI plugin knows nothing of the
            pod and nothing of it is left on the host.
        """
        pod = self.runPod("lifecycle")
        sandbox = self.client.podSandboxStatus(pod.sandboxID)
        self.assertEqual(
            (
                sandbox.state,
                sandbox.runtime_handler,
                sandbox.linux.namespaces.options.network,
            ),
            (api.SANDBOX_READY, self.handler, api.NODE),
        )
        self.assertShimBinary(pod.sandboxID)

        first = self.startContainer(
            pod, "first", ["/bin/sh", "-c", "echo out; echo err >&2; exec sleep 1000"]
        )
        second = self.startContainer(pod, "second", ["/bin/sleep", "1000"])
        firstStatus = self.waitForState(first, api.CONTAINER_RUNNING)
        self.waitForState(second, api.CONTAINER_RUNNING)
        shim = self.assertOneShim(pod, [first, second])

        self.assertExec(
            first,
            ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
            (b"out\n", b"err\n", 3),
        )
        self.assertEqual(
            firstStatus.log_path, os.path.join(pod.logDirectory, "first", "0.log")
        )
        self.waitForLog(firstStatus, {"stdout": ["out"], "stderr": ["err"]})

        done = self.startContainer(
            pod, "done", ["/bin/sh", "-c", "echo finished; exit 0"]
        )
        failed = self.startContainer(
            pod, "failed", ["/bin/sh", "-c", "echo failing >&2; exit 7"]
        )
        doneStatus = self.waitForState(done, api.CONTAINER_EXITED)
        failedStatus = self.waitForState(failed, api.CONTAINER_EXITED)
        self.assertEqual((doneStatus.exit_code, doneStatus.reason), (0, "Completed"))
        self.assertEqual((failedStatus.exit_code, failedStatus.reason), (7, "Error"))
        self.assertNotEqual(doneStatus.finished_at, 0)
        self.assertNotEqual(failedStatus.finished_at, 0)
        self.waitForLog(doneStatus, {"stdout": ["finished"]})
        self.waitForLog(failedStatus, {"stderr": ["failing"]})

        self.assertEqual(
            self.client.podSandboxStatus(pod.sandboxID).state, api.SANDBOX_READY
        )
        self.assertEqual(self.sandboxTaskStatus(pod), "RUNNING")
        for containerID in (first, second):
            self.waitForState(containerID, api.CONTAINER_RUNNING)
        self.assertExec(
            second, ["/bin/echo", "still", "here"], (b"still here\n", b"", 0)
        )
        self.assertEqual(self.assertOneShim(pod, [first, second]), shim)

        self.client.stopPodSandbox(pod.sandboxID)
        self.assertEqual(
            self.client.podSandboxStatus(pod.sandboxID).state, api.SANDBOX_NOTREADY
        )
        for containerID in (first, second):
            status = self.waitForState(containerID, api.CONTAINER_EXITED)
            self.assertEqual(status.exit_code, 137)

        self.client.removePodSandbox(pod.sandboxID)
        self.assertEqual(self.client.listPodSandboxes(pod.sandboxID), [])
        self.assertEqual(self.client.listContainers(pod.sandboxID), [])
        error = self.assertRaises(CRIError, self.client.containerStatus, first)
        self.assertEqual(error.code, "NOT_FOUND")
        self.assertNothingLeft(pod)

    def test_oomKillLeavesNeighboursRunning(self) -> None:
        """
        A container with a memory limit that runs out of memory (C{tail
        /dev/zero}) is C{EXITED} with exit code 137 and the reason
        C{OOMKilled}; the other container and the sandbox keep running, on
        the same single shim, and the other container keeps answering
        C{ExecSync}.
        """
        pod = self.runPod("oom")
        steady = self.startContainer(pod, "steady", ["/bin/sleep", "1000"])
        self.waitForState(steady, api.CONTAINER_RUNNING)
        hog = self.startContainer(pod, "hog", ["/bin/tail", "/dev/zero"], 32 * MiB)
        status = self.waitForOOMKilled(hog)
        self.assertEqual(status.exit_code, 137)

        self.waitForState(steady, api.CONTAINER_RUNNING)
        self.assertEqual(
            self.client.podSandboxStatus(pod.sandboxID).state, api.SANDBOX_READY
        )
        self.assertEqual(self.sandboxTaskStatus(pod), "RUNNING")
        self.assertExec(steady, ["/bin/echo", "alive"], (b"alive\n", b"", 0))
        self.assertOneShim(pod, [steady])


class PodTestsGo(PodTestsMixin, TestCase):
    runtime = GO
    handler = "runc"


class PodTestsShimd(PodTestsMixin, TestCase):
    runtime = SHIMD
    handler = "pyrunc"


class RuntimeOptionsTests(PodTestsMixin, TestCase):
    """
    shimd given runc options through the CRI plugin: a handler whose
    C{options} name a file of them (C{runtimeoptions.v1.Options}).
    """

    runtime = SHIMD
    handler = "pyrunc-options"

    def test_optionsFromFile(self) -> None:
        """
        The file's C{Root} is runc's state root: the pod's sandbox and
        container are created under it, in the C{k8s.io} namespace, and run.
        """
        pod = self.runPod("options")
        container = self.startContainer(pod, "app", ["/bin/sleep", "1000"])
        self.waitForState(container, api.CONTAINER_RUNNING)
        states = os.listdir(os.path.join(self.containerd.runcRoot, "k8s.io"))
        self.assertIn(pod.sandboxID, states)
        self.assertIn(container, states)
        self.assertExec(container, ["/bin/echo", "rooted"], (b"rooted\n", b"", 0))
