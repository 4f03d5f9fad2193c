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
    from ..errors import InputError
    from ..modalities import modality_for

    if args.count < 1:
        raise InputError("--count must be at least 1")
    model = load_model(args)
    modality = modality_for(model.config)
    out = output_path(args.output, output_home(args.model) / modality.sample_name(args.seed))
    print(modality.write_samples(model, out, count=args.count, stages=args.stages, seed=args.seed))
    return 0
