#!/bin/bash
# The plain objective (eq. 3) against eq. 3 + --contrastive 0.1 at equal training compute, on the
# embedded MNIST digits (seeds 0, 1) and Fashion-MNIST (seed 0), and the term on the first 5 stages
# instead of 2 (MNIST, seed 0); then `vqdraw probe` (linear and MLP accuracy by code prefix) on
# each, and sample FID (`vqdraw eval-samples`) on the seed-0 runs of the first two objectives.
#
#     bash benchmarks/contrastive_vs_plain.sh [RUNS_FOLDER]      # default runs/contrastive
#     python benchmarks/representation_table.py [RUNS_FOLDER]    # the table and picture
#
# Equal compute: the contrastive term runs its first m of 10 stages once more on a shifted view,
# so a step costs 1 + m/10 of a plain step's stage evaluations; plain runs 1,200 steps, contrastive
# (m = 2) 1,000, contrastive5 (m = 5) 800.
# One thread per command (OMP_NUM_THREADS=1); about 2 CPU hours in all on a 2-core AMD EPYC.
set -e
R=${1:-runs/contrastive}
mkdir -p "$R"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
run() {  # dataset seed objective
  d=$1; s=$2; o=$3; out=$R/$d-$o-$s
  [ -f "$out/done" ] && return
  case "$o" in
    plain) extra="--steps 1200" ;;
    contrastive) extra="--steps 1000 --contrastive 0.1" ;;
    contrastive5) extra="--steps 800 --contrastive 0.1 --contrastive-stages 5" ;;
  esac
  rm -rf "$out"
  vqdraw train --preset mnist-10min --dataset "$d" --seed "$s" $extra --time-budget 200 \
      --eval-every 400 --save-every 400 --run "$out" --no-progress > "$out.train.log" 2>&1
  tc=""; [ "$d" = fashion-mnist ] && tc="--train-count 5000"
  vqdraw probe "$out" --prefixes 1 2 3 5 10 $tc > "$out.probe.log" 2>&1
  if [ "$s" = 0 ] && [ "$o" != contrastive5 ]; then vqdraw eval-samples "$out" --count 1000 --no-progress > "$out.fid.log" 2>&1; fi
  touch "$out/done"
}
for o in plain contrastive; do run mnist-embedded 0 $o; done
for o in plain contrastive; do run mnist-embedded 1 $o; done
for o in plain contrastive; do run fashion-mnist 0 $o; done
run mnist-embedded 0 contrastive5
