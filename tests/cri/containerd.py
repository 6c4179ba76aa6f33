"""
A private containerd with its CRI plugin enabled, the way a Kubernetes node
runs it, for the CRI tests.

It is a L{PrivateContainerd} (root, state, sockets and log under one
temporary directory) whose configuration enables the CRI plugin with two
runtime handlers, exactly as C{deploy/containerd-config.toml} has them:
C{runc} (containerd's Go C{containerd-shim-runc-v2}) and C{pyrunc} (shimd).
Pods use the host's network, so no CNI plugin or configuration is needed
(the CNI directories are empty; the CRI plugin reports C{NetworkReady} false
and runs host-network pods all the same). The sandbox ("pause") image is built
locally from busybox and imported, like the busybox image the containers
run: nothing is pulled.

One such containerd serves a whole trial process (L{sharedCRIContainerd}).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from tests.cri.client import CRIClient, CRIError
from tests.e2e import host
from tests.e2e.containerd import (
    RUNC_ROOT,
    TASK_PLUGIN_DIR,
    PrivateContainerd,
    TestNamespace,
    waitUntil,
)
from tests.e2e.rootfs import IMAGE_NAME, ociArchive
from tests.e2e.runtimes import SHIMD

K8S_NAMESPACE = "k8s.io"
CRI_PLUGIN_DIR = "io.containerd.grpc.v1.cri"
PAUSE_IMAGE = "localhost/shimd-pause:latest"
BUSYBOX_IMAGE = IMAGE_NAME
SHIMD_BINARY_NAME = "containerd-shim-pyrunc-v2"

# What a pod's sandbox container runs: busybox has no "pause", so a shell
# that sleeps until SIGTERM or SIGINT ends it with status 0.
PAUSE_COMMAND = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"

DEPLOY_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "deploy",
    "containerd-config.toml",
)

CRI_CONFIG_TEMPLATE = """\
version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{address}"

[ttrpc]
  address = "{ttrpcAddress}"

[debug]
  level = "debug"

# The pause image is imported, never pulled. AppArmor (whose default profile
# the CRI plugin would load with apparmor_parser) and SELinux are left out.
# The CRI plugin gives sandboxes an oom_score_adj
# of -998, which runc cannot set where containerd itself may not lower its
# score (e.g. in a container): restricting keeps it at containerd's own or
# above. The streaming server (unused) gets a free port on the loopback.
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pauseImage}"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

# No CNI plugin and no network configuration: pods use the host's network.
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cniBinDir}"
  conf_dir = "{cniConfDir}"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

"""


def pauseArchive() -> bytes:
    """
    The sandbox image as an OCI archive: the busybox layer, with an
    entrypoint that keeps running until SIGTERM or SIGINT.
    """
    return ociArchive(
        PAUSE_IMAGE,
        {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh", "-c", PAUSE_COMMAND]},
    )


# A shimd handler given runc options the only way containerd 1.6's CRI
# plugin can pass them to a runtime type of its own: a file named by
# runtimeoptions.v1.Options (README, Kubernetes).
OPTIONS_HANDLER = """
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pyrunc-options]
  runtime_type = "io.containerd.pyrunc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pyrunc-options.options]
    TypeUrl = "containerd.runc.v1.Options"
    ConfigPath = "{configPath}"
"""

# The Go shim and shimd with runc's systemd cgroup driver (the Kubernetes
# default on systemd hosts), for pods whose cgroup parent is a slice: the Go
# shim's runc options in their own table, shimd's in the file ConfigPath
# names. Only a host with systemd as init can run their pods.
SYSTEMD_HANDLERS = """
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-systemd]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc-systemd.options]
    SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pyrunc-systemd]
  runtime_type = "io.containerd.pyrunc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pyrunc-systemd.options]
    TypeUrl = "containerd.runc.v1.Options"
    ConfigPath = "{configPath}"
"""


def deployedRuntimeEntry() -> str:
    """
    The text of C{deploy/containerd-config.toml}: the C{runc} and C{pyrunc}
    handlers as the README tells users to configure them.
    """
    with open(DEPLOY_CONFIG) as f:
        return f.read()


class CRIContainerd(PrivateContainerd):
    """
    A private containerd with the CRI plugin enabled.

    @ivar shimdBinary: the shimd executable the C{pyrunc} handler must run.
        containerd finds C{containerd-shim-pyrunc-v2} on its C{PATH}; ours
        starts with a directory holding only a link of that name to this
        file, so that a checkout's shim is tested even when another one is
        installed in C{/usr/local/bin}.
    """

    def __init__(self, shimdBinary: str, baseDir: str | None = None) -> None:
        super().__init__(baseDir)
        self.shimdBinary = shimdBinary
        self.binDir = os.path.join(self.baseDir, "bin")
        self.cniBinDir = os.path.join(self.baseDir, "cni", "bin")
        self.cniConfDir = os.path.join(self.baseDir, "cni", "conf")
        self.imageDir = os.path.join(self.baseDir, "images")
        self.runcOptionsPath = os.path.join(self.baseDir, "runc-options.toml")
        self.systemdOptionsPath = os.path.join(self.baseDir, "systemd-options.toml")
        self.runcRoot = os.path.join(self.baseDir, "runc-root")

    def writeConfig(self) -> None:
        """
        Write C{config.toml}: the CRI plugin's settings and, verbatim,
        C{deploy/containerd-config.toml} (the C{runc} and C{pyrunc}
        handlers).
        """
        for directory in (self.binDir, self.cniBinDir, self.cniConfDir):
            os.makedirs(directory, exist_ok=True)
        link = os.path.join(self.binDir, SHIMD_BINARY_NAME)
        if not os.path.lexists(link):
            os.symlink(self.shimdBinary, link)
        with open(self.configPath, "w") as f:
            f.write(
                CRI_CONFIG_TEMPLATE.format(
                    root=self.root,
                    state=self.state,
                    address=self.address,
                    ttrpcAddress=self.ttrpcAddress,
                    pauseImage=PAUSE_IMAGE,
                    cniBinDir=self.cniBinDir,
                    cniConfDir=self.cniConfDir,
                )
            )
            f.write(deployedRuntimeEntry())
            f.write(OPTIONS_HANDLER.format(configPath=self.runcOptionsPath))
            f.write(SYSTEMD_HANDLERS.format(configPath=self.systemdOptionsPath))
        with open(self.runcOptionsPath, "w") as f:
            f.write(f'Root = "{self.runcRoot}"\n')
        with open(self.systemdOptionsPath, "w") as f:
            f.write("SystemdCgroup = true\n")

    def environment(self) -> dict[str, str]:
        """
        Our environment for containerd and C{ctr}, with L{binDir} first on
        C{PATH}.
        """
        env = super().environment()
        env["PATH"] = f"{self.binDir}:{env['PATH']}"
        return env

    def client(self) -> CRIClient:
        """
        A new CRI client of this containerd.
        """
        return CRIClient(self.address)

    def waitForCRI(self, timeout: float = 30.0) -> None:
        """
        Wait until the CRI plugin answers C{Status} with C{RuntimeReady}.
        """
        client = self.client()
        try:

            def ready() -> bool:
                try:
                    conditions = client.status().status.conditions
                except CRIError:
                    return False
                return any(c.type == "RuntimeReady" and c.status for c in conditions)

            try:
                waitUntil(ready, timeout, "the CRI plugin to be ready", 0.1)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{self.logTail()}") from None
        finally:
            client.close()

    def importImages(self, timeout: float = 60.0) -> None:
        """
        Import the pause and busybox images into the C{k8s.io} namespace
        with C{ctr}, and wait until the CRI plugin knows both.
        """
        os.makedirs(self.imageDir, exist_ok=True)
        archives = {
            PAUSE_IMAGE: pauseArchive(),
            BUSYBOX_IMAGE: ociArchive(BUSYBOX_IMAGE),
        }
        client = self.client()
        try:
            for index, (name, archive) in enumerate(archives.items()):
                path = os.path.join(self.imageDir, f"image-{index}.tar")
                with open(path, "wb") as f:
                    f.write(archive)
                result = self.ctr(
                    "images", "import", path, namespace=K8S_NAMESPACE, timeout=120
                )
                if result.code != 0:
                    raise AssertionError(f"ctr images import {name}: {result}")
                waitUntil(
                    partial(client.imageStatus, name),
                    timeout,
                    f"the CRI plugin to know the image {name}",
                    0.1,
                )
        finally:
            client.close()

    def criStart(self) -> None:
        """
        Start containerd, wait for its CRI plugin, import the images.
        """
        self.start()
        try:
            self.waitForCRI()
            self.importImages()
        except BaseException:
            self.stop()
            raise

    def k8sNamespace(self) -> TestNamespace:
        """
        The C{k8s.io} namespace the CRI plugin works in, for its C{ctr} and
        shim helpers. (Never call its C{cleanUp}: that would remove the CRI
        plugin's images.)
        """
        return TestNamespace(self, K8S_NAMESPACE)

    def bundle(self, containerID: str) -> str:
        """
        The bundle directory of a CRI container (or sandbox) task.
        """
        return self.bundlePath(K8S_NAMESPACE, containerID)

    def criDirectories(self, containerID: str) -> list[str]:
        """
        The CRI plugin's own directories for a container or sandbox, under
        containerd's root and state.
        """
        return [
            os.path.join(top, CRI_PLUGIN_DIR, kind, containerID)
            for top in (self.root, self.state)
            for kind in ("sandboxes", "containers")
        ]

    def podShimAddress(self, sandboxID: str) -> str:
        """
        The socket address of the shim serving a pod: both shims group a
        pod's containers by the sandbox id.
        """
        return self.shimAddress(K8S_NAMESPACE, sandboxID)


_shared: CRIContainerd | None = None
_sharedFailure: AssertionError | None = None


def sharedCRIContainerd() -> CRIContainerd:
    """
    The CRI containerd of this process, started (with its images imported)
    on first use and destroyed at interpreter exit. A failure to start is
    remembered, so later tests fail at once with the same reason.
    """
    global _shared, _sharedFailure
    if _sharedFailure is not None:
        raise _sharedFailure
    if _shared is None:
        shimd = SHIMD.binaryPath()
        if shimd is None:
            raise AssertionError(f"no {SHIMD.binaryName} binary")
        containerd = CRIContainerd(shimd)
        atexit.register(containerd.destroy)
        try:
            containerd.criStart()
        except AssertionError as e:
            _sharedFailure = e
            raise
        _shared = containerd
    return _shared


def podLeftovers(
    containerd: CRIContainerd,
    sandboxID: str,
    containerIDs: Iterable[str],
    cgroupParent: str,
) -> list[str]:
    """
    Remove by force whatever is left on the host and in containerd of a
    removed pod, and say what that was: its sandbox and containers in the
    CRI plugin and in containerd's C{k8s.io} namespace (containers, tasks,
    snapshots), shim processes, shim sockets, bundles, the CRI plugin's
    directories, mounts, runc state, processes and cgroups under the pod's
    cgroup parent. The cgroup parent itself is the kubelet's to remove, so
    it is removed silently.

    Only the given ids are looked at (the runc root is shared by every
    containerd on the host), except for shims: none of our containerd's
    may be left in C{k8s.io} once its only pod is gone.

    @return: one line per leftover; empty when there were none.
    """
    ids = [sandboxID, *containerIDs]
    leaks: list[str] = []
    leaks += _criLeftovers(containerd, sandboxID)
    leaks += _containerdLeftovers(containerd, ids)
    leaks += _shimLeftovers(containerd, sandboxID, ids)
    leaks += _fileLeftovers(containerd, ids)
    leaks += _cgroupLeftovers(cgroupParent)
    return leaks


def _criLeftovers(containerd: CRIContainerd, sandboxID: str) -> list[str]:
    leaks = []
    client = containerd.client()
    try:
        for sandbox in client.listPodSandboxes(sandboxID):
            leaks.append(f"CRI pod sandbox {sandbox.id}")
            _ignoreCRIErrors(client.stopPodSandbox, sandbox.id)
            _ignoreCRIErrors(client.removePodSandbox, sandbox.id)
        for container in client.listContainers(sandboxID):
            leaks.append(f"CRI container {container.id}")
            _ignoreCRIErrors(client.removeContainer, container.id)
    finally:
        client.close()
    return leaks


def _ignoreCRIErrors(call: Callable[[str], None], id: str) -> None:
    try:
        call(id)
    except CRIError:
        pass


def _containerdLeftovers(containerd: CRIContainerd, ids: Sequence[str]) -> list[str]:
    leaks = []
    namespace = containerd.k8sNamespace()
    tasks = namespace.ctr("tasks", "ls", "-q", timeout=30).out.split()
    containers = namespace.ctr("containers", "ls", "-q", timeout=30).out.split()
    snapshots = [
        line.split()[0]
        for line in namespace.ctr("snapshots", "ls", timeout=30).out.splitlines()[1:]
        if line.split()
    ]
    for id in ids:
        if id in tasks:
            leaks.append(f"containerd task {id}")
            namespace.ctr("tasks", "kill", "-s", "SIGKILL", id, timeout=30)
            namespace.ctr("tasks", "rm", "-f", id, timeout=30)
        if id in containers:
            leaks.append(f"containerd container {id}")
            namespace.ctr("containers", "rm", id, timeout=30)
        if id in snapshots:
            leaks.append(f"snapshot {id}")
            namespace.ctr("snapshots", "rm", id, timeout=30)
    return leaks


def _shimLeftovers(
    containerd: CRIContainerd, sandboxID: str, ids: Sequence[str]
) -> list[str]:
    leaks = []
    namespace = containerd.k8sNamespace()
    socket = host.socketPath(containerd.podShimAddress(sandboxID))

    def shims() -> set[int]:
        found = set(namespace.shimProcesses())
        found.update(host.processesListeningOn(socket))
        for id in ids:
            found.update(host.processesWorkingIn(containerd.bundle(id)))
        return found

    try:
        waitUntil(lambda: not shims(), 10, "the pod's shim to exit", 0.1)
    except AssertionError:
        pass
    for pid in sorted(shims()):
        leaks.append(f"shim process {pid}: {host.commandLine(pid)}")
        host.kill(pid)
    if os.path.exists(socket):
        leaks.append(f"shim socket {socket}")
        os.unlink(socket)
    return leaks


def _fileLeftovers(containerd: CRIContainerd, ids: Sequence[str]) -> list[str]:
    leaks = []
    runcRoot = os.path.join(RUNC_ROOT, K8S_NAMESPACE)
    for id in ids:
        if os.path.exists(os.path.join(runcRoot, id)):
            leaks.append(f"runc state {runcRoot}/{id}")
            subprocess.run(
                ["runc", "--root", runcRoot, "delete", "--force", id],
                capture_output=True,
                env=containerd.environment(),
                check=False,
            )
            shutil.rmtree(os.path.join(runcRoot, id), ignore_errors=True)
        directories = [containerd.bundle(id), *containerd.criDirectories(id)]
        for directory in directories:
            for mountPoint in host.mountsUnder(directory):
                leaks.append(f"mount {mountPoint}")
                subprocess.run(["umount", "-l", mountPoint], check=False)
            if os.path.lexists(directory):
                leaks.append(f"directory {directory}")
                if not host.mountsUnder(directory):
                    shutil.rmtree(directory, ignore_errors=True)
    bundles = os.path.join(containerd.state, TASK_PLUGIN_DIR, K8S_NAMESPACE)
    for point in host.mountsUnder(bundles):
        if any(id in point for id in ids):
            leaks.append(f"mount {point}")
            subprocess.run(["umount", "-l", point], check=False)
    return leaks


def _cgroupLeftovers(cgroupParent: str) -> list[str]:
    leaks = []
    for pid in host.processesInCgroup(cgroupParent):
        leaks.append(f"process {pid} in {cgroupParent}: {host.commandLine(pid)}")
        host.kill(pid)
    try:
        waitUntil(
            lambda: not host.processesInCgroup(cgroupParent),
            10,
            f"the processes in {cgroupParent} to go",
        )
    except AssertionError as e:
        leaks.append(str(e))
    for path in host.cgroupDirectories(cgroupParent):
        for directory in sorted(
            (d for d, _, _ in os.walk(path)), key=len, reverse=True
        ):
            if directory != path:
                leaks.append(f"cgroup {directory}")
            try:
                os.rmdir(directory)
            except OSError:
                pass
    return leaks
