# -*- test-case-name: tests.test_protos -*-
"""Our own protobuf schemas for the shim wire formats and their generated modules."""
