"""
The runc shim, built on L{shimd.shim}: the task service and its processes,
the runc client, stdio, cgroups and mounts.
"""
