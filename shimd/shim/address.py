# -*- test-case-name: tests.test_launcher -*-
"""
The shim's socket: its address (as the Go shim derives it), its directory,
binding and listening on it owner-only, probing it, and the bundle's
C{address} file that names it.

Standard library only, and only its cheapest parts: the launcher imports it
on containerd's critical path, and the daemon and the fork server bind
their sockets with it too.
"""

from __future__ import annotations

import _socket
import errno
import os
import stat

from shimd.shim.errors import LaunchError

# The interpreter's own SHA-256: hashlib would load OpenSSL first.
try:
    from _sha2 import sha256  # type: ignore[import-not-found]
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        from hashlib import sha256

SOCKET_DIR = "/run/containerd/s"
LISTEN_FD = 3
LISTEN_BACKLOG = 4096
SOCKET_MODE = 0o600


def cleanPath(path: str) -> str:
    """
    Go's C{path.Clean}: the shortest equivalent path, lexically.
    """
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def joinPath(*elements: str) -> str:
    """
    Go's C{filepath.Join}: join the non-empty elements and clean the result.
    """
    nonEmpty = [element for element in elements if element]
    return cleanPath("/".join(nonEmpty)) if nonEmpty else ""


def socketAddress(
    containerdAddress: str, namespace: str, group: str, socketDir: str = SOCKET_DIR
) -> str:
    """
    The shim's socket address, as the Go shim derives it: a hash of
    containerd's address, the namespace and the group key, under the socket
    directory.
    """
    key = joinPath(containerdAddress, namespace, group).encode("utf-8")
    return f"unix://{joinPath(socketDir, sha256(key).hexdigest())}"


def listen(address: str) -> _socket.socket | None:
    """
    Bind and listen on the address's filesystem socket, owner-only.

    @return: the listening socket, or L{None} when a shim already listens
        there (the group's shim, which this container joins).
    """
    path = address.removeprefix("unix://")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    for attempt in (1, 2):
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        previous = os.umask(0o177)
        try:
            listener.bind(path)
        except OSError as e:
            listener.close()
            if e.errno != errno.EADDRINUSE or attempt == 2:
                raise LaunchError(f"create new shim socket: {e}") from e
            if canConnect(path):
                return None
            os.unlink(path)
            continue
        finally:
            os.umask(previous)
        os.chmod(path, SOCKET_MODE)
        listener.listen(LISTEN_BACKLOG)
        return listener
    raise AssertionError("unreachable")


def canConnect(path: str, timeout: float = 0.1) -> bool:
    """
    Whether something accepts connections on a socket path.
    """
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def writeAddress(bundle: str, address: str) -> None:
    """
    Write the bundle's C{address} file atomically, without a newline.
    """
    temporary = os.path.join(bundle, ".address")
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, address.encode("utf-8"))
    finally:
        os.close(fd)
    os.rename(temporary, os.path.join(bundle, "address"))


class Listener:
    """
    Where the shim serves: an inherited listening socket, or a path to bind.
    (A plain class: the daemon makes one before it reports that it started,
    ahead of importing Twisted.)

    @ivar fd: the inherited socket, or L{None} to bind C{path}.
    @ivar path: the socket's filesystem path, removed at shutdown.
    """

    def __init__(self, fd: int | None, path: str) -> None:
        self.fd = fd
        self.path = path

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Listener):
            return NotImplemented
        return (self.fd, self.path) == (other.fd, other.path)

    def __repr__(self) -> str:
        return f"Listener(fd={self.fd!r}, path={self.path!r})"

    def open(self) -> int:
        """
        @return: a listening, non-blocking socket descriptor, ours to close.
        """
        if self.fd is None:
            listener = listen("unix://" + self.path)
            if listener is None:
                raise RuntimeError(f"a shim already listens on {self.path}")
            self.fd = listener.detach()
        os.set_blocking(self.fd, False)
        fd, self.fd = self.fd, None
        return fd


def listenerFromFD(fd: int) -> Listener:
    """
    Serve on an inherited listening unix socket; its bound path is removed at
    shutdown.

    @raise ValueError: when C{fd} is not a unix socket bound to a path.
    """
    probe = _socket.socket(fileno=os.dup(fd))
    try:
        name = probe.getsockname()
    finally:
        probe.close()
    path = name.decode() if isinstance(name, bytes) else name
    if not isinstance(path, str) or not path or path.startswith("\0"):
        raise ValueError(f"fd {fd} is not a filesystem unix socket")
    return Listener(fd, path)


def listenerFromPath(path: str) -> Listener:
    """
    Bind and serve on a unix socket path, owner-only.
    """
    return Listener(None, os.path.abspath(path))


def removeStaleSocket(bundle: str) -> None:
    """
    Remove the socket file named by the bundle's C{address} if no shim
    listens on it any more: a shim that was killed cannot remove its own.
    A group's shim that still serves other containers answers, and keeps
    its socket; so does anything but a unix socket whose connections are
    refused.
    """
    try:
        with open(os.path.join(bundle, "address")) as f:
            path = f.read().strip().removeprefix("unix://")
        if not path or not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except OSError:
        return
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    probe.settimeout(1.0)
    refused = False
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        refused = True
    except OSError:
        pass
    finally:
        probe.close()
    if refused:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
