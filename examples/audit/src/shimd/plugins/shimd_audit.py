"""
The dropin that adds the audit plugin to every shimd shim (see
L{shimd_audit}).
"""

from shimd_audit import auditPlugin

__all__ = ["auditPlugin"]
