# -*- test-case-name: tests.test_ttrpc -*-
"""
ttrpc, containerd's small RPC protocol, on Twisted: framing, a server
L{Protocol}/L{Factory} that dispatches to handlers returning Deferreds, a
client, and the status codes that carry errors.
"""
