# -*- test-case-name: tests.test_cgroups -*-
"""
Out-of-memory events for C{/tasks/oom}, as C{containerd/pkg/oom}: an
eventfd per container on v1, inotify on v2, both in the reactor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from shimd.interfaces import ICgroup, IOOMWatcher, OOMCallback
from shimd.runc.cgroups.errors import CgroupError
from shimd.runc.cgroups.files import parseKeyValuesV2, readText, uintOrZero
from shimd.runc.cgroups.v1 import V1Cgroup
from shimd.runc.cgroups.v2 import V2_MEMORY_EVENTS, V2Cgroup

log = Logger()


def newOOMWatcher(mode: str, reactor: Any = None) -> IOOMWatcher:
    """
    The OOM watcher for a cgroup mode, as
    L{shimd.runc.cgroups.mode.cgroupMode} gives it.
    """
    if mode == "v2":
        return V2OOMWatcher(reactor)
    return V1OOMWatcher(reactor)


def _defaultReactor(given: Any) -> Any:
    if given is not None:
        return given
    from twisted.internet import reactor

    return reactor


def _callOOM(containerID: str, onOOM: OOMCallback) -> None:
    try:
        onOOM(containerID)
    except Exception:
        log.failure("OOM callback for {containerID} failed", containerID=containerID)


class _EventFD(FileDescriptor):
    """
    An eventfd in the reactor: each time it is readable, its 8-byte counter
    is read (which resets it) and C{onSignal} is called.
    """

    def __init__(self, fd: int, onSignal: Callable[[], None], reactor: Any) -> None:
        FileDescriptor.__init__(self, reactor)
        self._fd = fd
        self._onSignal = onSignal
        # Nothing is ever written: losing the connection closes at once.
        self.connected = 1
        self._writeDisconnected = True

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        try:
            os.eventfd_read(self._fd)
        except BlockingIOError:
            return None
        self._onSignal()
        return None

    def connectionLost(self, reason: Failure) -> None:
        FileDescriptor.connectionLost(self, reason)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@implementer(IOOMWatcher)
class V1OOMWatcher:
    """
    OOM events on cgroup v1, as C{containerd/pkg/oom/v1}: an eventfd
    registered for C{memory.oom_control} through C{cgroup.event_control}.

    The kernel signals the eventfd on each OOM in the cgroup and once more
    when the cgroup is removed; a signal that finds the cgroup gone ends the
    watch instead of reporting an OOM.
    """

    def __init__(self, reactor: Any = None) -> None:
        """
        @param reactor: an L{IReactorFDSet}; the global reactor by default.
        """
        self._reactor = _defaultReactor(reactor)
        self._watches: dict[str, _EventFD] = {}

    def add(self, containerID: str, cgroup: ICgroup, onOOM: OOMCallback) -> None:
        if not isinstance(cgroup, V1Cgroup):
            raise CgroupError(f"expected a v1 cgroup, got {cgroup!r}")
        directory = cgroup.memoryPath
        if directory is None:
            raise CgroupError("cgroups: memory cgroup not supported on this system")
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            oomFD = os.open(
                os.path.join(directory, "memory.oom_control"),
                os.O_RDONLY | os.O_CLOEXEC,
            )
            try:
                # "<eventfd> <file> <argument>": the OOM event has an empty
                # argument, hence Go's trailing space.
                control = os.open(
                    os.path.join(directory, "cgroup.event_control"),
                    os.O_WRONLY | os.O_CLOEXEC,
                )
                try:
                    os.write(control, f"{efd} {oomFD} ".encode())
                finally:
                    os.close(control)
            finally:
                os.close(oomFD)
        except OSError as e:
            os.close(efd)
            raise CgroupError(f"registering for OOM events in {directory}: {e}") from e
        self.remove(containerID)

        def signalled() -> None:
            if not cgroup.exists():
                self._forget(containerID, reader)
                return
            _callOOM(containerID, onOOM)

        reader = _EventFD(efd, signalled, self._reactor)
        self._watches[containerID] = reader
        reader.startReading()

    def check(self, containerID: str) -> None:
        reader = self._watches.get(containerID)
        if reader is not None:
            reader.doRead()

    def _forget(self, containerID: str, reader: _EventFD) -> None:
        if self._watches.get(containerID) is reader:
            del self._watches[containerID]
        reader.loseConnection()

    def remove(self, containerID: str) -> None:
        reader = self._watches.pop(containerID, None)
        if reader is not None:
            reader.loseConnection()

    def stop(self) -> None:
        for containerID in list(self._watches):
            self.remove(containerID)


class _V2Watch:
    """
    One container's inotify watch on cgroup v2.

    @ivar parentOOMKills: the parent cgroup's C{oom_kill} count (which
        counts its descendants' kills) just before the container's last
        look, or L{None} if it could not be read.
    """

    def __init__(
        self, containerID: str, cgroup: V2Cgroup, onOOM: OOMCallback, notifier: Any
    ) -> None:
        self.containerID = containerID
        self.cgroup = cgroup
        self.onOOM = onOOM
        self.notifier = notifier
        self.parentOOMKills = _oomKills(os.path.dirname(cgroup.path))


@implementer(IOOMWatcher)
class V2OOMWatcher:
    """
    OOM events on cgroup v2, as C{containerd/pkg/oom/v2} with the cgroups
    C{Manager.EventChan} behind it: inotify (C{IN_MODIFY}) on the cgroup's
    C{memory.events} and C{cgroup.events}. On each change C{memory.events}
    is read again, and an OOM is reported when its C{oom_kill} count is
    greater than the last one seen for the container (0 at first, as in
    Go). The watch ends when C{cgroup.events} says C{populated 0}, or the
    files cannot be read.

    With runc's systemd driver, systemd removes a container's scope as soon
    as its last process is gone, sometimes before its C{memory.events} has
    been read after the kill (the Go shim then loses the OOM: containerd
    issue 8893). So when the cgroup is found gone, the parent's
    C{memory.events}, whose counts include its children's, has the last
    word: an OOM is reported if its C{oom_kill} grew since just before the
    container's last look. (A sibling's kill in that moment would be taken
    for this container's.)

    Each container gets its own inotify descriptor, as in Go: Twisted's
    L{INotify<twisted.internet.inotify.INotify>} closes itself when any of
    its watched files is deleted, which must end one container's watch, not
    all of them.
    """

    def __init__(self, reactor: Any = None) -> None:
        """
        @param reactor: an L{IReactorFDSet}; the global reactor by default.
        """
        self._reactor = _defaultReactor(reactor)
        self._watches: dict[str, _V2Watch] = {}
        self._lastOOMKill: dict[str, int] = {}

    def add(self, containerID: str, cgroup: ICgroup, onOOM: OOMCallback) -> None:
        from twisted.internet import inotify

        if not isinstance(cgroup, V2Cgroup):
            raise CgroupError(f"expected a v2 cgroup, got {cgroup!r}")
        self.remove(containerID, forgetLast=False)
        notifier = inotify.INotify(self._reactor)
        watch = _V2Watch(containerID, cgroup, onOOM, notifier)

        def changed(ignored: object, path: FilePath[Any], mask: int) -> None:
            self._changed(watch)

        try:
            for name in ("memory.events", "cgroup.events"):
                notifier.watch(
                    FilePath(os.path.join(cgroup.path, name)),
                    mask=inotify.IN_MODIFY,
                    callbacks=[changed],
                )
        except inotify.INotifyError as e:
            notifier.loseConnection()
            raise CgroupError(
                f"failed to add inotify watch in {cgroup.path}: {e}"
            ) from e
        self._watches[containerID] = watch
        notifier.startReading()

    def check(self, containerID: str) -> None:
        watch = self._watches.get(containerID)
        if watch is not None:
            self._changed(watch)

    def _changed(self, watch: _V2Watch) -> None:
        containerID = watch.containerID
        if self._watches.get(containerID) is not watch:
            return
        path = os.path.join(watch.cgroup.path, "memory.events")
        parentOOMKills = _oomKills(os.path.dirname(watch.cgroup.path))
        try:
            events = parseKeyValuesV2(readText(path), path)
            for key in V2_MEMORY_EVENTS:
                if isinstance(events.get(key, 0), str):
                    raise CgroupError(f"cannot convert {key} to uint64: {events[key]}")
        except (OSError, CgroupError) as e:
            # A deleted cgroup ends the watch quietly; anything else is an
            # error, which also forgets the last count (as Go does).
            if os.path.lexists(path):
                log.warn("error watching {path} for OOM: {error}", path=path, error=e)
                self._lastOOMKill.pop(containerID, None)
            elif _grew(watch.parentOOMKills, parentOOMKills):
                _callOOM(containerID, watch.onOOM)
            self._end(watch)
            return
        watch.parentOOMKills = parentOOMKills
        oomKill = uintOrZero(events, "oom_kill")
        if oomKill > self._lastOOMKill.get(containerID, 0):
            _callOOM(containerID, watch.onOOM)
        if oomKill > 0:
            self._lastOOMKill[containerID] = oomKill
        if _cgroupEmpty(watch.cgroup.path):
            self._end(watch)

    def _end(self, watch: _V2Watch) -> None:
        if self._watches.get(watch.containerID) is watch:
            del self._watches[watch.containerID]
        watch.notifier.loseConnection()

    def remove(self, containerID: str, forgetLast: bool = True) -> None:
        watch = self._watches.pop(containerID, None)
        if forgetLast:
            self._lastOOMKill.pop(containerID, None)
        if watch is not None:
            watch.notifier.loseConnection()

    def stop(self) -> None:
        for containerID in list(self._watches):
            self.remove(containerID)


def _oomKills(directory: str) -> int | None:
    """
    The C{oom_kill} count of a cgroup's C{memory.events}, or L{None} when
    it cannot be read.
    """
    path = os.path.join(directory, "memory.events")
    try:
        events = parseKeyValuesV2(readText(path), path)
    except (OSError, CgroupError):
        return None
    count = events.get("oom_kill", 0)
    return count if isinstance(count, int) else None


def _grew(before: int | None, after: int | None) -> bool:
    """
    Whether a count read twice grew; never when either read failed.
    """
    return before is not None and after is not None and after > before


def _cgroupEmpty(directory: str) -> bool:
    """
    Whether C{cgroup.events} says the cgroup has no process left; any
    doubt counts as empty, so that a watch never outlives its cgroup.
    """
    path = os.path.join(directory, "cgroup.events")
    try:
        events = parseKeyValuesV2(readText(path), path)
    except (OSError, CgroupError):
        return True
    populated = events.get("populated")
    return not isinstance(populated, int) or populated == 0
