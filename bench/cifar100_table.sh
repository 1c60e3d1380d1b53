#!/usr/bin/env bash
# The paper's Table 6 rows on CIFAR-100 ResNet-18 (plain/residual, + AG, + AG + SSP), SEEDS seeds each,
# with the loop engineer's configs (configs/cifar100_resnet18_{plain,residual}.yaml: 35 fine-tuning epochs,
# Adam 1e-3, /10 at 25 and 30, batch 256), then the table from the runs' metrics (agq bench --from-runs).
# Needs a GPU and internet (torchvision downloads CIFAR-100). Usage: bench/cifar100_table.sh [SEEDS]
set -euo pipefail
seeds=${1:-3}
agq=${AGQ:-.venv/bin/agq}
out=runs/cifar100_table
run() {  # run NAME CONFIG SEED [--set ...]
  local name=$1 config=$2 seed=$3
  shift 3
  local resume=()
  if [[ -f $out/${name}_s$seed/last.pt ]]; then resume=(--resume); fi
  if [[ ! -f $out/${name}_s$seed/checkpoint.pt ]]; then
    "$agq" train --config "$config" --set "name=${name}_s$seed" --set "train.seed=$seed" \
      --set "train.output_dir=$out" "$@" "${resume[@]}"
  fi
}
for seed in $(seq 0 $((seeds - 1))); do
  for arch in plain residual; do
    config=configs/cifar100_resnet18_$arch.yaml
    run "$arch" "$config" "$seed" --set ag.enabled=false --set ssp.enabled=false
    run "${arch}_ag" "$config" "$seed" --set ag.enabled=true --set ssp.enabled=false
    run "${arch}_ag_ssp" "$config" "$seed" --set ag.enabled=true --set ssp.enabled=true
  done
done
"$agq" bench --from-runs "$out" --out bench/results/cifar100
