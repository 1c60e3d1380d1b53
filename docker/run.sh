#!/usr/bin/env bash
# Build agq's container and run `make bitstream` (or the given command) in it, FINN's way: the host's
# Xilinx installation is mounted read-only at the same path, the licence settings are passed through,
# and the build outputs (build/, runs/) are the host's own folders.
#
#   FINN_XILINX_PATH=/tools/Xilinx FINN_XILINX_VERSION=2022.2 docker/run.sh [make bitstream BOARD=Pynq-Z2]
#
# Optional: PYNQ_BOARD_FILES=<folder holding pynq-z2/> (Vivado board files for the Zynq shell),
# XILINXD_LICENSE_FILE / LM_LICENSE_FILE (licence server or file), AGQ_IMAGE (image tag).
set -euo pipefail

: "${FINN_XILINX_PATH:?set FINN_XILINX_PATH to the Xilinx installation root, e.g. /tools/Xilinx}"
: "${FINN_XILINX_VERSION:?set FINN_XILINX_VERSION to 2022.2 or 2024.2}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${AGQ_IMAGE:-agq-finn:latest}"

docker build --tag "$image" --file "$repo/docker/Dockerfile" "$repo"

mkdir -p "$repo/build" "$repo/runs"
args=(
    --rm --init
    --volume "$FINN_XILINX_PATH:$FINN_XILINX_PATH:ro"
    --volume "$repo/build:/opt/agq/build"
    --volume "$repo/runs:/opt/agq/runs"
    --env "FINN_XILINX_PATH=$FINN_XILINX_PATH"
    --env "FINN_XILINX_VERSION=$FINN_XILINX_VERSION"
)
if [[ -t 0 && -t 1 ]]; then
    args+=(--interactive --tty)
fi
# Licence passthrough: a server (port@host) is passed as is, a licence file is mounted read-only.
for var in XILINXD_LICENSE_FILE LM_LICENSE_FILE; do
    value="${!var:-}"
    if [[ -n "$value" ]]; then
        args+=(--env "$var=$value")
        if [[ -f "$value" ]]; then
            args+=(--volume "$value:$value:ro")
        fi
    fi
done
if [[ -d "$HOME/.Xilinx" ]]; then
    args+=(--volume "$HOME/.Xilinx:/root/.Xilinx:ro")
fi
if [[ -n "${PYNQ_BOARD_FILES:-}" ]]; then
    args+=(--volume "$PYNQ_BOARD_FILES:/opt/finn_deps/board_files:ro")
fi

if [[ $# -eq 0 ]]; then
    set -- make bitstream
fi
exec docker run "${args[@]}" "$image" "$@"
