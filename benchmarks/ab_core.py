"""Same-hour A/B of the default mnist path: one train step (batch 32, eq. 3, backward, Adam) and
one greedy encode of 64 digits with the shipped mnist model, for the vqdraw on PYTHONPATH.

    OMP_NUM_THREADS=1 PYTHONPATH=OLD/src nice -n 10 python benchmarks/ab_core.py   # then NEW/src, alternating

Prints one JSON line: median seconds of `--reps` timed calls of each (after one untimed call).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import vqdraw
from vqdraw import PRESETS, VQDraw  # the public API: the same names before and after the relayout
from vqdraw.data import load_dataset

# The shipped model's weights, read by both sides (older trees have no pretrained/ folder).
SHIPPED = Path(__file__).resolve().parent.parent / "src" / "vqdraw" / "pretrained" / "mnist"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--model", default=str(SHIPPED), help="model folder to encode with")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist-embedded", "test")
    x32, x64 = data.batch(range(32)), data.batch(range(64))
    torch.manual_seed(0)
    model = VQDraw(PRESETS["mnist"].model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step():
        opt.zero_grad(set_to_none=True)
        model.loss(x32)["loss"].backward()
        opt.step()

    shipped = VQDraw.load(args.model).eval()
    out = {"vqdraw": str(Path(vqdraw.__file__).parent)}
    for name, fn in (("train_step_s", train_step), ("encode64_s", lambda: shipped.encode(x64))):
        fn()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
