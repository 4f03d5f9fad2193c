"""Inputs for the large-job measurements of docs/robustness.md ("Large but valid jobs").

    python benchmarks/large_jobs.py vqd N OUT.vqd [--model MODEL]   N items of random codes for MODEL
    python benchmarks/large_jobs.py text BYTES OUT.txt              seeded pseudo-English, BYTES long
    python benchmarks/large_jobs.py voxels N SIDE OUT.npy           N random bool grids SIDE³

Each input is seeded, so the same command makes the same bytes. The measurements themselves are
the vqdraw commands run under ``/usr/bin/time -f "%e s %M KB"`` (wall time, peak RSS), as listed
in docs/robustness.md.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

WORDS = ("the of and to in is was for on that with as by at from his an were are which this be or "
         "had it not but first one their its new after who they have her she two been other when there "
         "all during into school time may years more most only over city some world would where later up "
         "such used many can state about national out known university united then made").split()


def make_vqd(n: int, out: str, model: str) -> None:
    from vqdraw import VQDraw
    from vqdraw.compress.codec import compress_codes

    m = VQDraw.load(model)
    codes = np.random.default_rng(0).integers(0, m.options, (n, m.stages))
    data = compress_codes(m, codes)
    with open(out, "wb") as f:
        f.write(data)
    print(f"{out}: {n} items, {len(data)} bytes")


def make_text(size: int, out: str) -> None:
    rng = np.random.default_rng(0)
    words, total = [], 0
    while total < size:
        w = WORDS[rng.integers(len(WORDS))]
        words.append(w)
        total += len(w) + 1
    text = (" ".join(words) + "\n")[:size]
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{out}: {len(text)} characters")


def make_voxels(n: int, side: int, out: str) -> None:
    grids = np.random.default_rng(0).random((n, side, side, side), dtype=np.float32) < 0.3
    np.save(out, grids)
    print(f"{out}: {n} grids of {side}³, {grids.nbytes} bytes")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("vqd")
    q.add_argument("n", type=int)
    q.add_argument("out")
    q.add_argument("--model", default="pretrained:mnist")
    q = sub.add_parser("text")
    q.add_argument("bytes", type=int)
    q.add_argument("out")
    q = sub.add_parser("voxels")
    q.add_argument("n", type=int)
    q.add_argument("side", type=int)
    q.add_argument("out")
    args = p.parse_args(argv)
    if args.what == "vqd":
        make_vqd(args.n, args.out, args.model)
    elif args.what == "text":
        make_text(args.bytes, args.out)
    else:
        make_voxels(args.n, args.side, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
