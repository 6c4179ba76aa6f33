"""
Faults, restarts, bad input and load: shimd against real containerd, runc
and busybox containers, with what it holds measured from C{/proc}.

Every test runs in two sizes. By default (CI) the counts are small and the
whole package takes a few minutes; with C{SHIMD_STRESS=full} (C{tox -e
stress}) the same tests run with the full counts: 10,000 fuzzed frames,
1,000 container lifecycles, 10,000 execs, and a containerd outage longer
than the Go shim's event retry budget. L{tests.stress.scale} holds the
counts.

The modules: L{tests.stress.test_restart} (containerd stopped and started
under running containers, with the Go shim alongside for comparison),
L{tests.stress.test_deadshim} (the shim SIGKILLed, containerd cleaning up),
L{tests.stress.test_fuzz} (malformed frames and messages on a live shim's
socket), L{tests.stress.test_load} (many clients, many lifecycles and execs,
and what they leave behind), L{tests.stress.test_readers} (slow and stuck
readers of output and of the log) and L{tests.stress.test_access} (who may
connect, and ids that try to escape the bundle).

Like the end-to-end tests they need root, containerd, runc and
busybox-static, and skip without them. A run writes its figures (counts,
durations, memory and descriptors before and after) as JSON lines to the
file named by C{$SHIMD_STRESS_REPORT}, when set.
"""
