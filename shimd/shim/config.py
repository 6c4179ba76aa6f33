# -*- test-case-name: tests.test_tap -*-
"""
The shim's configuration, as every plugin sees it: parsed once, from the
launcher's flags (L{ShimConfig.fromFlags}) or from C{twistd shim}'s options
(L{shimd.shim.tap.Options.shimConfig}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attr

from shimd import RUNTIME_NAME

if TYPE_CHECKING:
    from shimd.shim.flags import Flags


def ttrpcAddressOf(address: str, environ: Mapping[str, str], given: str = "") -> str:
    """
    containerd's ttrpc address, where events go: the one given, or else
    C{$TTRPC_ADDRESS}, or else containerd's gRPC address with C{.ttrpc}
    appended, as containerd names it.
    """
    ttrpcAddress = given or environ.get("TTRPC_ADDRESS", "")
    if not ttrpcAddress and address:
        ttrpcAddress = address + ".ttrpc"
    return ttrpcAddress


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class ShimConfig:
    """
    What the shim was started with.

    @ivar namespace: the containerd namespace of every task this shim serves.
    @ivar id: the id the shim was started for (the first container, or the
        group).
    @ivar address: containerd's gRPC address, part of the socket address key.
    @ivar ttrpcAddress: containerd's ttrpc address, where events go.
    @ivar bundle: the directory the shim was started in.
    @ivar debug: whether debug logging was asked for.
    """

    namespace: str
    id: str = ""
    address: str = ""
    ttrpcAddress: str = ""
    publishBinary: str = "containerd"
    bundle: str = ""
    debug: bool = False
    runtimeName: str = RUNTIME_NAME

    @classmethod
    def fromFlags(
        cls, flags: Flags, environ: Mapping[str, str], cwd: str
    ) -> ShimConfig:
        """
        The configuration of a daemon run from the launcher's parsed flags.

        @param environ: the daemon's environment (C{TTRPC_ADDRESS}).
        @param cwd: the daemon's working directory, the bundle unless
            C{-bundle} names one.
        """
        return cls(
            namespace=flags.namespace,
            id=flags.id,
            address=flags.address,
            ttrpcAddress=ttrpcAddressOf(flags.address, environ),
            publishBinary=flags.publishBinary,
            bundle=flags.bundle or cwd,
            debug=flags.debug,
        )
