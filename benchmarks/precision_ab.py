"""Training-step time of float32 against bf16 autocast, alternating in one process, as JSON.

    python benchmarks/precision_ab.py --preset mnist-10min --rounds 7 --steps 5 --threads 1

Two copies of the preset's model (same initialisation), each with its own Adam, take turns: each
round runs ``--steps`` steps of one precision, then of the other, on the same batches of the
preset's dataset. Alternating in one process makes the ratio robust to load that comes and goes
(a busy machine slows both); the medians are per step. What each precision reaches in test
quality at equal steps comes from two real runs (docs/scaling.md, "Precision").
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mnist-10min")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="steps of each precision per round")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from vqdraw import VQDraw
    from vqdraw.core.config import get_preset
    from vqdraw.data import load_dataset
    from vqdraw.training.runtime import native_bf16
    from vqdraw.training.train import train_step

    preset = get_preset(args.preset)
    torch.manual_seed(0)
    base = VQDraw(preset.model).train()
    arms = {}
    for precision in ("fp32", "bf16"):
        model = copy.deepcopy(base)
        arms[precision] = (model, torch.optim.Adam(model.parameters(), lr=preset.train.lr))
    data = load_dataset(preset.train.dataset, "train", size=tuple(preset.model.data_shape[1:]))
    gen = torch.Generator().manual_seed(0)
    times = {k: [] for k in arms}
    for r in range(args.rounds + 1):  # round 0 warms up
        batches = [data.batch(torch.randint(len(data), (preset.train.batch,), generator=gen))
                   for _ in range(args.steps)]
        order = ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")
        for precision in order:
            model, opt = arms[precision]
            for x in batches:
                t0 = time.perf_counter()
                train_step(model, opt, x, preset.train, precision=precision)
                if r:
                    times[precision].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"benchmark": "precision_ab", "preset": args.preset, "threads": args.threads,
                      "native_bf16": native_bf16("cpu"), "steps_each": len(times["fp32"]),
                      "median_s": {k: round(v, 4) for k, v in med.items()},
                      "bf16_speedup": round(med["fp32"] / med["bf16"], 3)}, indent=2))


if __name__ == "__main__":
    main()
