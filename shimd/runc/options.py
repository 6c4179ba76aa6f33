# -*- test-case-name: tests.test_runc -*-
"""
What every runc command of the shim shares: runc's default state root and
its global arguments, spelled once for the runc client in the daemon and for
the launcher's C{delete}.

Standard library only: the launcher imports it on containerd's critical
path.
"""

from __future__ import annotations

DEFAULT_ROOT = "/run/containerd/runc"


def globalArguments(
    root: str, logPath: str, criu: str = "", systemdCgroup: bool = False
) -> list[str]:
    """
    The flags before every runc subcommand, in go-runc's order: the state
    root, the log file (JSON lines, whose last error a failure reports), and
    the criu binary and systemd cgroup driver when asked for.
    """
    arguments = ["--root", root, "--log", logPath, "--log-format", "json"]
    if criu:
        arguments += ["--criu", criu]
    if systemdCgroup:
        arguments.append("--systemd-cgroup")
    return arguments
