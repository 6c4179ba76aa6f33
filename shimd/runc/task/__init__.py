"""
The task service: containerd's C{containerd.task.v2.Task} API served on runc,
with the state machines of init and exec processes.
"""
