#!/usr/bin/env bash
# Print the path of a Debian root filesystem of SUITE holding PACKAGE...,
# building it with debootstrap first if it is not cached yet.
#
#   tools/hosts/rootfs.sh SUITE PACKAGE...
#
# A tree is cached under $SHIMD_HOSTS_CACHE (default /var/cache/shimd-hosts),
# keyed by the suite, the sorted package list and this script's own text, so
# that a changed list builds a new tree and an unchanged one is reused. It is
# built beside its final place and renamed into it only once complete, under
# a lock, so an interrupted or concurrent build never leaves a half tree in
# the cache. The archive is the host's own Debian mirror (from its apt
# sources), or $SHIMD_DEBIAN_MIRROR. Progress goes to stderr; stdout carries
# only the path.
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: $0 SUITE [PACKAGE...]" >&2
    exit 2
fi
suite=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${SHIMD_HOSTS_CACHE:-/var/cache/shimd-hosts}

packages=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
key=$( (printf '%s\n%s\n' "$suite" "$packages"; cat "$here/rootfs.sh") \
    | sha256sum | cut -c1-16)
tree="$cache/$suite-$key"

hostMirror() {
    # The first deb URI of the host's apt sources that is not a security
    # archive, in either the deb822 or the one-line format.
    local found
    found=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources \
        | awk '{print $2}' | grep -v security | head -n 1 || true)
    if [ -z "$found" ]; then
        found=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            | awk '{print $2}' | grep -v security | head -n 1 || true)
    fi
    echo "$found"
}

mkdir -p "$cache"
exec 9>"$cache/.lock-$suite-$key"
flock 9
if [ ! -d "$tree" ]; then
    if ! command -v debootstrap >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends debootstrap >&2
    fi
    mirror=${SHIMD_DEBIAN_MIRROR:-$(hostMirror)}
    if [ -z "$mirror" ]; then
        echo "$0: no Debian mirror in the host's apt sources; set SHIMD_DEBIAN_MIRROR" >&2
        exit 1
    fi
    rm -rf "$tree.partial"
    echo "$0: building $suite with: $packages" >&2
    started=$SECONDS
    debootstrap --variant=minbase ${packages:+--include="$packages"} \
        "$suite" "$tree.partial" "$mirror" >"$cache/$suite-$key.log" 2>&1 || {
        echo "$0: debootstrap failed; the end of $cache/$suite-$key.log:" >&2
        tail -n 20 "$cache/$suite-$key.log" >&2
        exit 1
    }
    # Later package installs inside the tree must never start a service.
    printf '#!/bin/sh\nexit 101\n' >"$tree.partial/usr/sbin/policy-rc.d"
    chmod 0755 "$tree.partial/usr/sbin/policy-rc.d"
    mv "$tree.partial" "$tree"
    echo "$0: built $tree in $((SECONDS - started)) s" >&2
fi
echo "$tree"
