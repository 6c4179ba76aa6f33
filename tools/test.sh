#!/usr/bin/env bash
# Run every check and the whole test suite from the virtualenv tools/setup.sh
# made: ruff, mypy, the generated-protobuf check, then trial. The last line
# printed is trial's own summary; the line before it counts passes and
# failures. trial reports verbosely, one line per test with its full name
# (tools/hosts.sh counts the end-to-end tests per runtime from them). Extra
# arguments go to trial (e.g. a test module).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH"

checks=0
run() {
    echo "== $*"
    "$@" || checks=1
}
run ruff check .
run ruff format --check .
run mypy
run env PYTHON=python bash tools/genprotos.sh --check

# trial's working directory, one per checkout, so that two checkouts can be
# tested at once.
workdir=/tmp/shimd-trial-$(pwd -P | sha256sum | cut -c1-12)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== trial ${*:-tests}"
python -m twisted.trial --reporter=bwverbose --temp-directory="$workdir" \
    "${@:-tests}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

summary=$(grep -E '^(PASSED|FAILED) \(' "$log" | tail -n 1)
count() {
    local value
    value=$(sed -n "s/.*[(, ]$1=\([0-9]*\).*/\1/p" <<<"$summary")
    echo "${value:-0}"
}
passed=$(count successes)
failed=$(( $(count failures) + $(count errors) + $(count unexpectedSuccesses) ))
skipped=$(count skips)
if [ "$checks" -ne 0 ]; then
    echo "(lint, type or generated-protobuf checks failed: see above)"
    failed=$((failed + 1))
    status=1
fi
echo "$skipped skipped"
echo "$passed passed, $failed failed"
echo "${summary:-FAILED (trial did not finish)}"
exit "$status"
