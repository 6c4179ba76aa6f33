# -*- test-case-name: tests.test_launcher -*-
"""
The shim's command line, as containerd writes it, parsed the way Go's
C{flag} package parses it: the flags, their usage text and the validation of
the namespace and id, for the launcher and the daemon alike.

Standard library only, and only its cheapest parts: the launcher imports it
on containerd's critical path.
"""

from __future__ import annotations

from shimd.shim.errors import LaunchError

# collections.abc costs milliseconds to import (the collections package
# with it): mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

IDENTIFIER_MAX_LENGTH = 76
IDENTIFIER_PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
_IDENTIFIER_LETTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)
_IDENTIFIER_SEPARATORS = frozenset("._-")

_BOOLEAN_FLAGS = frozenset({"debug", "v", "info"})
_VALUE_FLAGS = frozenset(
    {"namespace", "id", "socket", "bundle", "address", "publish-binary"}
)
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# Go's flag.PrintDefaults for the Go shim's flags (and containerd 2.x's
# -info), in its layout: sorted, one-letter names on one line.
USAGE = """\
  -address string
    \tgrpc address back to main containerd
  -bundle string
    \tpath to the bundle if not workdir
  -debug
    \tenable debug output in logs
  -id string
    \tid of the task
  -info
    \tget the option protobuf from stdin, print the shim info protobuf to stdout, \
and exit
  -namespace string
    \tnamespace that owns the shim
  -publish-binary string
    \tpath to publish binary (used for publishing events) (default "containerd")
  -socket string
    \tsocket path to serve
  -v\tshow the shim version and exit
"""


class FlagError(LaunchError):
    """
    The command line is not valid: as Go's C{flag} package does, print the
    message and the usage, and exit with status 2.
    """


class HelpRequested(Exception):
    """
    C{-h} or C{-help}: as Go's C{flag} package does, print the usage and
    exit with status 0.
    """


def usage(argv0: str) -> str:
    """
    The usage text Go's C{flag} package prints.
    """
    return f"Usage of {argv0}:\n{USAGE}"


class Flags:
    """
    The parsed command line. (A plain class: C{attrs} and C{dataclasses}
    cost more to import than this whole module.)
    """

    def __init__(self) -> None:
        self.namespace = ""
        self.id = ""
        self.socket = ""
        self.bundle = ""
        self.address = ""
        self.publishBinary = "containerd"
        self.debug = False
        self.version = False
        self.info = False
        self.arguments: list[str] = []

    @property
    def action(self) -> str | None:
        return self.arguments[0] if self.arguments else None


def parseFlags(argv: Sequence[str]) -> Flags:
    """
    Parse a command line the way Go's C{flag} package does: one or two
    dashes, C{-name value} or C{-name=value} (booleans only the latter),
    flags before the first positional argument, C{--} ending them.

    @raise FlagError: for an unknown flag, a missing or bad value, or bad
        syntax, with Go's message.
    @raise HelpRequested: for C{-h} or C{-help}.
    """
    flags = Flags()
    values: dict[str, str] = {}
    booleans: dict[str, bool] = {}
    index = 0
    while index < len(argv):
        word = argv[index]
        if len(word) < 2 or word[0] != "-":
            break
        if word == "--":
            index += 1
            break
        name = word[2:] if word[1] == "-" else word[1:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {word}")
        name, hasValue, value = name.partition("=")
        index += 1
        if name in _BOOLEAN_FLAGS:
            if not hasValue or value in _TRUE:
                booleans[name] = True
            elif value in _FALSE:
                booleans[name] = False
            else:
                raise FlagError(
                    f"invalid boolean value {goQuote(value)} for -{name}: parse error"
                )
        elif name in _VALUE_FLAGS:
            if not hasValue:
                if index >= len(argv):
                    raise FlagError(f"flag needs an argument: -{name}")
                value = argv[index]
                index += 1
            values[name] = value
        elif name in ("h", "help"):
            raise HelpRequested()
        else:
            raise FlagError(f"flag provided but not defined: -{name}")
    flags.arguments = list(argv[index:])
    flags.namespace = values.get("namespace", "")
    flags.id = values.get("id", "")
    flags.socket = values.get("socket", "")
    flags.bundle = values.get("bundle", "")
    flags.address = values.get("address", "")
    flags.publishBinary = values.get("publish-binary", "containerd")
    flags.debug = booleans.get("debug", False)
    flags.version = booleans.get("v", False)
    flags.info = booleans.get("info", False)
    return flags


def goQuote(text: str) -> str:
    """
    A string quoted as Go's C{%q} quotes it (for printable text, and with
    escapes for what is not).
    """
    quoted = ['"']
    for character in text:
        if character in '"\\':
            quoted.append("\\" + character)
        elif character.isprintable():
            quoted.append(character)
        elif ord(character) < 0x80:
            quoted.append(
                {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(
                    character, f"\\x{ord(character):02x}"
                )
            )
        elif ord(character) <= 0xFFFF:
            quoted.append(f"\\u{ord(character):04x}")
        else:
            quoted.append(f"\\U{ord(character):08x}")
    quoted.append('"')
    return "".join(quoted)


def validateIdentifier(text: str) -> None:
    """
    containerd's C{identifiers.Validate}: 1 to 76 bytes of ASCII letters
    and digits, separated by single dots, underscores or dashes, with a
    letter or digit at each end.

    @raise LaunchError: with containerd's message, when C{text} is not one.
    """
    if not text:
        raise LaunchError("identifier must not be empty: invalid argument")
    if len(text.encode("utf-8", "surrogateescape")) > IDENTIFIER_MAX_LENGTH:
        raise LaunchError(
            f"identifier {goQuote(text)} greater than maximum length "
            f"({IDENTIFIER_MAX_LENGTH} characters): invalid argument"
        )
    previous = "."
    for character in text:
        if character in _IDENTIFIER_SEPARATORS and previous in _IDENTIFIER_SEPARATORS:
            break
        if character not in _IDENTIFIER_LETTERS | _IDENTIFIER_SEPARATORS:
            break
        previous = character
    else:
        if previous not in _IDENTIFIER_SEPARATORS:
            return
    raise LaunchError(
        f"identifier {goQuote(text)} must match {IDENTIFIER_PATTERN}: invalid argument"
    )


def validateFlags(flags: Flags) -> None:
    """
    Check the namespace and the id as containerd does before they name any
    path: the Go shim's C{namespace validation: ...}, and the same rule for
    the id (which containerd already enforces on the ids it passes).

    @raise LaunchError: when one is not valid.
    """
    if not flags.namespace:
        raise LaunchError("shim namespace cannot be empty")
    try:
        validateIdentifier(flags.namespace)
    except LaunchError as e:
        raise LaunchError(f"namespace validation: {e}") from e
    if flags.id:
        try:
            validateIdentifier(flags.id)
        except LaunchError as e:
            raise LaunchError(f"id validation: {e}") from e


def daemonArguments(namespace: str, id: str, address: str, debug: bool) -> list[str]:
    """
    The daemon's flags, as the Go shim gives its own re-executed daemon.
    """
    arguments = ["-namespace", namespace, "-id", id, "-address", address]
    return [*arguments, "-debug"] if debug else arguments
