#!/usr/bin/env bash
# Regenerate tests/cri/cri_api_pb2.py, cri_api_pb2.pyi and cri_api_pb2_grpc.py
# from tests/cri/cri_api.proto, the CRI subset the CRI tests speak.
#
#   tests/cri/genprotos.sh          regenerate in place
#   tests/cri/genprotos.sh --check  regenerate into a scratch directory and
#                                   fail, showing the difference, if the
#                                   committed modules differ
#
# Needs grpcio-tools (python -m grpc_tools.protoc; the version pinned in
# setup.cfg's dev extra) in the Python on PATH, or set PYTHON to another
# interpreter. It works from the repository root so that the generated imports
# read "from tests.cri import cri_api_pb2".
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

export LC_ALL=C
PYTHON="${PYTHON:-python}"
modules=(cri_api_pb2.py cri_api_pb2.pyi cri_api_pb2_grpc.py)

generate() {
    "$PYTHON" -m grpc_tools.protoc -I. --python_out="$1" --pyi_out="$1" \
        --grpc_python_out="$1" tests/cri/cri_api.proto
}

if [ "${1:-}" = "--check" ]; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    generate "$scratch"
    status=0
    for module in "${modules[@]}"; do
        diff -u "tests/cri/$module" "$scratch/tests/cri/$module" || status=1
    done
    if [ "$status" -ne 0 ]; then
        echo "generated CRI modules are out of date: run tests/cri/genprotos.sh" >&2
    fi
    exit "$status"
fi

for module in "${modules[@]}"; do
    rm -f "tests/cri/$module"
done
generate .
