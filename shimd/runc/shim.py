"""
The runc shim's program, C{containerd-shim-pyrunc-v2}: shimd's launcher
(L{shimd.shim.launcher}) with the runc manager (L{shimd.runc.manager}).

Standard library only, as both are: containerd runs it twice for every
container.
"""

from __future__ import annotations

import sys

from shimd.runc import manager
from shimd.shim import launcher

# collections.abc costs milliseconds to import (the collections package
# with it): mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the program (L{launcher.main}).

    @return: the exit status.
    """
    return launcher.main(manager, argv)


if __name__ == "__main__":
    sys.exit(main())
