"""
The shim's own phases, measured by playing containerd's part: this process
prepares a bundle, runs the shim binary's C{start}, connects, and makes the
calls containerd makes for C{ctr run --rm}, then runs the binary's
C{delete}, timing each step for shimd and for the Go shim alike.

The phases:

  - C{start}: the launcher, from exec to exit (containerd waits for it);
  - C{ready}: from C{start}'s exit until the daemon answers C{Connect};
  - C{create}: the first C{Create}, answered (C{runc create} included);
  - C{task start}: C{Start} (C{runc start});
  - C{delete}: C{Delete} of the exited task (C{runc delete});
  - C{shutdown}: C{Shutdown} until the daemon has closed the connection;
  - C{delete action}: the binary's C{delete}, from exec to exit, in the
    bundle of the shim that is gone (its C{runtime} file is empty, as
    containerd leaves it).

shimd's C{start} forks the daemon from a warm fork server
(L{shimd.shim.forkserver}); with C{SHIMD_FORKSERVER=0} it spawns a fresh Python
instead, which is its cold start, measured apart.

The bundle is what containerd makes: C{config.json} (C{ctr oci spec}, with
our busybox root file system and a cgroup under the namespace), an empty
C{rootfs}, and the C{log} fifo, which this process holds open read-write as
containerd does. The containers run in a namespace of their own, so that
their runc state and cgroups are easy to find and remove.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks import procfs
from benchmarks.harness import SHIMD_SHIM, SHIMS, Bench, BenchError, Shim, rounds
from benchmarks.ttrpcclient import Client, connectWhenReady
from shimd.protos import task_pb2
from tests.e2e import host
from tests.e2e.containerd import RUNC_ROOT

PHASES = ("start", "ready", "create", "taskStart", "delete", "shutdown", "action")
COLD_PHASES = ("start", "ready")

Samples = dict[str, list[float]]


def startAddress(output: bytes) -> str:
    """
    The address in C{start}'s output: a plain address, or the JSON the
    containerd 1.7 and 2.x Go shims print (C{{"version": 3, "address": ...,
    "protocol": "ttrpc"}}).
    """
    text = output.decode().strip()
    if text.startswith("{"):
        return str(json.loads(text)["address"])
    return text


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


class DirectShims:
    """
    Bundles of our own and shims started on them, not through containerd
    (though the shims publish their events to it, as they would).

    @ivar wrap: when set, what runs the shim binary's command line instead
        (a profiler, say).
    """

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.namespace = f"{bench.namespace.name}-direct"
        self.directory = os.path.join(bench.scratch, "direct", self.namespace)
        os.makedirs(self.directory)
        spec = json.loads(bench.ctrOK("oci", "spec", namespaced=False))
        spec["root"] = {"path": bench.rootfs, "readonly": True}
        spec["process"]["terminal"] = False
        spec["process"]["env"] = ["PATH=/bin"]
        self._spec = spec
        self._count = 0
        self._live: dict[str, int] = {}
        self.wrap: Callable[[list[str]], list[str]] | None = None
        bench.addCleanup(self.cleanUp)

    def environment(self, cold: bool) -> dict[str, str]:
        """
        The environment containerd gives the shim binary, plus
        C{SHIMD_FORKSERVER=0} for a cold start.
        """
        environ = self.bench.environment()
        environ["TTRPC_ADDRESS"] = self.bench.containerd.ttrpcAddress
        environ["GOMAXPROCS"] = "2"
        if cold:
            environ["SHIMD_FORKSERVER"] = "0"
        else:
            environ.pop("SHIMD_FORKSERVER", None)
        return environ

    def prepare(self, containerID: str, command: Sequence[str]) -> str:
        """
        Make a bundle as containerd does.

        @return: its path.
        """
        bundle = os.path.join(self.directory, containerID)
        os.mkdir(bundle, 0o700)
        os.mkdir(os.path.join(bundle, "rootfs"), 0o711)
        spec = json.loads(json.dumps(self._spec))
        spec["process"]["args"] = list(command)
        spec["linux"]["cgroupsPath"] = f"/{self.namespace}/{containerID}"
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        os.mkfifo(os.path.join(bundle, "log"), 0o700)
        return bundle

    def flags(self, containerID: str) -> list[str]:
        return [
            "-namespace",
            self.namespace,
            "-address",
            self.bench.containerd.address,
            "-publish-binary",
            "containerd",
            "-id",
            containerID,
        ]

    def runBinary(
        self, shim: Shim, arguments: list[str], bundle: str, cold: bool
    ) -> tuple[float, bytes]:
        """
        Run the shim binary to completion in the bundle, timed.

        @return: the time taken and its output.
        """
        command = [shim.binary, *arguments]
        if self.wrap is not None:
            command = self.wrap(command)
        started = time.perf_counter()
        result = subprocess.run(
            command,
            cwd=bundle,
            env=self.environment(cold),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise BenchError(
                f"{shim.label} {arguments[-1]}: exit {result.returncode}: "
                + (result.stderr + result.stdout).decode("utf-8", "replace").strip()
            )
        return elapsed, result.stdout

    def lifecycle(self, shim: Shim, cold: bool = False) -> dict[str, float | bool]:
        """
        One container's life through the shim, each phase timed.

        @return: the seconds of each of L{PHASES}, and C{"forked"}: whether
            the daemon's parent is a shimd fork server.
        """
        self._count += 1
        containerID = f"{shim.name}{'-cold' if cold else ''}-{self._count}"
        bundle = self.prepare(containerID, ["/bin/true"])
        log = os.open(os.path.join(bundle, "log"), os.O_RDWR | os.O_NONBLOCK)
        client: Client | None = None
        found: dict[str, float | bool] = {}
        try:
            found["start"], output = self.runBinary(
                shim, [*self.flags(containerID), "start"], bundle, cold
            )
            exited = time.perf_counter()
            address = startAddress(output)
            client, answer, answered = connectWhenReady(
                address, self.namespace, containerID
            )
            found["ready"] = answered - exited
            self._live[containerID] = answer.shim_pid
            found["forked"] = procfs.isForkServer(procfs.parentOf(answer.shim_pid))
            started = time.perf_counter()
            client.call(
                "Create",
                task_pb2.CreateTaskRequest(id=containerID, bundle=bundle),
                task_pb2.CreateTaskResponse,
            )
            found["create"] = time.perf_counter() - started
            started = time.perf_counter()
            client.call(
                "Start", task_pb2.StartRequest(id=containerID), task_pb2.StartResponse
            )
            found["taskStart"] = time.perf_counter() - started
            client.call(
                "Wait", task_pb2.WaitRequest(id=containerID), task_pb2.WaitResponse
            )
            started = time.perf_counter()
            client.call(
                "Delete",
                task_pb2.DeleteRequest(id=containerID),
                task_pb2.DeleteResponse,
            )
            found["delete"] = time.perf_counter() - started
            started = time.perf_counter()
            client.shutdown()
            found["shutdown"] = time.perf_counter() - started
            client.close()
            client = None
            self._waitGone(answer.shim_pid)
            del self._live[containerID]
            found["action"], _ = self.runBinary(
                shim,
                [*self.flags(containerID), "-bundle", bundle, "delete"],
                bundle,
                cold,
            )
        except (OSError, subprocess.SubprocessError, TimeoutError) as e:
            raise BenchError(f"{shim.label} direct lifecycle: {e!r}") from e
        finally:
            if client is not None:
                client.close()
            os.close(log)
            self._remove(containerID)
        return found

    def _waitGone(self, pid: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while host.isAlive(pid):
            if time.monotonic() > deadline:
                raise BenchError(f"shim {pid} still there {timeout} s after Shutdown")
            time.sleep(0.002)

    def _remove(self, containerID: str) -> None:
        """
        Remove a container's shim (if still there), runc state and bundle.
        """
        pid = self._live.pop(containerID, None)
        if pid is not None:
            host.kill(pid)
        root = os.path.join(RUNC_ROOT, self.namespace)
        if os.path.exists(os.path.join(root, containerID)):
            subprocess.run(
                ["runc", "--root", root, "delete", "--force", containerID],
                capture_output=True,
                env=self.bench.environment(),
                check=False,
            )
        shutil.rmtree(os.path.join(self.directory, containerID), ignore_errors=True)

    def cleanUp(self) -> None:
        """
        Remove everything of the direct namespace: shims, runc state,
        cgroups, bundles.
        """
        for containerID in list(self._live):
            self._remove(containerID)
        for pid in host.processesWorkingIn(self.directory, below=True):
            host.kill(pid)
        root = os.path.join(RUNC_ROOT, self.namespace)
        for containerID in os.listdir(root) if os.path.isdir(root) else []:
            subprocess.run(
                ["runc", "--root", root, "delete", "--force", containerID],
                capture_output=True,
                env=self.bench.environment(),
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)
        for path in host.cgroupDirectories(f"/{self.namespace}"):
            for directory in sorted(
                (d for d, _, _ in os.walk(path)), key=len, reverse=True
            ):
                _rmdir(directory)
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class PhaseSamples:
    """
    What L{phases} measured.

    @ivar warm: samples by phase and shim, shimd with its fork server warm.
    @ivar cold: shimd's cold samples by phase.
    @ivar forked: C{{"forked": n, "of": m}}: how many warm shimd daemons the
        fork server forked.
    """

    warm: dict[str, Samples]
    cold: dict[str, Samples]
    forked: dict[str, int]


def phases(bench: Bench, count: int, coldCount: int, warmups: int) -> PhaseSamples:
    """
    C{count} interleaved direct lifecycles per shim (shimd with its fork
    server warm), and C{coldCount} cold shimd lifecycles interleaved with
    them.
    """
    direct = DirectShims(bench)
    found = PhaseSamples(
        warm={phase: {"shimd": [], "go": []} for phase in PHASES},
        cold={phase: {"shimd": []} for phase in PHASES},
        forked={"forked": 0, "of": 0},
    )
    for _ in range(warmups):
        for shim in SHIMS:
            direct.lifecycle(shim)
    for index, order in rounds(count):
        for shim in order:
            cold = shim is SHIMD_SHIM and index < coldCount
            if cold and index % 2:
                _record(found.cold, direct.lifecycle(shim, cold=True), "shimd")
            result = direct.lifecycle(shim)
            _record(found.warm, result, shim.name)
            if shim is SHIMD_SHIM:
                found.forked["of"] += 1
                found.forked["forked"] += int(bool(result["forked"]))
            if cold and not index % 2:
                _record(found.cold, direct.lifecycle(shim, cold=True), "shimd")
    return found


def _record(
    into: dict[str, Samples], found: dict[str, float | bool], name: str
) -> None:
    for phase in PHASES:
        into[phase][name].append(float(found[phase]))
