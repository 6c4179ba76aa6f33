"""
End-to-end tests of containers from an image: containerd's overlayfs
snapshotter prepares the root file system and sends it as mounts in
C{CreateTaskRequest.rootfs}, which the shim must mount on the bundle's
C{rootfs} and unmount again.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.e2e import host
from tests.e2e.base import E2EMixin
from tests.e2e.runtimes import GO, SHIMD


class ImageTestsMixin(E2EMixin):
    """
    Tasks whose root file system is a snapshot.
    """

    def test_runImage(self) -> None:
        """
        C{ctr run --rm IMAGE ID echo hi} prints C{hi}; C{/tasks/create}
        shows the single overlay mount containerd asked for; afterwards
        nothing is mounted under the bundle.
        """
        image = self.importImage()
        events = self.recordEvents()
        self.namespace.ids.add("imaged")
        result = self.ctr(
            "run", "--rm", *self.runtimeOptions(), image, "imaged", "/bin/echo", "hi"
        )
        self.assertEqual((result.code, result.out, result.err), (0, "hi\n", ""))
        create = events.waitForTopic("imaged", "/tasks/create").payload
        [mount] = create["rootfs"]
        self.assertEqual((mount["type"], mount["source"]), ("overlay", "overlay"))
        self.assertTrue(
            any(option.startswith("lowerdir=") for option in mount["options"]),
            mount,
        )
        events.waitForTopic("imaged", "/containers/delete")
        self.assertEqual(host.mountsUnder(self.bundle("imaged")), [])
        self.waitForTaskDelete(events, "imaged")

    def test_imageRootfsMounted(self) -> None:
        """
        While a task from an image runs, the overlay is mounted on
        C{<bundle>/rootfs} (and is the container's C{/}, built from the
        image's layer); deleting the task unmounts it.
        """
        image = self.importImage()
        self.runDetached("mounted", "/bin/sleep", "1000", image=image)
        rootfs = self.bundle("mounted") + "/rootfs"
        self.assertEqual(
            [fsType for point, fsType, _ in host.mounts() if point == rootfs],
            ["overlay"],
        )
        result = self.execute("mounted", "look", "/bin/ls", "/bin/busybox")
        self.assertEqual((result.code, result.out), (0, "/bin/busybox\n"))
        self.killAndDelete("mounted")
        self.assertEqual(host.mountsUnder(self.bundle("mounted")), [])


class ImageTestsGo(ImageTestsMixin, TestCase):
    runtime = GO


class ImageTestsShimd(ImageTestsMixin, TestCase):
    runtime = SHIMD
