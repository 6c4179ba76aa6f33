"""
End-to-end tests of checkpoint and restore with criu: C{Checkpoint} of a
running task (C{runc checkpoint}), and a container restored from its
checkpoint (C{Create} with a checkpoint, C{runc restore}) whose process goes
on from the state it had. They need a criu that works on the host (C{criu
check}) and skip, saying why, where it does not.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e.base import E2EMixin
from tests.e2e.containerd import containerdVersion, waitUntil
from tests.e2e.runtimes import GO, SHIMD, criuProblem

# A counter that keeps a token drawn once at start: a restored process goes
# on with its token and count, a fresh one draws a new token and starts
# again from 1.
COUNTER = (
    "read t < /proc/sys/kernel/random/uuid; i=0;"
    " while :; do i=$((i+1)); echo $t $i > /tmp/n; sleep 0.05; done"
)
COUNT = re.compile(r"\A(\S+) (\d+)\n\Z")
_reads = itertools.count()


class CheckpointTestsMixin(E2EMixin):
    """
    criu through C{ctr}.
    """

    def setUp(self) -> None:
        problem = criuProblem()
        if problem:
            raise SkipTest(problem)
        super().setUp()

    def counter(
        self, containerID: str, token: str | None = None, past: int = 0
    ) -> tuple[str, int]:
        """
        Wait until the counter of C{containerID} has written a count above
        C{past}, reading it with execs.

        @param token: the token it must have written with every count read,
            when given.
        @return: the token and count read.
        """

        def read() -> tuple[str, int] | None:
            execID = f"read{next(_reads)}"
            result = self.execute(containerID, execID, "/bin/cat", "/tmp/n")
            self.assertCtr(result, what="ctr task exec cat /tmp/n")
            match = COUNT.match(result.out)
            if match is None:
                # Not written yet, or caught between truncation and write.
                return None
            found, count = match.group(1), int(match.group(2))
            if token is not None:
                self.assertEqual(found, token, "the counter's token changed")
            return (found, count) if count > past else None

        return waitUntil(read, 30, f"{containerID}'s counter to pass {past}", 0.1)

    def checkpointsToDirectory(self) -> bool:
        """
        Whether containerd hands C{--image-path} on to this runtime: 2.x
        does for any runtime, 1.x only for runtimes named
        C{io.containerd.runc*} (C{getCheckpointPath} in its tasks service)
        and checkpoints any other into its content store, as an image named
        C{containerd.io/checkpoint/ID:DATE}.
        """
        return containerdVersion() >= (2, 0) or self.runtime.runtimeArgument.startswith(
            "io.containerd.runc"
        )

    def test_checkpointToDirectory(self) -> None:
        """
        C{ctr task checkpoint --image-path DIR} has criu dump a running
        task's process tree, into C{DIR} (or, where containerd keeps it from
        the runtime, into its content store); the task keeps running, its
        process unchanged.
        """
        self.runDetached("dumped", "/bin/sh", "-c", COUNTER)
        token, count = self.counter("dumped")
        image = tempfile.mkdtemp(prefix="checkpoint-", dir="/tmp")
        self.addCleanup(shutil.rmtree, image, True)
        result = self.ctr("task", "checkpoint", "--image-path", image, "dumped")
        self.assertCtr(result, what="ctr task checkpoint")
        files = os.listdir(image)
        if self.checkpointsToDirectory():
            self.assertIn("inventory.img", files)
            self.assertTrue(any(name.startswith("core-") for name in files), files)
        else:
            self.assertEqual(files, [])
            listed = self.ctr("images", "ls", "-q")
            self.assertCtr(listed, what="ctr images ls")
            checkpoints = [
                name
                for name in listed.out.split()
                if name.startswith("containerd.io/checkpoint/dumped:")
            ]
            self.assertEqual(len(checkpoints), 1, listed.out)
            self.assertCtr(
                self.ctr("images", "rm", "--sync", *checkpoints), what="ctr images rm"
            )
        self.assertEqual(self.statusOf("dumped"), "RUNNING")
        self.counter("dumped", token, count)

    def test_restore(self) -> None:
        """
        A container from an image checkpointed with its task and rw layer
        (C{ctr containers checkpoint --task --rw}), killed and deleted, is
        restored running (C{ctr containers restore --live --rw}): its
        process goes on counting from where it was, with the token it drew
        before the checkpoint, and can be killed and deleted as usual.
        """
        image = self.importImage()
        self.runDetached("saved", "/bin/sh", "-c", COUNTER, image=image)
        self.counter("saved", past=2)
        result = self.ctr(
            "containers", "checkpoint", "--task", "--rw", "saved", "saved-ck"
        )
        self.assertCtr(result, what="ctr containers checkpoint")
        token, count = self.counter("saved")
        self.killAndDelete("saved")
        result = self.ctr(
            "containers", "restore", "--live", "--rw", "saved", "saved-ck"
        )
        self.assertCtr(result, what="ctr containers restore --live")
        self.waitForStatus("saved", "RUNNING")
        # The rw layer brings back the last count written before the
        # checkpoint; only the restored process can write a higher one with
        # the same token.
        self.counter("saved", token, count)
        self.killAndDelete("saved")


class CheckpointTestsGo(CheckpointTestsMixin, TestCase):
    runtime = GO


class CheckpointTestsShimd(CheckpointTestsMixin, TestCase):
    runtime = SHIMD
