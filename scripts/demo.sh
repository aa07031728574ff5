#!/usr/bin/env bash
# The demo on the synthetic data: generate it, then index every split. (The full pipeline follows once the
# Snakemake workflow exists.) Usage: scripts/demo.sh [DIR]
set -euo pipefail
dir=${1:-demo}
data="$dir/data"
if [ ! -f "$data/synth_truth.json" ]; then
    vpr synth --preset demo --out "$data"
fi
mkdir -p "$dir/index"
pitts="$data/pitts/raw"
tokyo="$data/tokyo/raw"
for split in pitts30k_train pitts30k_val pitts30k_test pitts250k_test; do
    vpr index --format pitts --mat "$pitts/$split.mat" --root "$pitts" --out "$dir/index/$split.h5"
done
vpr index --format tokyo247 --mat "$tokyo/tokyo247.mat" --root "$tokyo" --out "$dir/index/tokyo247.h5"
for split in train val; do
    vpr index --format tokyotm --mat "$tokyo/tokyoTM_$split.mat" --root "$tokyo" --out "$dir/index/tokyoTM_$split.h5"
done
