"""
Side-by-side benchmarks of shimd and containerd's Go shim
(C{containerd-shim-runc-v2}) under a private containerd.

C{python -m benchmarks} (or C{tox -e bench}) runs them; see L{benchmarks.run}
for what is measured and how, and C{--help} for the levels. C{python -m
benchmarks.launcherprofile} looks inside the launcher's C{start} and
C{delete}, the two processes of every container's life that cost shimd the
most next to the Go shim.
"""
