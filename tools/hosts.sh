#!/usr/bin/env bash
# Run the test suite on one or more host legs, as root, and sum up.
#
#   tools/hosts.sh LEG [LEG...]
#
# Legs:
#   bookworm  this host itself (Debian 12): exactly tools/test.sh, from the
#             .venv that tools/setup.sh made
#   trixie    a chroot of Debian 13: containerd 1.7, runc 1.1, Python 3.13
#   sid       a chroot of Debian sid: containerd 2.1, runc 1.3, Python 3.14,
#             criu 4.2 (tools/hosts/chroot.sh)
#   sid-vm    Debian sid booted under QEMU: systemd, cgroup v2
#             (tools/hosts/vm.sh)
#
# Each leg builds what it needs from Debian's packages (cached), runs its
# tests and cleans up after itself. Every leg runs, even after one fails.
# The last two lines add up the legs: "N passed, M failed" and a trial-style
# summary, PASSED (successes=N) or FAILED (...); the exit status is 0 only
# when every leg passed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    echo "usage: $0 LEG [LEG...]   (legs: bookworm trixie sid sid-vm)" >&2
    exit 2
}

leg() {
    case $1 in
        bookworm) exec bash "$here/test.sh" ;;
        trixie | sid) exec bash "$here/hosts/chroot.sh" "$1" ;;
        sid-vm)
            shift
            exec bash "$here/hosts/vm.sh" "$@"
            ;;
        *) usage ;;
    esac
}

results() {
    awk -v runtime="$1" -f "$here/hosts/results.awk" "$log"
}

[ "$#" -ge 1 ] || usage
for name in "$@"; do
    case $name in bookworm | trixie | sid | sid-vm) ;; *) usage ;; esac
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
declare -A totals=()
keys=(skips expectedFailures failures errors unexpectedSuccesses successes)
status=0
for name in "$@"; do
    echo "==== leg $name"
    (leg "$name") 2>&1 | tee "$log"
    legStatus=${PIPESTATUS[0]}
    summary=$(grep -E '^(PASSED|FAILED) \(' "$log" | tail -n 1)
    if [ -z "$summary" ]; then
        summary="FAILED (errors=1)"
    fi
    if [ "$legStatus" -ne 0 ] || [[ $summary == FAILED* ]]; then
        status=1
        [[ $summary == FAILED* ]] || summary="FAILED (errors=1, ${summary#PASSED (}"
    fi
    echo "==== leg $name: $summary"
    # The VM leg counts its own, from the guest's trial log: its console
    # interleaves kernel messages with the results, and after a guest panic
    # holds a second boot's lines too. The other legs are counted here.
    counted=$(grep -E '^end-to-end tests passed/failed/skipped: ' "$log" | tail -n 1)
    if [ -n "$counted" ]; then
        echo "==== leg $name: $counted"
    elif grep -qE '^tests\.[A-Za-z0-9_.]+Shimd\.test' "$log"; then
        echo "==== leg $name: end-to-end tests passed/failed/skipped:" \
            "shimd $(results Shimd), Go shim $(results Go)"
    fi
    for key in "${keys[@]}"; do
        value=$(sed -n "s/.*[(, ]$key=\([0-9]*\).*/\1/p" <<<"$summary")
        totals[$key]=$((${totals[$key]:-0} + ${value:-0}))
    done
done

fields=()
for key in "${keys[@]}"; do
    [ "${totals[$key]}" -eq 0 ] || fields+=("$key=${totals[$key]}")
done
failed=$((totals[failures] + totals[errors] + totals[unexpectedSuccesses]))
echo "${totals[skips]} skipped"
echo "${totals[successes]} passed, $failed failed"
joined=$(
    IFS=,
    echo "${fields[*]}"
)
if [ "$status" -eq 0 ]; then
    echo "PASSED (${joined//,/, })"
else
    echo "FAILED (${joined//,/, })"
fi
exit "$status"
