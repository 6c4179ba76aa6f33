"""
A small client of the Kubernetes Container Runtime Interface (CRI) over
gRPC, for containerd's CRI plugin: the calls a kubelet makes to run a pod,
with the messages of L{tests.cri.cri_api_pb2}.

grpcio is imported lazily: without it this module still imports (trial
loads every test module), and L{grpcMissing} says how to get it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.cri import cri_api_pb2 as api

GRPC_INSTALL_HINT = (
    "grpcio is not importable: install it with `pip install grpcio` "
    "(or `pip install -e '.[test]'`)"
)

DEFAULT_TIMEOUT = 60.0


def grpcMissing() -> str | None:
    """
    Why the CRI client cannot work here, or L{None} when grpcio and the
    generated service module import.
    """
    try:
        import grpc  # noqa: F401

        from tests.cri import cri_api_pb2_grpc  # noqa: F401
    except (ImportError, RuntimeError) as e:
        # The generated module raises RuntimeError for a grpcio older than
        # the grpcio-tools that generated it.
        return f"{GRPC_INSTALL_HINT} ({e})"
    return None


class CRIError(Exception):
    """
    A CRI call failed.

    @ivar method: the RPC's name, e.g. C{"RunPodSandbox"}.
    @ivar code: the gRPC status code's name, e.g. C{"NOT_FOUND"}.
    @ivar details: the error message the server gave.
    """

    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(f"{method}: {code}: {details}")
        self.method = method
        self.code = code
        self.details = details


class CRIClient:
    """
    A CRI client on a unix socket: C{RuntimeService} and the one call of
    C{ImageService} the tests need.
    """

    def __init__(self, socketPath: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        import grpc

        from tests.cri import cri_api_pb2_grpc

        self.timeout = timeout
        self._grpcError = grpc.RpcError
        self._channel = grpc.insecure_channel(f"unix://{socketPath}")
        self._runtime = cri_api_pb2_grpc.RuntimeServiceStub(self._channel)
        self._images = cri_api_pb2_grpc.ImageServiceStub(self._channel)

    def close(self) -> None:
        """
        Close the channel.
        """
        self._channel.close()

    def _call(self, stub: Any, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return getattr(stub, method)(
                request, timeout=self.timeout if timeout is None else timeout
            )
        except self._grpcError as e:
            raise CRIError(method, e.code().name, e.details() or "") from None

    def runtime(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """
        Call C{RuntimeService.<method>}.

        @raise CRIError: when it fails.
        """
        return self._call(self._runtime, method, request, timeout)

    # RuntimeService

    def version(self) -> api.VersionResponse:
        return self.runtime("Version", api.VersionRequest(version="v1"))

    def status(self) -> api.StatusResponse:
        return self.runtime("Status", api.StatusRequest())

    def runPodSandbox(self, config: api.PodSandboxConfig, handler: str) -> str:
        """
        Run a pod sandbox with the runtime handler C{handler}.

        @return: its id.
        """
        request = api.RunPodSandboxRequest(config=config, runtime_handler=handler)
        return self.runtime("RunPodSandbox", request).pod_sandbox_id

    def stopPodSandbox(self, sandboxID: str) -> None:
        self.runtime(
            "StopPodSandbox", api.StopPodSandboxRequest(pod_sandbox_id=sandboxID)
        )

    def removePodSandbox(self, sandboxID: str) -> None:
        self.runtime(
            "RemovePodSandbox", api.RemovePodSandboxRequest(pod_sandbox_id=sandboxID)
        )

    def podSandboxStatus(self, sandboxID: str) -> api.PodSandboxStatus:
        request = api.PodSandboxStatusRequest(pod_sandbox_id=sandboxID)
        return self.runtime("PodSandboxStatus", request).status

    def listPodSandboxes(self, sandboxID: str = "") -> list[api.PodSandbox]:
        """
        The pod sandboxes there are (only C{sandboxID}, if given).
        """
        request = api.ListPodSandboxRequest(filter=api.PodSandboxFilter(id=sandboxID))
        return list(self.runtime("ListPodSandbox", request).items)

    def createContainer(
        self,
        sandboxID: str,
        config: api.ContainerConfig,
        sandboxConfig: api.PodSandboxConfig,
    ) -> str:
        """
        Create a container in a pod sandbox.

        @return: its id.
        """
        request = api.CreateContainerRequest(
            pod_sandbox_id=sandboxID, config=config, sandbox_config=sandboxConfig
        )
        return self.runtime("CreateContainer", request).container_id

    def startContainer(self, containerID: str) -> None:
        self.runtime(
            "StartContainer", api.StartContainerRequest(container_id=containerID)
        )

    def stopContainer(self, containerID: str, timeout: int = 0) -> None:
        request = api.StopContainerRequest(container_id=containerID, timeout=timeout)
        self.runtime("StopContainer", request)

    def removeContainer(self, containerID: str) -> None:
        self.runtime(
            "RemoveContainer", api.RemoveContainerRequest(container_id=containerID)
        )

    def listContainers(self, sandboxID: str = "") -> list[api.Container]:
        """
        The containers there are (only those of C{sandboxID}, if given).
        """
        request = api.ListContainersRequest(
            filter=api.ContainerFilter(pod_sandbox_id=sandboxID)
        )
        return list(self.runtime("ListContainers", request).containers)

    def containerStatus(self, containerID: str) -> api.ContainerStatus:
        request = api.ContainerStatusRequest(container_id=containerID)
        return self.runtime("ContainerStatus", request).status

    def execSync(
        self, containerID: str, command: Sequence[str], timeout: int = 30
    ) -> api.ExecSyncResponse:
        """
        Run C{command} in a container to completion (killed after
        C{timeout} seconds).
        """
        request = api.ExecSyncRequest(
            container_id=containerID, cmd=list(command), timeout=timeout
        )
        return self.runtime("ExecSync", request, timeout=timeout + self.timeout)

    # ImageService

    def imageStatus(self, image: str) -> api.Image | None:
        """
        The image C{image} as the CRI plugin knows it, or L{None}.
        """
        request = api.ImageStatusRequest(image=api.ImageSpec(image=image))
        response = self._call(self._images, "ImageStatus", request, None)
        return response.image if response.HasField("image") else None
