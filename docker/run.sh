#!/usr/bin/env bash
# Build agq's container and run `make bitstream` (or the given command) in it, FINN's way
# (run-docker.sh): as the host user (files in build/ stay yours), the project folder mounted at its
# own absolute path (report.json paths and the step cache are valid on the host too), the host's
# Xilinx installation mounted read-only at its path, the licence settings passed through, and
# shared memory for FINN's FIFO-sizing simulation.
#
#   FINN_XILINX_PATH=/tools/Xilinx FINN_XILINX_VERSION=2022.2 docker/run.sh [make bitstream BOARD=Pynq-Z2]
#
# Optional: XILINXD_LICENSE_FILE / LM_LICENSE_FILE (licence server or file), AGQ_IMAGE (image tag),
# AGQ_SHM_SIZE (shared memory, default 8g).
set -euo pipefail

: "${FINN_XILINX_PATH:?set FINN_XILINX_PATH to the Xilinx installation root, e.g. /tools/Xilinx}"
: "${FINN_XILINX_VERSION:?set FINN_XILINX_VERSION to 2022.2 or 2024.2}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${AGQ_IMAGE:-agq-finn:latest}"
home=/tmp/agq-home

docker build --tag "$image" --file "$repo/docker/Dockerfile" "$repo"

mkdir -p "$repo/build" "$repo/runs"
args=(
    --rm --init
    --user "$(id -u):$(id -g)"
    --volume /etc/passwd:/etc/passwd:ro
    --volume /etc/group:/etc/group:ro
    --env "HOME=$home"
    --volume "$repo:$repo"
    --workdir "$repo"
    --shm-size "${AGQ_SHM_SIZE:-8g}"
    --volume "$FINN_XILINX_PATH:$FINN_XILINX_PATH:ro"
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
    args+=(--volume "$HOME/.Xilinx:$home/.Xilinx:ro")
fi

if [[ $# -eq 0 ]]; then
    set -- make bitstream
fi
exec docker run "${args[@]}" "$image" "$@"
