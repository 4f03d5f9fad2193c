"""`vqdraw sample`: decode uniformly random codes into a grid of images."""

from __future__ import annotations

from pathlib import Path

from ..pretrained import output_home
from .common import (MAX_SAMPLES, MAX_STAGES, add_model_arg, load_model, output_file, output_path,
                     positive_int)


def register(sub) -> None:
    p = sub.add_parser("sample",
                       description="Decode uniformly random codes and save them as one PNG grid.")
    add_model_arg(p)
    p.add_argument("-n", "--count", type=positive_int(max=MAX_SAMPLES), default=64, help="number of samples")
    p.add_argument("--stages", type=positive_int(max=MAX_STAGES), default=None, help="decode only this many stages (coarser)")
    p.add_argument("--seed", type=positive_int(min=0, max=2**63 - 1), default=0, help="seed for the random codes")
    p.add_argument("-o", "--output", type=output_file, default=None, help="PNG to write (default: MODEL/samples-<seed>.png)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import plots
    from ..errors import InputError

    if args.count < 1:
        raise InputError("--count must be at least 1")
    model = load_model(args)
    from . import _text

    if _text.is_text(model):  # samples.txt
        return _text.sample(args, model)
    out = output_path(args.output, output_home(args.model) / f"samples-{args.seed}.png")
    if model.config.rank == 3:  # volumes: three depth-shaded views each
        plots.save_volume_samples(model, out, n=args.count, seed=args.seed, stages=args.stages)
        print(out)
        return 0
    g = torch.Generator().manual_seed(args.seed)
    images = model.sample(args.count, stages=args.stages, generator=g)
    plots.save_png(plots.grid(images, scale=plots._scale(model)), out)
    print(out)
    return 0
