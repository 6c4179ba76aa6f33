#!/usr/bin/env bash
# Run a busybox container through shimd under a private containerd: its own
# root, state and socket in a temporary directory, so nothing on the host is
# disturbed. Run tools/setup.sh first (as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "tools/demo.sh: run me as root (containerd and runc need it)" >&2
    exit 1
fi
shim=$(command -v containerd-shim-pyrunc-v2 || true)
if [ -z "$shim" ]; then
    echo "tools/demo.sh: containerd-shim-pyrunc-v2 is not on PATH: run tools/setup.sh" >&2
    exit 1
fi

demo=$(mktemp -d /tmp/shimd-demo.XXXXXX)
containerd_pid=
cleanup() {
    ctr -a "$demo/c.sock" -n demo task rm -f demo1 >/dev/null 2>&1 || true
    ctr -a "$demo/c.sock" -n demo containers rm demo1 >/dev/null 2>&1 || true
    if [ -n "$containerd_pid" ]; then
        kill "$containerd_pid" 2>/dev/null || true
        wait "$containerd_pid" 2>/dev/null || true
    fi
    rm -rf "$demo"
}
trap cleanup EXIT

# A busybox root filesystem: the static busybox and a link per applet used.
mkdir -p "$demo/rootfs/bin" "$demo/rootfs/proc" "$demo/rootfs/dev" "$demo/rootfs/sys" \
    "$demo/rootfs/tmp" "$demo/rootfs/etc"
cp /bin/busybox "$demo/rootfs/bin/busybox"
for applet in sh echo uname cat; do
    ln -s busybox "$demo/rootfs/bin/$applet"
done

cat > "$demo/config.toml" <<TOML
version = 2
root = "$demo/root"
state = "$demo/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$demo/c.sock"
TOML
containerd --config "$demo/config.toml" >"$demo/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 100); do
    ctr -a "$demo/c.sock" version >/dev/null 2>&1 && break
    sleep 0.1
done

echo "Running a busybox container through shimd (runtime io.containerd.pyrunc.v2):"
ctr -a "$demo/c.sock" -n demo run --rm --runtime io.containerd.pyrunc.v2 \
    --rootfs "$demo/rootfs" demo1 \
    /bin/sh -c 'echo "hello from a container run by shimd on $(uname -sr)"'
echo "The container ran and was removed; its shim was $shim."
