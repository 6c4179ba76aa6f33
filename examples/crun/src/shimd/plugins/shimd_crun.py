"""
The dropin that adds the crun runtime plugin to every shimd shim (see
L{shimd_crun}).
"""

from shimd_crun import crunPlugin

__all__ = ["crunPlugin"]
