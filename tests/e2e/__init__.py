"""
End-to-end tests: a private containerd driven by C{ctr}, with each test run
once against containerd's Go C{containerd-shim-runc-v2} (the reference) and
once against shimd's C{containerd-shim-pyrunc-v2}.

The harness lives in L{tests.e2e.containerd} (the private containerd, C{ctr}
and per-test namespaces), L{tests.e2e.runtimes} (the two runtimes and the
skip rules), L{tests.e2e.rootfs} (busybox rootfs and OCI image),
L{tests.e2e.events} (C{ctr events}), L{tests.e2e.host} (processes, cgroups,
mounts and sockets on the host) and L{tests.e2e.base} (the test mixin, and
running C{ctr} on a pseudo-terminal).

The tests: L{tests.e2e.test_lifecycle} (output, input, exit statuses, exec,
terminals, event order), L{tests.e2e.test_control} (pause, ps, metrics,
update, OOM), L{tests.e2e.test_errors} (failures and their codes),
L{tests.e2e.test_image} (snapshot mounts), L{tests.e2e.test_logging}
(C{--log-uri}), L{tests.e2e.test_resources} (leaks, 20 tasks at once),
L{tests.e2e.test_resilience} (containerd restart, dead shim) and
L{tests.e2e.test_shim} (socket address, bundle files, C{ctr shim}, groups).

Run them with C{python -m twisted.trial tests.e2e} as root; each test exists
as C{...Go} (containerd's C{containerd-shim-runc-v2}) and C{...Shimd}
(C{containerd-shim-pyrunc-v2}, or the binary named by C{$SHIMD_E2E_BINARY}).
"""
