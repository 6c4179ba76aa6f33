"""
Recording containerd's events with C{ctr events}, for the tests to look at.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.containerd import TestNamespace, waitUntil

_LINE = re.compile(r"^(\S+ \S+ [+-]\d{4} \S+) (\S+) (/\S+) ?(.*)$")


@dataclass(frozen=True)
class Event:
    """
    One line of C{ctr events}: C{TIMESTAMP NAMESPACE TOPIC JSON}.
    """

    timestamp: str
    namespace: str
    topic: str
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def containerID(self) -> str | None:
        """
        The container an event is about: C{container_id} for C{/tasks/*},
        C{id} for C{/containers/*}.
        """
        if self.topic.startswith("/tasks/"):
            return self.payload.get("container_id")
        return self.payload.get("id")


def parseEventLine(line: str) -> Event | None:
    """
    Parse one line of C{ctr events}, or return L{None} if it is not an event.
    """
    match = _LINE.match(line.rstrip("\n"))
    if match is None:
        return None
    timestamp, namespace, topic, raw = match.groups()
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        payload = {"_raw": raw}
    if not isinstance(payload, dict):
        payload = {"_raw": payload}
    return Event(timestamp, namespace, topic, payload)


class EventRecorder:
    """
    C{ctr events} for one namespace, running in the background; its lines
    are parsed as they come.

    L{start} returns only once containerd is known to deliver to it: it
    labels the namespace and waits for the resulting C{/namespaces/update}.
    """

    _syncCounter = 0

    def __init__(self, namespace: TestNamespace) -> None:
        self.namespace = namespace
        self._events: list[Event] = []
        self.otherLines: list[str] = []
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        """
        Start C{ctr events}, filtered on our namespace, and wait until it
        receives events.
        """
        self._process = subprocess.Popen(
            self.namespace.containerd.ctrCommand(
                "events", f"namespace=={self.namespace.name}"
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.namespace.containerd.environment(),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.sync(timeout)

    def sync(self, timeout: float = 30.0) -> None:
        """
        Label the namespace and wait for the C{/namespaces/update} that
        causes: every event containerd published before is then recorded.
        Until C{ctr events} has subscribed the update can be missed, so the
        label is set again (with a new value) every second.
        """
        deadline = time.monotonic() + timeout
        while True:
            EventRecorder._syncCounter += 1
            marker = str(EventRecorder._syncCounter)
            result = self.namespace.ctr(
                "namespaces", "label", self.namespace.name, f"e2e.sync={marker}"
            )
            if result.code != 0:
                raise AssertionError(f"ctr namespaces label failed: {result}")

            def labelled(event: Event, marker: str = marker) -> bool:
                labels = event.payload.get("labels", {})
                return (
                    event.topic == "/namespaces/update"
                    and labels.get("e2e.sync") == marker
                )

            try:
                self.waitFor(
                    labelled,
                    min(1.0, max(deadline - time.monotonic(), 0.1)),
                    "ctr events to catch up",
                )
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
            else:
                return

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.decode("utf-8", "replace")
            event = parseEventLine(line)
            with self._lock:
                if event is None:
                    self.otherLines.append(line)
                else:
                    self._events.append(event)

    def stop(self) -> None:
        """
        Stop C{ctr events}.
        """
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._reader is not None:
            self._reader.join(10)
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()

    def events(self, containerID: str | None = None) -> list[Event]:
        """
        The events so far, in order of arrival; only those about
        C{containerID} if given.
        """
        with self._lock:
            events = list(self._events)
        if containerID is None:
            return events
        return [e for e in events if e.containerID == containerID]

    def taskEvents(self, containerID: str) -> list[Event]:
        """
        The C{/tasks/*} events about C{containerID} so far.
        """
        return [e for e in self.events(containerID) if e.topic.startswith("/tasks/")]

    def topics(self, containerID: str) -> list[str]:
        """
        The topics of L{taskEvents}.
        """
        return [e.topic for e in self.taskEvents(containerID)]

    def waitFor(
        self, predicate: Callable[[Event], bool], timeout: float, what: str
    ) -> Event:
        """
        Wait for an event matching C{predicate} (one already received
        counts).

        @raise AssertionError: naming C{what} and listing the events seen,
            when none comes within C{timeout} seconds.
        """

        def find() -> Event | None:
            for event in self.events():
                if predicate(event):
                    return event
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(
                    f"ctr events exited with {self._process.returncode}: "
                    f"{''.join(self.otherLines)}"
                )
            return None

        try:
            return waitUntil(find, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; events seen:\n{self.describe()}") from None

    def waitForTopic(
        self, containerID: str, topic: str, timeout: float = 30.0
    ) -> Event:
        """
        Wait for the event C{topic} about C{containerID}.
        """
        return self.waitFor(
            lambda e: e.topic == topic and e.containerID == containerID,
            timeout,
            f"{topic} of {containerID}",
        )

    def describe(self) -> str:
        """
        The events so far, one per line, for failure messages.
        """
        return "\n".join(
            f"  {e.topic} {json.dumps(e.payload, sort_keys=True)}"
            for e in self.events()
        )
