"""float32 against bf16 autocast in one process, as JSON: step time, and test quality at equal
wall time.

    python benchmarks/precision_ab.py --preset mnist-10min --rounds 7 --steps 5 --threads 1
    python benchmarks/precision_ab.py --preset mnist-10min --minutes 4 --slice 15   # equal wall time

Two copies of the preset's model (same initialisation), each with its own Adam at the preset's
step size, take turns on the same CPU. Step time: each round runs ``--steps`` steps of one
precision, then of the other, on the same batches; alternating makes the ratio robust to load that
comes and goes (a busy machine slows both); the medians are per step. Equal wall time
(``--minutes``): each precision trains for ``--slice`` seconds in turn, on its own copy of one
seeded batch order, until each has had ``--minutes`` minutes; then both are evaluated on the
preset's test split (the first ``--eval`` items): the figure the presets' default precision is
chosen by (docs/scaling.md, "Precision").
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
    p.add_argument("--minutes", type=float, default=0, help="equal-wall-time mode: minutes of training each")
    p.add_argument("--slice", type=float, default=15, help="seconds of one precision before the other's turn")
    p.add_argument("--eval", type=int, default=500, help="test items evaluated in equal-wall-time mode")
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
    if args.minutes:
        return equal_wall_time(args, preset, arms, data, train_step)
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


def equal_wall_time(args, preset, arms, data, train_step) -> None:
    from vqdraw.data import load_dataset
    from vqdraw.modalities import modality_for
    from vqdraw.training.train import evaluate

    budget = args.minutes * 60
    state = {k: {"spent": 0.0, "steps": 0, "gen": torch.Generator().manual_seed(0)} for k in arms}
    turn = 0
    while any(s["spent"] < budget for s in state.values()):
        precision = ("fp32", "bf16")[turn % 2]
        turn += 1
        s = state[precision]
        if s["spent"] >= budget:
            continue
        model, opt = arms[precision]
        end = time.perf_counter() + min(args.slice, budget - s["spent"])
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            x = data.batch(torch.randint(len(data), (preset.train.batch,), generator=s["gen"]))
            train_step(model, opt, x, preset.train, precision=precision)
            s["steps"] += 1
        s["spent"] += time.perf_counter() - t0
    test = load_dataset(preset.train.dataset, "test", size=tuple(preset.model.data_shape[1:]))
    x = test.batch(range(min(args.eval, len(test))))
    out = {}
    for precision, (model, _) in arms.items():
        model.eval()
        metrics = evaluate(model, x)
        out[precision] = {"steps": state[precision]["steps"], "seconds": round(state[precision]["spent"], 1),
                          **{k: round(v, 5) for k, v in metrics.items()}}
    print(json.dumps({"benchmark": "precision_ab (equal wall time)", "preset": args.preset,
                      "threads": args.threads, "minutes_each": args.minutes, "slice_s": args.slice,
                      "test_items": len(x), "modality": modality_for(preset.model).name, **out}, indent=2))


if __name__ == "__main__":
    main()
