#!/usr/bin/env bash
# The sid-vm host leg: a cgroup-v2 subset of the end-to-end tests, against
# shimd and against the Go shim, in a QEMU virtual machine running Debian
# sid with systemd as PID 1 on a unified (v2) cgroup hierarchy.
#
#   tools/hosts/vm.sh [TEST...]
#
# TEST... are trial names to run instead of the subset (to iterate on one
# module: "tools/hosts/vm.sh tests.e2e.test_cgroup2"). The tree comes from
# tools/hosts/rootfs.sh (cached, with a kernel and systemd) and stays
# pristine: the leg works on a copy, into which shimd is installed from this
# checkout (tracked and untracked files, as they are in the working tree)
# with the suite's Python, in a chroot (the VM has no network). The copy
# becomes an ext4 image that QEMU boots under software emulation (KVM is not
# required); a oneshot systemd unit runs trial, writes its output to the
# image and the serial console, and powers the VM off. The output is then
# read back from the image (debugfs, nothing mounted).
#
# Environment: SHIMD_VM_TIMEOUT bounds the VM's run in seconds (default
# 1800; a VM still running then is killed), SHIMD_VM_MEMORY its memory in
# MiB (default 4096), SHIMD_VM_KEEP=1 keeps the work directory (tree, image
# and logs) and says where it is. Everything the leg mounted or started is
# undone when it ends, however it ends.
#
# The last lines are the counts per runtime, "N passed, M failed" and
# trial's summary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/../.." && pwd)
cache=${SHIMD_HOSTS_CACHE:-/var/cache/shimd-hosts}
timeout=${SHIMD_VM_TIMEOUT:-1800}
memory=${SHIMD_VM_MEMORY:-4096}

# What the VM needs besides the runtime under test: a kernel (with its
# initramfs), systemd as init (with D-Bus, which runc's systemd cgroup
# driver talks to), Python for the tests and busybox for the containers.
PACKAGES=(linux-image-amd64 systemd systemd-sysv dbus udev kmod containerd runc
    python3 python3-venv busybox-static iproute2 ca-certificates)
# One test of each capability on cgroup v2, with the cgroupfs and the
# systemd cgroup driver, through ctr and through the CRI plugin (a pod of two
# containers), each against shimd and the Go shim (the classes end in Shimd
# and Go).
SUBSET=(tests.e2e.test_cgroup2 tests.cri.test_pod.PodTestsGo.test_podLifecycle
    tests.cri.test_pod.PodTestsShimd.test_podLifecycle tests.cri.test_systemd)
VENV=/opt/shimd
SOURCE=/shimd
LOG=/var/log/shimd-vm/trial.log
SEARCH_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

installShimd() {
    # In a new mount namespace, chrooted into the copy: make the venv and
    # install shimd with its test dependencies.
    local root=$1
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mkdir -p "$root/root/.cache/pip" "$cache/pip"
    mount --bind "$cache/pip" "$root/root/.cache/pip"
    local environment=(HOME=/root LANG=C.UTF-8 "PATH=$SEARCH_PATH")
    local name
    for name in $(compgen -e); do
        # Not PIP_FIND_LINKS: a directory of the host's.
        case $name in PIP_FIND_LINKS) ;; PIP_*) environment+=("$name=${!name}") ;; esac
    done
    exec chroot "$root" /usr/bin/env -i "${environment[@]}" /bin/bash -euc "
        python3 -m venv $VENV
        $VENV/bin/pip install --quiet --upgrade pip
        cd $SOURCE
        $VENV/bin/pip install --quiet '.[test]'
        $VENV/bin/python -m compileall -q $VENV/lib
        ln -sf $VENV/bin/containerd-shim-pyrunc-v2 /usr/local/bin/containerd-shim-pyrunc-v2
    "
}

runner() {
    # The script the VM's test unit runs.
    cat <<EOF
#!/bin/bash
# Run the tests named in /etc/shimd-vm-tests, then power the VM off.
export HOME=/root LANG=C.UTF-8 PATH=$VENV/bin:$SEARCH_PATH CI=${CI:-}
export SHIMD_E2E_BINARY=$VENV/bin/containerd-shim-pyrunc-v2
mkdir -p "\$(dirname $LOG)"
exec > >(tee $LOG) 2>&1
echo "== \$(. /etc/os-release && echo "\$PRETTY_NAME"), kernel \$(uname -r):" \\
    "containerd \$(containerd --version | awk '{print \$3}')," \\
    "runc \$(runc --version | awk 'NR==1 {print \$3}')," \\
    "systemd \$(systemctl --version | awk 'NR==1 {print \$2}'), \$(python3 --version)," \\
    "cgroup \$(stat -fc %T /sys/fs/cgroup), \$(nproc) cpus"
cd $SOURCE
started=\$(date +%s)
python -m twisted.trial --rterrors --reporter=bwverbose --temp-directory=/var/tmp/shimd-trial \\
    \$(cat /etc/shimd-vm-tests)
echo "== trial exited with \$? after \$((\$(date +%s) - started)) s"
sync
systemctl poweroff --no-block
EOF
}

unit() {
    cat <<EOF
[Unit]
Description=shimd's sid-vm tests
After=multi-user.target
Wants=dbus.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/shimd-vm-run
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
EOF
}

if [ "${1:-}" = --install ]; then
    installShimd "$2"
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "$0: run me as root (debootstrap, chroot and the image need it)" >&2
    exit 1
fi
missing=()
for tool in qemu-system-x86_64:qemu-system-x86 mkfs.ext4:e2fsprogs debugfs:e2fsprogs \
    unshare:util-linux git:git; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
tests=("$@")
if [ "${#tests[@]}" -eq 0 ]; then
    tests=("${SUBSET[@]}")
fi

tree=$(bash "$here/rootfs.sh" sid "${PACKAGES[@]}")
work=$(mktemp -d /var/tmp/shimd-hosts-sid-vm.XXXXXX)
qemu=
cleanUp() {
    if [ -n "$qemu" ]; then
        kill "$qemu" 2>/dev/null || true
        wait "$qemu" 2>/dev/null || true
    fi
    if [ "${SHIMD_VM_KEEP:-}" = 1 ]; then
        echo "$0: kept $work" >&2
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanUp EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
started=$SECONDS

# The VM's tree: a copy of the cached one with shimd installed, the tests
# to run, their unit, and nothing that would compete with them or hang the
# console (containerd's own service, the serial getty).
root=$work/root
cp -a "$tree" "$root"
mkdir -p "$root$SOURCE"
git -C "$checkout" ls-files -z --cached --others --exclude-standard \
    | tar -c -C "$checkout" --null -T - --ignore-failed-read 2>/dev/null \
    | tar -x -C "$root$SOURCE"
# The host's name resolution, CA bundle and pip configuration, so that pip
# reaches PyPI the way the host does.
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
if [ -f /etc/pip.conf ]; then
    cp -L /etc/pip.conf "$root/etc/pip.conf"
fi
unshare --mount --propagation private bash "$here/vm.sh" --install "$root"
rm -f "$root/etc/pip.conf" "$root/usr/sbin/policy-rc.d"
printf '%s\n' "${tests[@]}" >"$root/etc/shimd-vm-tests"
runner >"$root/usr/local/sbin/shimd-vm-run"
chmod 0755 "$root/usr/local/sbin/shimd-vm-run"
unit >"$root/etc/systemd/system/shimd-vm-tests.service"
ln -sf /etc/systemd/system/shimd-vm-tests.service \
    "$root/etc/systemd/system/multi-user.target.wants/shimd-vm-tests.service"
for masked in serial-getty@ttyS0.service getty@tty1.service containerd.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$masked"
done
echo shimd-vm >"$root/etc/hostname"
kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n 1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
mkfs.ext4 -q -L shimd-vm -d "$root" "$work/disk.img" 4G
rm -rf --one-file-system "$root"
echo "$0: image built in $((SECONDS - started)) s; booting (at most $timeout s)" >&2

# Software emulation: KVM is neither required nor used. A guest kernel that
# panics (sid's kernel under TCG has, now and then, in an interrupt) ends
# the boot at once (panic=-1, -no-reboot) with the trial unfinished: the
# leg then boots a fresh copy of the image once more, and says so.
cp --sparse=always "$work/disk.img" "$work/pristine.img"
log=$work/trial.log
boot() {
    cp --sparse=always "$work/pristine.img" "$work/disk.img"
    # Made before qemu starts: its redirection happens in the background
    # child, and a tail started first would find no file and give up.
    : >"$work/console.log"
    timeout --kill-after=10 "$timeout" qemu-system-x86_64 \
        -accel tcg,thread=multi -cpu max -m "$memory" -smp 2 \
        -nographic -no-reboot -nic none \
        -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
        -drive "file=$work/disk.img,if=virtio,format=raw" \
        -append "root=/dev/vda rw console=ttyS0 panic=-1 quiet systemd.show_status=false" \
        </dev/null >"$work/console.log" 2>&1 &
    qemu=$!
    tail -n +1 -f --pid="$qemu" "$work/console.log" &
    set +e
    wait "$qemu"
    status=$?
    qemu=
    set -e
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "$0: the VM was still running after $timeout s; killed" >&2
    fi
    debugfs -R "cat $LOG" "$work/disk.img" >"$log" 2>/dev/null || true
}
boot
if grep -q 'Kernel panic' "$work/console.log" \
    && ! grep -qE '^(PASSED|FAILED) \(' "$log"; then
    echo "$0: the guest kernel panicked before the trial ended; booting a fresh image once more" >&2
    boot
fi
rm -f "$work/pristine.img"
echo "$0: VM done after $((SECONDS - started)) s in all" >&2

summary=$(grep -E '^(PASSED|FAILED) \(' "$log" | tail -n 1 || true)
results() {
    awk -v runtime="$1" -f "$here/results.awk" "$log"
}
head -n 1 "$log"
echo "end-to-end tests passed/failed/skipped: shimd $(results Shimd), Go shim $(results Go)"
count() {
    local value
    value=$(sed -n "s/.*[(, ]$1=\([0-9]*\).*/\1/p" <<<"$summary")
    echo "${value:-0}"
}
failed=$(($(count failures) + $(count errors) + $(count unexpectedSuccesses)))
echo "$(count skips) skipped"
echo "$(count successes) passed, $failed failed"
echo "${summary:-FAILED (trial did not finish)}"
[ -n "$summary" ] && [ "$failed" -eq 0 ]
