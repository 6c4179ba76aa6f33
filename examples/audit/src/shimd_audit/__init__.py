"""
An example shimd plugin, installed apart from shimd: a ttrpc interceptor
that writes one JSON line per task RPC the shim serves, with the method,
the container id, the status code and the duration in milliseconds::

    {"method": "Create", "id": "c1", "code": "OK", "ms": 41.2, "time": ...}

The file is the plugin's C{path} setting (in the shim's settings file,
C{$SHIMD_CONFIG}: C{[plugins."io.example.audit.v1.audit"]}) or else
C{$SHIMD_AUDIT_LOG}; without either, the plugin leaves itself out.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from shimd.interfaces import IPluginContext, ITTRPCInterceptor
from shimd.shim.plugin import Registration, SkipPlugin
from shimd.ttrpc.status import Code, statusFromException

PLUGIN_TYPE = "io.example.audit.v1"
PLUGIN_ID = "audit"
VARIABLE = "SHIMD_AUDIT_LOG"
TASK_SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")


@implementer(ITTRPCInterceptor)
class AuditInterceptor:
    """
    Appends one line per task call to a file, each with one C{write} to a
    descriptor opened with C{O_APPEND}, so lines from several shims never
    interleave.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def intercept(self, request: Any, context: Any, proceed: Any) -> object:
        if context.service not in TASK_SERVICES:
            return proceed(request, context)
        started = time.monotonic()
        containerID = getattr(request, "id", "")
        try:
            result = proceed(request, context)
        except Exception as e:
            self.record(context.method, containerID, statusFromException(e)[0], started)
            raise
        if isinstance(result, Deferred):

            def done(outcome: object) -> object:
                if isinstance(outcome, Failure):
                    value = outcome.value
                    code = statusFromException(value)[0] if value else Code.UNKNOWN
                else:
                    code = Code.OK
                self.record(context.method, containerID, code, started)
                return outcome

            return result.addBoth(done)
        self.record(context.method, containerID, Code.OK, started)
        return result

    def record(self, method: str, containerID: str, code: Code, started: float) -> None:
        line = {
            "time": time.time(),
            "method": method,
            "id": containerID,
            "code": Code(code).name,
            "ms": round((time.monotonic() - started) * 1000, 3),
        }
        try:
            os.write(self.fd, json.dumps(line).encode() + b"\n")
        except OSError:
            pass


def _initialise(context: IPluginContext) -> AuditInterceptor:
    path = context.pluginConfig(PLUGIN_TYPE, PLUGIN_ID).get("path") or os.environ.get(
        VARIABLE, ""
    )
    if not path:
        raise SkipPlugin(f"no path setting and no ${VARIABLE}")
    fd = os.open(
        str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    return AuditInterceptor(fd)


auditPlugin = Registration(PLUGIN_TYPE, PLUGIN_ID, _initialise)
