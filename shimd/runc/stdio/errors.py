# -*- test-case-name: tests.test_stdio -*-
"""
The error of the stdio package.
"""

from __future__ import annotations


class StdioError(Exception):
    """
    The requested stdio cannot be set up; the message says why.
    """
