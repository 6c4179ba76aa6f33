# -*- test-case-name: tests.test_tap -*-
"""
The shim as a Twisted application: the options of C{twistd shim}, which
build the same L{ShimConfig} and L{Listener} the launcher's daemon builds
from its flags, and twistd's L{makeService}.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.python import usage

from shimd.shim.config import CONFIG_VARIABLE, ShimConfig, ttrpcAddressOf

if TYPE_CHECKING:
    from shimd.shim.address import Listener


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
        ttrpcAddress = ttrpcAddressOf(
            self["address"], os.environ, self["ttrpc-address"] or ""
        )
        return ShimConfig(
            namespace=self["namespace"],
            id=self["id"],
            address=self["address"],
            ttrpcAddress=ttrpcAddress,
            publishBinary=self["publish-binary"],
            bundle=self["bundle"] or os.getcwd(),
            debug=bool(self["debug"]),
            settingsPath=os.environ.get(CONFIG_VARIABLE, ""),
        )

    def listener(self) -> Listener:
        """
        Where to serve: the inherited socket of C{--socket-fd}, or the path
        of C{--socket}.
        """
        from shimd.shim.address import listenerFromFD, listenerFromPath

        if self["socket-fd"] is not None:
            return listenerFromFD(self["socket-fd"])
        return listenerFromPath(self["socket"])


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build the shim service from C{twistd shim}'s options.

    @param reactor: the reactor to run on; the global one by default.
    """
    from shimd.shim.service import makeService

    return makeService(options.shimConfig(), options.listener(), reactor)
