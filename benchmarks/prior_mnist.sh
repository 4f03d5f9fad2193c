#!/usr/bin/env bash
# The measurements of docs/prior.md: a learned prior for an MNIST model, its entropy-coded files,
# samples and likelihood bounds.  Usage: benchmarks/prior_mnist.sh MODEL_DIR OUT_DIR
# (the steps after `vqdraw prior` are independent of each other and may run side by side)
set -euo pipefail
M=$1; OUT=$2
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
V="nice -n 10 python -m vqdraw.cli"
$V prior "$M" --dataset mnist-embedded --steps 4000 --patience 10 --no-progress
$V eval-nll "$M" --dataset mnist-embedded --count 500 --prior -o "$OUT/nll"
$V eval-samples "$M" --dataset mnist-embedded --count 500 --prior --no-progress -o "$OUT/samples-t1"
$V sample "$M" --prior -n 64 -o "$OUT/prior-samples.png"
nice -n 10 python benchmarks/prior_report.py "$M" "$OUT/nll" "$OUT/samples-t1"
