# -*- test-case-name: tests.test_launcher -*-
"""
The failure of a launcher action. Standard library only.
"""


class LaunchError(Exception):
    """
    The action failed; the message is what containerd shows its user.
    """
