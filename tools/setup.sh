#!/usr/bin/env bash
# Set up this checkout on a fresh Debian machine, as root: containerd, runc and
# busybox-static from apt, and a virtualenv in .venv with shimd installed (in
# development mode) and its test and development tools. The shim binary is
# linked into /usr/local/bin so that containerd finds the runtime
# io.containerd.pyrunc.v2 on its PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "tools/setup.sh: run me as root (containerd and runc need it)" >&2
    exit 1
fi

packages=(containerd runc busybox-static python3 python3-venv python3-dev gcc git ca-certificates)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet --config-settings editable_mode=compat -e '.[dev]'
# Python 3.11's venv comes with setuptools, whose distutils-precedence.pth
# has every interpreter start import _distutils_hack: about a third of the
# time of the shim binary's start and delete actions, which containerd waits
# for twice per container. Nothing in the venv needs it at run time
# (grpcio-tools declares it but generates the protobuf modules without it).
.venv/bin/pip uninstall --quiet --yes setuptools 2>/dev/null || true
# Compile shimd's modules now: containerd starts the shim binary twice per
# container, and an environment with PYTHONDONTWRITEBYTECODE set would
# otherwise have it compile them from source every time.
.venv/bin/python -m compileall -q shimd
ln -sf "$PWD/.venv/bin/containerd-shim-pyrunc-v2" /usr/local/bin/containerd-shim-pyrunc-v2
echo "shimd is set up: $(.venv/bin/containerd-shim-pyrunc-v2 -v | sed -n 2p | xargs)"
