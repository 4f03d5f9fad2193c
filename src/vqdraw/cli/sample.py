"""`vqdraw sample`: decode uniformly random codes (or codes drawn from the learned prior) into a grid of images."""

from __future__ import annotations

from .common import (MAX_SAMPLES, MAX_STAGES, add_model_arg, default_output, finite_float, load_model, output_file,
                     output_path, positive_int)


def register(sub) -> None:
    p = sub.add_parser("sample",
                       description="Decode uniformly random codes (or, with --prior, codes drawn from the "
                       "learned prior beside the model: `vqdraw prior`) and save them as one PNG grid. Samples "
                       "are made and written a few hundred at a time, so memory does not grow with -n.")
    add_model_arg(p)
    p.add_argument("-n", "--count", type=positive_int(max=MAX_SAMPLES), default=64, help="number of samples")
    p.add_argument("--stages", type=positive_int(max=MAX_STAGES), default=None, help="decode only this many stages (coarser)")
    p.add_argument("--seed", type=positive_int(min=0, max=2**63 - 1), default=0, help="seed for the random codes")
    p.add_argument("-o", "--output", type=output_file, default=None,
                   help="PNG to write (default: MODEL/samples-<seed>.png, MODEL/prior-samples-<seed>.png with --prior; "
                   "samples-<seed>-2.png, … when an earlier one is there)")
    p.add_argument("--prior", action="store_true", help="draw the codes from the learned prior instead of uniformly")
    p.add_argument("--temperature", type=finite_float(above=0, max=100), default=None,
                   help="with --prior: divide the prior's logits by this (below 1: more typical codes; default 1)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (shown for more than 256 samples)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError
    from ..modalities import modality_for

    if args.count < 1:
        raise InputError("--count must be at least 1")
    if args.temperature is not None and not args.prior:
        raise InputError("--temperature needs --prior (uniform codes have no temperature)")
    model = load_model(args)
    codes = prior_codes(args, model)
    modality = modality_for(model.config)
    name = modality.sample_name(args.seed)
    out = output_path(args.output, None if args.output else
                      default_output(args.model, name if codes is None else f"prior-{name}"))
    print(modality.write_samples(model, out, count=args.count, stages=args.stages, seed=args.seed, codes=codes,
                                 progress=not args.no_progress))
    return 0


def prior_codes(args, model):
    """With --prior: ``args.count`` codes drawn from the prior beside the model (seeded); else None."""
    if not args.prior:
        return None
    import torch

    from ..errors import InputError
    from ..prior import load_prior

    if args.stages is not None and args.stages > model.stages:
        raise InputError(f"this model has {model.stages} stages; --stages {args.stages} is too many")
    prior = load_prior(args.model, model)
    g = torch.Generator().manual_seed(args.seed)
    return prior.sample(args.count, args.temperature or 1.0, generator=g, stages=args.stages)
