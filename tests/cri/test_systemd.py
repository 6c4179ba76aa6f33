"""
Pods through the CRI plugin with runc's systemd cgroup driver
(C{SystemdCgroup = true}, the Kubernetes default on systemd hosts): the pod
tests of L{tests.cri.test_pod} once more, with handlers whose runc options
select that driver (the Go shim's in its own C{options} table, shimd's in
the file C{ConfigPath} names) and a slice as each pod's cgroup parent, and a
check that every container's cgroup is the systemd scope runc creates for
it (C{/SLICE/cri-containerd-ID.scope}).

These tests skip where systemd is not the init system or the host is not
unified (cgroup v2); C{tools/hosts.sh sid-vm} runs them.
"""

from __future__ import annotations

import os
import subprocess

from twisted.trial.unittest import SkipTest, TestCase

from tests.cri import cri_api_pb2 as api
from tests.cri.test_pod import PodTestsMixin
from tests.e2e import host
from tests.e2e.runtimes import GO, SHIMD
from tests.e2e.test_cgroup2 import systemdProblem, unifiedProblem


class SystemdPodTestsMixin(PodTestsMixin):
    """
    Pods whose containers runc puts in systemd scopes.
    """

    def setUp(self) -> None:
        problem = unifiedProblem() or systemdProblem()
        if problem is not None:
            raise SkipTest(problem)
        super().setUp()

    def cgroupParent(self, number: int) -> str:
        """
        A slice of its own for each pod (a name without dashes, which would
        make it a child of another slice). Once the pod is removed, the
        slice is stopped, as the kubelet does.
        """
        slice = f"shimd_cri_{self.runtime.name}_{os.getpid()}_{number}.slice"
        self.addCleanup(
            subprocess.run,
            ["systemctl", "stop", slice],
            capture_output=True,
            check=False,
        )
        return f"/{slice}"

    def test_containersInScopes(self) -> None:
        """
        The sandbox and each container run in the scope runc's systemd
        driver creates in the pod's slice, named by the CRI plugin's
        C{cri-containerd} prefix and the container's id.
        """
        pod = self.runPod("scopes")
        first = self.startContainer(pod, "first", ["/bin/sleep", "1000"])
        second = self.startContainer(pod, "second", ["/bin/sleep", "1000"])
        self.waitForState(first, api.CONTAINER_RUNNING)
        self.waitForState(second, api.CONTAINER_RUNNING)
        tasks = self.containerd.k8sNamespace().tasks()
        for containerID in (pod.sandboxID, first, second):
            pid = tasks[containerID][0]
            self.assertEqual(
                host.cgroupsOf(pid),
                {"": f"{pod.cgroupParent}/cri-containerd-{containerID}.scope"},
                containerID,
            )


class SystemdPodTestsGo(SystemdPodTestsMixin, TestCase):
    runtime = GO
    handler = "runc-systemd"


class SystemdPodTestsShimd(SystemdPodTestsMixin, TestCase):
    runtime = SHIMD
    handler = "pyrunc-systemd"
