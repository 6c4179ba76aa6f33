"""
A container's cgroup, as the Go shim's C{github.com/containerd/cgroups} and
C{containerd/pkg/oom} see it: the host's mode (L{mode}, standard library
only, for the launcher), the mount table (L{mountinfo}), the files
(L{files}), loading a process's cgroup (L{load}), the v1 and v2 cgroups and
their statistics (L{v1}, L{v2}) and OOM watching (L{oom}).

This package imports nothing itself, so that importing L{mode} stays
cheap and free of Twisted.
"""
