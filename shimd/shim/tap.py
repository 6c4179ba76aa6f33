# -*- test-case-name: tests.test_tap -*-
"""
The shim as a Twisted application: the options of C{twistd shim} and
L{makeService}, which the launcher's daemon runs too.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from shimd.shim.config import ShimConfig


class Options(usage.Options):
    """
    C{twistd shim} options.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve containerd's task API (containerd.task.v2.Task) over ttrpc on a "
        "unix socket, running containers with runc. containerd normally starts "
        "the shim through containerd-shim-pyrunc-v2; this runs the same service "
        "under twistd."
    )

    optParameters = [
        ["namespace", None, None, "The containerd namespace (required)."],
        ["id", None, "", "The id of the container, or group, this shim is for."],
        ["address", None, "", "containerd's gRPC address."],
        [
            "ttrpc-address",
            None,
            None,
            "containerd's ttrpc address, where events go "
            "[default: $TTRPC_ADDRESS, or the gRPC address + .ttrpc].",
        ],
        ["publish-binary", None, "containerd", "containerd's binary (unused)."],
        ["socket", None, None, "Listen on this unix socket path."],
        [
            "socket-fd",
            None,
            None,
            "Serve on this inherited, listening unix socket instead.",
            int,
        ],
        ["bundle", None, None, "The shim's bundle directory [default: cwd]."],
    ]
    optFlags = [["debug", None, "Log at debug level."]]

    def postOptions(self) -> None:
        if not self["namespace"]:
            raise usage.UsageError("shim namespace cannot be empty")
        if (self["socket"] is None) == (self["socket-fd"] is None):
            raise usage.UsageError("give exactly one of --socket and --socket-fd")

    def shimConfig(self) -> ShimConfig:
        """
        The configuration plugins see.
        """
        ttrpcAddress = self["ttrpc-address"] or os.environ.get("TTRPC_ADDRESS", "")
        if not ttrpcAddress and self["address"]:
            ttrpcAddress = self["address"] + ".ttrpc"
        return ShimConfig(
            namespace=self["namespace"],
            id=self["id"],
            address=self["address"],
            ttrpcAddress=ttrpcAddress,
            publishBinary=self["publish-binary"],
            bundle=self["bundle"] or os.getcwd(),
            debug=bool(self["debug"]),
        )


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build the shim service from its options.

    @param reactor: the reactor to run on; the global one by default.
    """
    if reactor is None:
        from twisted.internet import reactor

    from shimd.shim.service import ShimService, listenerFromFD, listenerFromPath

    if options["socket-fd"] is not None:
        listener = listenerFromFD(options["socket-fd"])
    else:
        listener = listenerFromPath(options["socket"])
    return ShimService(options.shimConfig(), reactor, listener)
