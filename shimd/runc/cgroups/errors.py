# -*- test-case-name: tests.test_cgroups -*-
"""
The errors of the cgroup package.
"""

from __future__ import annotations


class CgroupError(Exception):
    """
    A cgroup could not be found, read or watched.
    """


class CgroupNotFound(CgroupError):
    """
    The process, or its cgroup, is gone (or never had one).
    """
