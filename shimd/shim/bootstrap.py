# -*- test-case-name: tests.test_bootstrap -*-
"""
What containerd tells C{start} on its stdin, in either of its forms, and the
C{-info} answer containerd 2.x asks for.

containerd 1.6 to 2.2 write the runtime options as a bare
C{google.protobuf.Any} (or nothing). containerd 2.3 writes a
C{containerd.runtime.bootstrap.v1.BootstrapParams} instead, carrying the
namespace, its addresses, the log level, the socket directory and the
runtime options as an extension. The two share field numbers, so both decode
as either; as in the Go shim, the bootstrap form is taken only when its
instance id and namespace are the ones on the command line.

Standard library only: C{start} and C{-info} run on containerd's critical
path. The field numbers are those of our schemas in L{shimd.protos}
(C{bootstrap.proto}, C{introspection.proto}, C{runc_options.proto}); the tests
check every one against the generated classes.
"""

from __future__ import annotations

import os

from shimd import RUNTIME_NAME, __version__, wire
from shimd.wire import Message

# collections.abc costs milliseconds to import (the collections package
# with it): mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"
RUNTIME_OPTIONS_TYPE = "runtimeoptions.v1.Options"
FEATURES_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
LOG_LEVEL_DEBUG = -4
FEATURES_CACHE_DIR = "/run/shimd"


# The runc options a runtimeoptions.v1.Options config file may set, by the
# names containerd's own configuration gives them: field number and type.
OPTION_NAMES: dict[str, tuple[int, type]] = {
    "NoPivotRoot": (1, bool),
    "NoNewKeyring": (2, bool),
    "ShimCgroup": (3, str),
    "IoUid": (4, int),
    "IoGid": (5, int),
    "BinaryName": (6, str),
    "Root": (7, str),
    "CriuPath": (8, str),
    "SystemdCgroup": (9, bool),
    "CriuImagePath": (10, str),
    "CriuWorkPath": (11, str),
}


class OptionsError(ValueError):
    """
    Runtime options that cannot be used; the message says why.
    """


def runcOptionsFromFile(path: str) -> bytes:
    """
    Encode the runc options a TOML file sets, by containerd's names
    (C{BinaryName = "/usr/sbin/runc"}, C{SystemdCgroup = true}, ...).

    @raise OptionsError: for an unreadable file, an unknown name or a value
        of the wrong type.
    """
    import tomllib

    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise OptionsError(f"runtime options file {path}: {e}") from e
    encoded = b""
    for name, value in sorted(
        document.items(), key=lambda item: OPTION_NAMES.get(item[0], (99,))[0]
    ):
        if name not in OPTION_NAMES:
            raise OptionsError(f"runtime options file {path}: unknown option {name}")
        number, kind = OPTION_NAMES[name]
        if type(value) is not kind:
            raise OptionsError(
                f"runtime options file {path}: {name} must be a {kind.__name__}"
            )
        if isinstance(value, str):
            encoded += wire.stringField(number, value)
        else:
            assert isinstance(value, int)
            encoded += wire.varintField(number, int(value))
    return encoded


def runcOptions(typeURL: str, value: bytes) -> bytes | None:
    """
    The encoded C{containerd.runc.v1.Options} an options C{Any} carries.

    containerd 1.6's CRI plugin sends a C{runtimeoptions.v1.Options} (a
    C{TypeUrl} and a C{ConfigPath}) for every runtime type but its own runc
    ones; its config file then holds the runc options.

    @return: the options' bytes, or L{None} for another type.
    @raise OptionsError: when a C{runtimeoptions.v1.Options} names another
        type, or its file cannot be used.
    """
    if typeURL == RUNC_OPTIONS_TYPE:
        return value
    if typeURL != RUNTIME_OPTIONS_TYPE:
        return None
    try:
        fields = wire.decode(value)
    except wire.WireError as e:
        raise OptionsError(f"unmarshal {RUNTIME_OPTIONS_TYPE}: {e}") from e
    named = wire.lastString(fields, 1)
    if named not in ("", RUNC_OPTIONS_TYPE):
        raise OptionsError(f"{RUNTIME_OPTIONS_TYPE} of type {named}: not supported")
    path = wire.lastString(fields, 2)
    return runcOptionsFromFile(path) if path else b""


class StartInput:
    """
    What C{start} was told, from the flags, the environment and stdin.

    @ivar options: the C{containerd.runc.v1.Options} fields by number; empty
        when none were given.
    @ivar bootstrap: whether stdin held containerd 2.3's C{BootstrapParams}.
    """

    def __init__(
        self,
        namespace: str,
        address: str,
        ttrpcAddress: str,
        debug: bool,
        socketDir: str,
        options: Message,
        bootstrap: bool,
    ) -> None:
        self.namespace = namespace
        self.address = address
        self.ttrpcAddress = ttrpcAddress
        self.debug = debug
        self.socketDir = socketDir
        self.options = options
        self.bootstrap = bootstrap


def _strings(message: Message, *numbers: int) -> bool:
    """
    Whether the given fields, where present, are well-formed proto3 strings.
    """
    for number in numbers:
        for value in message.get(number, []):
            if not isinstance(value, bytes):
                return False
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return False
    return True


def decodeOptionsAny(data: bytes) -> Message:
    """
    The runc options in an encoded C{Any} (directly, or through a
    C{runtimeoptions.v1.Options} file), by field number; empty for any other
    type, or for options that cannot be read.
    """
    try:
        envelope = wire.decode(data)
        options = runcOptions(wire.lastString(envelope, 1), wire.lastBytes(envelope, 2))
        return wire.decode(options) if options is not None else {}
    except (wire.WireError, OptionsError):
        return {}


def decodeBootstrap(data: bytes, id: str, namespace: str) -> Message | None:
    """
    Decode stdin as C{BootstrapParams}, if that is what it is.

    @return: its fields by number, or L{None} when it does not decode as one
        or names another instance or namespace than the command line.
    """
    if not data:
        return None
    try:
        params = wire.decode(data)
    except wire.WireError:
        return None
    if not _strings(params, 1, 2, 4, 5, 6, 7, 9):
        return None
    if any(not isinstance(v, int) for v in params.get(3, [])):
        return None
    if any(not isinstance(v, bytes) for v in params.get(8, [])):
        return None
    if wire.lastString(params, 1) != id or wire.lastString(params, 2) != namespace:
        return None
    return params


def parseStartInput(
    stdin: bytes,
    id: str,
    namespace: str,
    address: str,
    debug: bool,
    environ: Mapping[str, str],
    socketDir: str,
) -> StartInput:
    """
    Combine the flags and environment with whichever form stdin holds.
    """
    params = decodeBootstrap(stdin, id, namespace)
    ttrpcAddress = environ.get("TTRPC_ADDRESS", "")
    if params is None:
        return StartInput(
            namespace,
            address,
            ttrpcAddress,
            debug,
            socketDir,
            decodeOptionsAny(stdin) if stdin else {},
            bootstrap=False,
        )
    options: Message = {}
    for extension in params.get(8, []):
        assert isinstance(extension, bytes)
        try:
            options = decodeOptionsAny(wire.lastBytes(wire.decode(extension), 1))
        except wire.WireError:
            continue
        if options:
            break
    level = wire.signed(wire.lastInt(params, 3))
    return StartInput(
        namespace=wire.lastString(params, 2) or namespace,
        address=wire.lastString(params, 6) or address,
        ttrpcAddress=wire.lastString(params, 5) or ttrpcAddress,
        debug=debug or level <= LOG_LEVEL_DEBUG,
        socketDir=wire.lastString(params, 9) if 9 in params else socketDir,
        options=options,
        bootstrap=True,
    )


def runcFeatures(binary: str, run: Callable[[list[str]], tuple[int, bytes]]) -> bytes:
    """
    The OCI runtime features document C{<runc> features} prints, cached by
    the binary's identity so that C{-info}, which containerd 2.x runs before
    every Create, spawns runc once per runc version.

    @param run: runs a command and returns its exit status and stdout.
    """
    import hashlib
    import json
    import shutil

    path = shutil.which(binary)
    if path is None:
        raise OSError(f'exec: "{binary}": executable file not found in $PATH')
    status = os.stat(path)
    key = hashlib.sha256(
        f"{path}\0{status.st_size}\0{status.st_mtime_ns}".encode()
    ).hexdigest()[:20]
    cache = os.path.join(FEATURES_CACHE_DIR, f"features-{key}.json")
    try:
        with open(cache, "rb") as f:
            return f.read()
    except OSError:
        pass
    code, output = run([path, "features"])
    if code != 0:
        raise OSError(f"{path} features: exit status {code}")
    json.loads(output)
    try:
        os.makedirs(FEATURES_CACHE_DIR, mode=0o700, exist_ok=True)
        temporary = f"{cache}.{os.getpid()}"
        with open(temporary, "wb") as f:
            f.write(output)
        os.rename(temporary, cache)
    except OSError:
        pass
    return bytes(output)


def runtimeInfo(optionsAny: bytes, features: bytes) -> bytes:
    """
    The C{containerd.types.RuntimeInfo} C{-info} prints: the runtime's name
    and version, the options it was given, and the runc features document.
    """
    version = wire.stringField(1, __version__) + wire.stringField(2, __version__)
    featuresAny = wire.stringField(1, FEATURES_TYPE) + wire.bytesField(2, features)
    return (
        wire.stringField(1, RUNTIME_NAME)
        + wire.bytesField(2, version, always=True)
        + wire.bytesField(3, optionsAny)
        + wire.bytesField(4, featuresAny, always=True)
    )
