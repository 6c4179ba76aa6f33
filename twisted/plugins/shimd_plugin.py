"""
C{twistd shim}: shimd as a Twisted application. Nothing of shimd is imported
until the plugin is chosen.
"""

from twisted.application.service import ServiceMaker

shim = ServiceMaker(
    "shimd",
    "shimd.shim.tap",
    "A containerd runtime shim serving the task API over ttrpc, on runc.",
    "shim",
)
