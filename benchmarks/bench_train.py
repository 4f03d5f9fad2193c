"""Training-step time of a preset: median/min/max seconds per optimizer step, achieved GFLOP/s
against a large-convolution calibration measured in the same run, and memory.

    python benchmarks/bench_train.py --preset mnist --steps 20
    python benchmarks/bench_train.py --preset mnist --steps 20 --reference   # the straightforward path
    python benchmarks/bench_train.py --preset cifar10 --steps 2 --warmup 1 --stages 20
    python benchmarks/bench_train.py --preset mnist --steps 60 --rss-at 20 40 60   # growth check

A step is exactly what `vqdraw.training.train.fit` runs (`train_step`: forward, eq. 3, backward over the
micro-batches, Adam), on fresh images each step. Defaults: the preset's batch when it has no
micro-batch (mnist: 32), else one micro-batch per step (``--batch`` = the preset's micro-batch)
so that big presets stay measurable on a CPU; ``--batch/--micro`` override. ``--stages`` shortens
the model (time per step is linear in the number of stages; the output says so when used).

FLOPs: ``flops_per_step_nominal`` = 3 x (stages x one refiner forward on the whole batch), the
work of the straightforward algorithm (forward + two backward products per layer);
``flops_per_step_executed`` = what torch.utils.flop_counter saw in one more real step (less:
images that share a canvas share the refiner's work, see ``VQDraw._run``). ``achieved_gflops`` = nominal / median time.
Memory: ``peak_rss_mb`` is ru_maxrss of this process over the warm-up and timed steps (the
calibration runs in a subprocess, the FLOP count after the reading);
``rss_mb_at_steps`` the resident size after the given steps (nothing should grow).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--model", default=None,
                   help="start from this trained model or run folder (its config; the preset gives "
                        "the training settings). Code statistics, and so the work shared between "
                        "images with equal canvases, depend on the weights")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--batch", type=int, default=None, help="images per optimizer step")
    p.add_argument("--micro", type=int, default=None, help="images per forward/backward pass")
    p.add_argument("--stages", type=int, default=None, help="override N (and segment if larger)")
    p.add_argument("--grad-checkpoint", choices=["preset", "on", "off"], default="preset")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile the per-stage network, optionally with this mode")
    p.add_argument("--rss-at", type=int, nargs="*", default=[], help="record RSS after these steps")
    p.add_argument("--reference", action="store_true",
                   help="time the straightforward computation (vqdraw.core.reference: module by module, "
                        "NCHW, a proposals tensor per stage, autograd) instead of the library's path: "
                        "the 'before' figure, measured on the same machine at the same time")
    p.add_argument("--no-flops", action="store_true",
                   help="skip the FLOP count (one more step under a dispatch mode, which holds more "
                        "memory than a plain step: leave it out for the big presets on a small machine)")
    p.add_argument("--real-data", action="store_true", help="mnist: use the embedded digits (default for mnist)")
    p.add_argument("--calibrate-only", action="store_true", help=argparse.SUPPRESS)
    C.add_common_args(p)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    device = C.setup(args)
    if args.calibrate_only:
        C.emit(C.calibration(device))
        return

    from vqdraw import VQDraw
    from vqdraw.core.config import get_preset, override
    from vqdraw.training.train import train_step

    preset = get_preset(args.preset)
    mcfg = preset.model
    if args.stages:
        mcfg = override(mcfg, stages=args.stages, segment=min(mcfg.segment, args.stages))
    batch = args.batch or (preset.train.micro_batch or preset.train.batch)
    micro = args.micro or batch
    gc = {"preset": preset.train.grad_checkpoint, "on": True, "off": False}[args.grad_checkpoint]
    tcfg = override(preset.train, batch=batch, micro_batch=micro if micro < batch else 0, grad_checkpoint=gc)

    torch.manual_seed(0)
    if args.model:
        model = VQDraw.load(args.model, map_location=device).train()
        if args.stages:
            raise SystemExit("--stages cannot shorten a loaded model")
        mcfg = model.config
    else:
        model = VQDraw(mcfg).to(device).train()
    if args.reference and (args.compile or args.precision != "fp32" or micro < batch):
        raise SystemExit("--reference times the plain float32 step on one batch only")
    if args.compile:
        model.refiner.set_speed(compile=True, compile_mode=args.compile)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    kwargs = {}
    if "precision" in inspect.signature(train_step).parameters:
        kwargs["precision"] = args.precision
    elif args.precision != "fp32":
        raise SystemExit("this vqdraw has no precision option")

    shape = mcfg.data_shape
    if args.preset == "mnist" or args.real_data:
        from vqdraw.data import load_dataset
        from vqdraw.training.train import batch_indices

        data = load_dataset("mnist-embedded" if args.preset == "mnist" else tcfg.dataset, "train")

        def images(step):
            return data.batch(batch_indices(step, batch, len(data), 0), device)
    else:
        gen = torch.Generator().manual_seed(0)

        def images(step):
            return torch.rand(batch, *shape, generator=gen).to(device)

    step_no = [0]

    def one_step():
        x = images(step_no[0])
        step_no[0] += 1
        if args.reference:
            return reference_step(x)
        return train_step(model, opt, x, tcfg, **kwargs)

    def reference_step(x):
        from vqdraw.core.reference import reference_loss

        opt.zero_grad(set_to_none=True)
        terms = reference_loss(model, x, tcfg.alpha)
        terms["loss"].backward()
        opt.step()
        return terms["loss"].item()

    rss = {}

    def on_step(i):
        if i + args.warmup in args.rss_at:
            rss[str(i + args.warmup)] = round(C.current_rss_mb(), 1)

    env_before = C.environment(device)
    times = C.time_calls(one_step, args.steps, args.warmup, device, on_step)
    s = C.summary(times)
    mem = C.memory(device)  # before the FLOP count below, which runs under a dispatch mode
    # FLOPs: one more real step under the counter, and the nominal count
    probe = copy.deepcopy(model.refiner.segments[0]).eval()
    with torch.no_grad():
        fwd = C.count_flops(lambda: probe(torch.randn(batch, *shape, device=device), 0))
    nominal = 3 * mcfg.stages * fwd
    executed = None if args.no_flops else C.count_flops(one_step)
    out = {
        "benchmark": "train_step",
        "preset": args.preset,
        "model": args.model or "fresh (seed 0)",
        "batch": batch,
        "micro_batch": micro,
        "stages": mcfg.stages,
        "stages_overridden": bool(args.stages),
        "grad_checkpoint": gc,
        "precision": args.precision,
        "compile": args.compile,
        "path": "reference (straightforward)" if args.reference else "vqdraw",
        "step": s,
        "images_per_s": batch / s["median_s"],
        "flops_per_step_nominal": nominal,
        "flops_per_step_executed": executed,
        "achieved_gflops": nominal / s["median_s"] / 1e9,
        "executed_gflops": None if executed is None else executed / s["median_s"] / 1e9,
        "vqdraw": str(Path(inspect.getfile(VQDraw)).parent),
        **mem,
        "env": env_before,
        "load_average_after": [round(v, 2) for v in __import__("os").getloadavg()],
    }
    if rss:
        out["rss_mb_at_steps"] = rss
    if args.stages:
        out["note"] = f"model shortened to {mcfg.stages} stages; step time is linear in stages"
    if not args.no_calibration:
        cal = C.run_child("bench_train.py", ["--calibrate-only", "--device", str(device)]
                          + (["--threads", str(args.threads)] if args.threads else []))
        out.update(cal)
        out["fraction_of_calibration"] = out["achieved_gflops"] / cal["calibration_gflops"]
    C.emit(out)


if __name__ == "__main__":
    main()
