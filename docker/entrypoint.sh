#!/usr/bin/env bash
# Container entry point: source the mounted Xilinx tools' settings (FINN's FINN_XILINX_PATH and
# FINN_XILINX_VERSION convention), then run the command (default: make bitstream).
set -euo pipefail

: "${FINN_XILINX_PATH:?set FINN_XILINX_PATH to the Xilinx installation root (mounted by docker/run.sh)}"
: "${FINN_XILINX_VERSION:?set FINN_XILINX_VERSION, e.g. 2022.2 or 2024.2}"

vivado_settings="$FINN_XILINX_PATH/Vivado/$FINN_XILINX_VERSION/settings64.sh"
# Vitis HLS moved into Vitis with 2024.1; the 2022.x releases ship it on its own.
hls_settings="$FINN_XILINX_PATH/Vitis_HLS/$FINN_XILINX_VERSION/settings64.sh"
if [[ ! -f "$hls_settings" ]]; then
    hls_settings="$FINN_XILINX_PATH/Vitis/$FINN_XILINX_VERSION/settings64.sh"
fi
for settings in "$vivado_settings" "$hls_settings"; do
    if [[ ! -f "$settings" ]]; then
        echo "entrypoint: $settings not found; check FINN_XILINX_PATH and FINN_XILINX_VERSION" >&2
        exit 2
    fi
    # shellcheck source=/dev/null
    source "$settings"
done

mkdir -p "${HOME:-/tmp}"
exec "$@"
