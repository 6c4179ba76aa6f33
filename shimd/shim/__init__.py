"""
The shim framework: what any containerd shim is built on, whatever runs its
containers. The launcher containerd runs (C{start}, C{delete}, C{-info}),
the daemon and the fork server that starts it, the plugin registry, the
service that serves the plugins over ttrpc, event publishing, shutdown and
the subreaper.
"""
