#!/usr/bin/env bash
# Run the end-to-end suites (tests/e2e, tests/cri) and the unit tests in a
# chroot (a pivot_root, in fact) of Debian SUITE, with that suite's own containerd, runc, criu and
# Python, against shimd and against that suite's Go shim.
#
#   tools/hosts/chroot.sh SUITE [TEST...]
#
# (the tests default to the whole set below; name some to iterate on them)
#
# The tree comes from tools/hosts/rootfs.sh (cached) and stays pristine: the
# leg runs on an overlay of it whose upper layer is a temporary directory.
# Everything runs in new mount and PID namespaces: the chroot gets its own
# /proc, /run (a tmpfs, so the host's /run/containerd and /run/shimd, whose
# fork server sockets are keyed by shimd's install path, are never shared)
# and /tmp, and the host's /sys (for the cgroup hierarchies) and /dev. When
# the leg ends, however it ends, every process it started dies with its PID
# namespace and every mount goes with its mount namespace; the temporary
# directory is removed last. shimd is installed from a copy of this checkout
# (tracked and untracked files, as they are in the working tree) into a
# virtualenv made by the suite's Python. Downloads from PyPI are cached under
# the rootfs cache.
#
# The last lines are the skips, "N passed, M failed" and trial's summary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/../.." && pwd)
cache=${SHIMD_HOSTS_CACHE:-/var/cache/shimd-hosts}

# The packages each chroot leg needs: the runtime under test, its Python,
# busybox for the test containers, criu for checkpoint and restore (with
# iptables, which criu runs to lock the container's network while it dumps).
PACKAGES=(containerd runc python3 python3-venv busybox-static iproute2 criu
    iptables crun ca-certificates)
VENV=/opt/shimd
SOURCE=/shimd
SEARCH_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

inside() {
    # In the new namespaces: build the chroot, then run the suite in it.
    local tree=$1 work=$2 root=$2/root
    shift 2
    mount -t overlay overlay \
        -o "lowerdir=$tree,upperdir=$work/upper,workdir=$work/overlay" "$root"
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o mode=0755 tmpfs "$root/run"
    mkdir -p "$work/tmp" "$root/root/.cache/pip" "$cache/pip"
    chmod 1777 "$work/tmp"
    mount --bind "$work/tmp" "$root/tmp"
    mount --bind "$cache/pip" "$root/root/.cache/pip"

    # The host's name resolution, CA bundle and pip configuration, so that
    # pip reaches PyPI the way the host does.
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    fi
    if [ -f /etc/pip.conf ]; then
        cp -L /etc/pip.conf "$root/etc/pip.conf"
    fi

    mkdir -p "$root$SOURCE"
    git -C "$checkout" ls-files -z --cached --others --exclude-standard \
        | tar -c -C "$checkout" --null -T - --ignore-failed-read 2>/dev/null \
        | tar -x -C "$root$SOURCE"

    local environment=(HOME=/root LANG=C.UTF-8 "PATH=$VENV/bin:$SEARCH_PATH"
        "CI=${CI:-}" "SHIMD_E2E_BINARY=$VENV/bin/containerd-shim-pyrunc-v2"
        "SHIMD_HOSTS_TESTS=$*")
    local name
    for name in $(compgen -e); do
        # Not PIP_FIND_LINKS: a directory of the host's.
        case $name in PIP_FIND_LINKS) ;; PIP_*) environment+=("$name=${!name}") ;; esac
    done
    # Make the tree the root of the mount namespace, not just of our
    # processes: criu refuses to dump a task whose root is not its mount
    # namespace's ("The root task has another root than mntns"), as a plain
    # chroot would have it. The host's tree is then unmounted from this
    # namespace altogether.
    cd "$root"
    mkdir -p .host
    pivot_root . .host
    cd /
    umount -l /.host
    rmdir /.host
    exec /usr/bin/env -i "${environment[@]}" /bin/bash -c "$(declare -f suite); suite"
}

suite() {
    # In the chroot: install shimd from the copy and run the tests.
    set -uo pipefail
    cd /shimd
    echo "== $(. /etc/os-release && echo "$PRETTY_NAME"): containerd $(containerd --version \
        | awk '{print $3}'), runc $(runc --version | awk 'NR==1 {print $3}'), \
criu $(criu --version 2>/dev/null | awk 'NR==1 {print $2}'), $(python3 --version)"
    python3 -m venv /opt/shimd || return 1
    /opt/shimd/bin/pip install --quiet --upgrade pip || return 1
    /opt/shimd/bin/pip install --quiet '.[test]' || return 1
    /opt/shimd/bin/python -m compileall -q /opt/shimd/lib
    ln -sf /opt/shimd/bin/containerd-shim-pyrunc-v2 /usr/local/bin/containerd-shim-pyrunc-v2
    local modules=(tests.e2e tests.cri)
    local module
    for module in tests/test_*.py; do
        module=${module%.py}
        modules+=("${module//\//.}")
    done
    if [ -n "$SHIMD_HOSTS_TESTS" ]; then
        read -ra modules <<<"$SHIMD_HOSTS_TESTS"
    fi
    echo "== trial ${modules[*]}"
    python -m twisted.trial --reporter=bwverbose --temp-directory=/tmp/shimd-trial \
        "${modules[@]}"
}

if [ "${1:-}" = --inside ]; then
    shift
    inside "$@"
    exit
fi

if [ "$#" -lt 1 ]; then
    echo "usage: $0 SUITE [TEST...]" >&2
    exit 2
fi
suite=$1
shift
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: run me as root (debootstrap, mounts and containerd need it)" >&2
    exit 1
fi
for tool in unshare pivot_root git flock; do
    command -v "$tool" >/dev/null || {
        echo "$0: $tool is missing" >&2
        exit 1
    }
done

tree=$(bash "$here/rootfs.sh" "$suite" "${PACKAGES[@]}")
work=$(mktemp -d "/var/tmp/shimd-hosts-$suite.XXXXXX")
log="$work.log"
cleanUp() {
    # The namespaces are gone once unshare has returned; nothing is mounted
    # under $work any more, but never cross into another file system anyway.
    rm -rf --one-file-system "$work"
    rm -f "$log"
}
trap cleanUp EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$work/upper" "$work/overlay" "$work/root"

set +e
unshare --mount --pid --fork --kill-child --propagation private \
    bash "$here/chroot.sh" --inside "$tree" "$work" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

summary=$(grep -E '^(PASSED|FAILED) \(' "$log" | tail -n 1 || true)
count() {
    local value
    value=$(sed -n "s/.*[(, ]$1=\([0-9]*\).*/\1/p" <<<"$summary")
    echo "${value:-0}"
}
failed=$(($(count failures) + $(count errors) + $(count unexpectedSuccesses)))
echo "$(count skips) skipped"
echo "$(count successes) passed, $failed failed"
echo "${summary:-FAILED (trial did not finish)}"
exit "$status"
