"""
Run one pod through a containerd's CRI plugin, as a kubelet would, and show
what happened: a hands-on check of a runtime handler (C{pyrunc} by default)
for a machine without Kubernetes or C{crictl}.

    python -m tests.cri.trypod --address /run/containerd/containerd.sock

It runs a host-network pod sandbox with the handler, starts a busybox
container in it that prints a line and sleeps, runs a command in it with
C{ExecSync}, shows the container's CRI log and the shim process serving the
pod, then stops and removes the pod and its log directory (unless
C{--keep}).

The images must be known to the CRI plugin: the configured C{sandbox_image}
and C{--image}. On a machine without registry access, C{--import-images}
builds a pause image (C{localhost/shimd-pause:latest}, which the
configuration's C{sandbox_image} must then name) and a busybox image
(C{docker.io/library/shimd-e2e:latest}) from the host's static busybox, and
imports them with C{ctr}.

Needs grpcio, root (the pod's log directory and the shim's socket), and
C{ctr} for C{--import-images}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from functools import partial

from tests.cri import cri_api_pb2 as api
from tests.cri.client import CRIClient, CRIError, grpcMissing
from tests.cri.containerd import (
    BUSYBOX_IMAGE,
    K8S_NAMESPACE,
    PAUSE_IMAGE,
    pauseArchive,
)
from tests.e2e import host
from tests.e2e.containerd import waitUntil
from tests.e2e.rootfs import ociArchive

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"


def importImages(address: str) -> None:
    """
    Build the pause and busybox images and import them into C{k8s.io}.
    """
    with tempfile.TemporaryDirectory(prefix="shimd-trypod-") as directory:
        for name, archive in (
            ("pause", pauseArchive()),
            ("busybox", ociArchive(BUSYBOX_IMAGE)),
        ):
            path = os.path.join(directory, f"{name}.tar")
            with open(path, "wb") as f:
                f.write(archive)
            subprocess.run(
                ["ctr", "-a", address, "-n", K8S_NAMESPACE, "images", "import", path],
                check=True,
            )


def _conditions(status: api.StatusResponse) -> str:
    return ", ".join(
        f"{c.type} {str(c.status).lower()}" for c in status.status.conditions
    )


def _shimOf(address: str, sandboxID: str) -> str:
    socket = host.socketPath(host.shimAddress(address, K8S_NAMESPACE, sandboxID))
    pids = host.processesListeningOn(socket)
    described = "; ".join(f"pid {pid}: {host.commandLine(pid)}" for pid in pids)
    return f"{len(pids)} process(es) listening on {socket}: {described}"


def tryPod(
    client: CRIClient, address: str, handler: str, image: str, keep: bool
) -> None:
    """
    Run, show and (unless C{keep}) remove one pod.
    """
    version = client.version()
    print(
        f"CRI: {version.runtime_name} {version.runtime_version} "
        f"(CRI {version.runtime_api_version}); {_conditions(client.status())}"
    )
    logDirectory = tempfile.mkdtemp(prefix="shimd-trypod-logs-")
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(
            name="shimd-hello", uid=str(uuid.uuid4()), namespace="default"
        ),
        log_directory=logDirectory,
        linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.NODE)
            )
        ),
    )
    sandboxID = client.runPodSandbox(config, handler)
    try:
        sandbox = client.podSandboxStatus(sandboxID)
        print(
            f"pod sandbox {sandboxID}: {api.PodSandboxState.Name(sandbox.state)}, "
            f"handler {sandbox.runtime_handler!r}"
        )
        containerConfig = api.ContainerConfig(
            metadata=api.ContainerMetadata(name="hello"),
            image=api.ImageSpec(image=image),
            command=["/bin/sh", "-c", f"echo hello from {handler}; exec sleep 3600"],
            log_path="hello/0.log",
            linux=api.LinuxContainerConfig(
                security_context=api.LinuxContainerSecurityContext(
                    namespace_options=api.NamespaceOption(
                        network=api.NODE, pid=api.CONTAINER
                    )
                )
            ),
        )
        containerID = client.createContainer(sandboxID, containerConfig, config)
        client.startContainer(containerID)
        status = client.containerStatus(containerID)
        print(f"container hello {containerID}: {api.ContainerState.Name(status.state)}")
        print(f"shim: {_shimOf(address, sandboxID)}")
        result = client.execSync(containerID, ["/bin/sh", "-c", "echo exec; exit 3"])
        print(
            f"ExecSync: stdout {result.stdout!r}, stderr {result.stderr!r}, "
            f"exit code {result.exit_code}"
        )

        def logged() -> str | None:
            try:
                with open(status.log_path) as f:
                    return f.read() or None
            except FileNotFoundError:
                return None

        print(f"log {status.log_path}:")
        print(waitUntil(logged, 10, "the container's log"), end="")
    finally:
        if keep:
            print(f"kept the pod {sandboxID}")
        else:
            client.stopPodSandbox(sandboxID)
            client.removePodSandbox(sandboxID)
            shutil.rmtree(logDirectory, ignore_errors=True)
            print(f"stopped and removed the pod {sandboxID} (and its logs)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cri.trypod", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--address", default=DEFAULT_ADDRESS, help="containerd's socket"
    )
    parser.add_argument(
        "--handler", default="pyrunc", help="the CRI runtime handler to use"
    )
    parser.add_argument("--image", default=BUSYBOX_IMAGE, help="the container image")
    parser.add_argument(
        "--import-images",
        action="store_true",
        help="build and import a local pause and busybox image first",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the pod running at the end"
    )
    options = parser.parse_args(argv)
    reason = grpcMissing()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    if options.import_images:
        importImages(options.address)
    client = CRIClient(options.address)
    try:
        if options.import_images:
            for image in (PAUSE_IMAGE, options.image):
                waitUntil(
                    partial(client.imageStatus, image),
                    30,
                    f"the CRI plugin to know {image}",
                    0.1,
                )
        tryPod(client, options.address, options.handler, options.image, options.keep)
    except CRIError as e:
        print(f"failed: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
