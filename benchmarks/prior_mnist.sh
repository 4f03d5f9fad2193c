#!/usr/bin/env bash
# The measurements of docs/prior.md: a learned prior for an MNIST model, its entropy-coded files,
# samples and likelihood bounds.  Usage: benchmarks/prior_mnist.sh MODEL_DIR OUT_DIR
set -euo pipefail
M=$1; OUT=$2
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
V="nice -n 10 python -m vqdraw.cli"
$V prior "$M" --dataset mnist-embedded --steps 4000 --patience 10 --no-progress
python - "$OUT/digits" <<'PY'
import sys
from pathlib import Path
from vqdraw.data import balanced_subset, load_dataset
from vqdraw.images import save_image
test = load_dataset("mnist-embedded", "test")
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
x = test.batch(balanced_subset(test.labels, 500, size=len(test)))
for i in range(len(x)):
    save_image(x[i], out / f"{i:03d}.png")
PY
$V encode "$M" "$OUT/digits" -o "$OUT/digits-fixed.vqd"
$V encode "$M" "$OUT/digits" -o "$OUT/digits-prior.vqd" --prior
$V decode "$M" "$OUT/digits-prior.vqd" -o "$OUT/decoded-prior"
$V decode "$M" "$OUT/digits-fixed.vqd" -o "$OUT/decoded-fixed"
diff -r "$OUT/decoded-prior" "$OUT/decoded-fixed" && echo "decoded PNGs identical"
$V eval "$M" --dataset mnist-embedded --count 500 --prior -o "$OUT/eval"
$V eval-nll "$M" --dataset mnist-embedded --count 500 --prior -o "$OUT/nll"
$V eval-samples "$M" --dataset mnist-embedded --count 500 --prior --no-progress -o "$OUT/samples/t1"
$V eval-samples "$M" --dataset mnist-embedded --count 500 --prior --temperature 0.8 --no-progress -o "$OUT/samples/t0.8"
$V sample "$M" --prior -n 64 -o "$OUT/prior-samples.png"
$V sample "$M" -n 64 -o "$OUT/uniform-samples.png"
python benchmarks/prior_report.py "$M" "$OUT/eval" "$OUT/nll" "$OUT/samples"
