#!/usr/bin/env bash
# Regenerate shimd/protos/*_pb2.py and *_pb2.pyi from our .proto files.
#
#   tools/genprotos.sh          regenerate in place
#   tools/genprotos.sh --check  regenerate into a scratch directory and fail,
#                               showing the difference, if the committed
#                               modules differ from what the schemas give
#
# Needs grpcio-tools (python -m grpc_tools.protoc) in the Python on PATH, or
# set PYTHON to another interpreter. It works from the repository root so that
# the generated imports read "from shimd.protos ...".
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A fixed locale gives a fixed file order.
export LC_ALL=C
PYTHON="${PYTHON:-python}"

generate() {
    "$PYTHON" -m grpc_tools.protoc -I. --python_out="$1" --pyi_out="$1" shimd/protos/*.proto
}

if [ "${1:-}" = "--check" ]; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    generate "$scratch"
    status=0
    for generated in "$scratch"/shimd/protos/*_pb2.py "$scratch"/shimd/protos/*_pb2.pyi; do
        committed=shimd/protos/$(basename "$generated")
        diff -u "$committed" "$generated" || status=1
    done
    for committed in shimd/protos/*_pb2.py shimd/protos/*_pb2.pyi; do
        if [ ! -e "$scratch/$committed" ]; then
            echo "stale generated module: $committed" >&2
            status=1
        fi
    done
    if [ "$status" -ne 0 ]; then
        echo "generated protobuf modules are out of date: run tools/genprotos.sh" >&2
    fi
    exit "$status"
fi

# Removing the old output first drops modules whose .proto has gone away.
rm -f shimd/protos/*_pb2.py shimd/protos/*_pb2.pyi
generate .
