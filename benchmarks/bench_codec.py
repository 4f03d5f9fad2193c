"""Encoding and decoding throughput (images/s) at batch 256, and beam search when available.

    python benchmarks/bench_codec.py                        # mnist preset, fresh weights
    python benchmarks/bench_codec.py --model runs/mnist     # a trained model (run folder)
    python benchmarks/bench_codec.py --beam 1 4 --reps 5
    python benchmarks/bench_codec.py --model runs/mnist --reference   # the straightforward path

Greedy encoding is `model.encode(x)` (Algorithm 1), decoding `model.decode(codes)`
(Algorithm 2); each timed call handles one batch (default 256 test digits for mnist, random
images otherwise). Beam widths other than 1 are timed only if `encode` accepts ``beam``.
``achieved_gflops`` counts the nominal work (stages x one refiner forward per image) per
second; ``executed_gflops`` what torch.utils.flop_counter saw. Peak RSS of this process (the
calibration convolution runs in a subprocess).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--model", default=None, help="a trained model or run folder (default: fresh preset "
                   "weights; code statistics, and so the work shared between images, depend on them)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=7, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--stages", type=int, default=None, help="override N for a fresh preset model")
    p.add_argument("--beam", type=int, nargs="*", default=[], help="also time these beam widths")
    p.add_argument("--reference", action="store_true",
                   help="time the straightforward computation (vqdraw.core.reference) instead: the 'before' figure")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--compile", action="store_true")
    C.add_common_args(p)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    device = C.setup(args)
    from vqdraw import VQDraw
    from vqdraw.core.config import override

    if args.model:
        model = VQDraw.load(args.model, map_location=device)
    else:
        torch.manual_seed(0)
        model = VQDraw.from_preset(args.preset)
        if args.stages:
            model = VQDraw(override(model.config, stages=args.stages,
                                    segment=min(model.config.segment, args.stages)))
        model = model.to(device)
    model.eval()
    if args.compile:
        model.refiner.set_speed(compile=True)
    shape = model.config.data_shape
    if shape == (1, 28, 28):
        from vqdraw.data import load_dataset

        test = load_dataset("mnist-embedded", "test")
        x = test.batch(range(min(args.batch, len(test))), device)
        if len(x) < args.batch:
            x = x.repeat((args.batch + len(x) - 1) // len(x), 1, 1, 1)[: args.batch]
    else:
        x = torch.rand(args.batch, *shape, generator=torch.Generator().manual_seed(0)).to(device)

    if args.precision == "bf16":
        from vqdraw.training.train import autocast

        ctx = autocast("bf16", device)
    else:
        import contextlib

        ctx = contextlib.nullcontext()

    encode, decode = model.encode, model.decode
    if args.reference:
        if args.precision != "fp32" or args.compile or any(b != 1 for b in args.beam):
            raise SystemExit("--reference times plain float32 greedy encoding and decoding only")
        from vqdraw.core.reference import reference_run

        def encode(images):
            with torch.inference_mode():
                return reference_run(model, model.target(images))[0]

        def decode(codes):
            with torch.inference_mode():
                return model.to_data(reference_run(model, None, codes)[1])

    with ctx:
        codes = encode(x)
        enc_flops = C.count_flops(lambda: encode(x))
        probe = model.refiner.segments[0]
        with torch.no_grad():
            fwd = C.count_flops(lambda: probe(torch.randn(args.batch, *shape, device=device), 0))
        nominal = model.stages * fwd
        env = C.environment(device)
        enc = C.summary(C.time_calls(lambda: encode(x), args.reps, args.warmup, device))
        dec = C.summary(C.time_calls(lambda: decode(codes), args.reps, args.warmup, device))
        out = {
            "benchmark": "codec",
            "preset": args.preset if not args.model else str(args.model),
            "batch": args.batch,
            "stages": model.stages,
            "options": model.options,
            "precision": args.precision,
            "compile": args.compile,
            "path": "reference (straightforward)" if args.reference else "vqdraw",
            "encode": {**enc, "images_per_s": args.batch / enc["median_s"],
                       "achieved_gflops": nominal / enc["median_s"] / 1e9,
                       "executed_gflops": enc_flops / enc["median_s"] / 1e9},
            "decode": {**dec, "images_per_s": args.batch / dec["median_s"]},
            "flops_per_batch_nominal": nominal,
            "flops_per_batch_executed": enc_flops,
            "vqdraw": str(Path(inspect.getfile(VQDraw)).parent),
            "env": env,
        }
        beams = [b for b in args.beam if b != 1]
        if beams:
            if "beam" not in inspect.signature(model.encode).parameters:
                out["beam"] = "encode() takes no beam argument in this version"
            else:
                out["beam"] = {}
                for b in beams:
                    t = C.summary(C.time_calls(lambda b=b: model.encode(x, beam=b), max(1, args.reps // 2), 1, device))
                    out["beam"][str(b)] = {**t, "images_per_s": args.batch / t["median_s"]}
    out.update(C.memory(device))
    out["load_average_after"] = [round(v, 2) for v in __import__("os").getloadavg()]
    if not args.no_calibration:
        cal = C.run_child("bench_train.py", ["--calibrate-only", "--device", str(device)]
                          + (["--threads", str(args.threads)] if args.threads else []))
        out.update(cal)
        out["encode"]["fraction_of_calibration"] = out["encode"]["achieved_gflops"] / cal["calibration_gflops"]
    C.emit(out)


if __name__ == "__main__":
    main()
