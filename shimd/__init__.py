"""
shimd: a containerd runtime shim in Python, on Twisted.

shimd serves containerd's C{containerd.task.v2.Task} API over ttrpc and drives
runc, so that containerd can run containers through it exactly as it does
through its Go shim, C{containerd-shim-runc-v2}.

This module is imported by the launcher on containerd's critical path: it must
stay free of imports.
"""

__version__ = "0.1.0"

RUNTIME_NAME = "io.containerd.pyrunc.v2"
