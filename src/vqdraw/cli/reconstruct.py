"""`vqdraw reconstruct`: originals beside their reconstructions."""

from __future__ import annotations

from .common import (MAX_BEAM, MAX_STAGES, add_input_args, add_model_arg, default_output, load_inputs, load_model,
                     model_title_name, output_file, output_path, positive_int)


def register(sub) -> None:
    p = sub.add_parser("reconstruct",
                       description="Encode images and decode the codes; write a PNG with each original "
                       "beside its reconstruction and print the reconstruction error.")
    add_model_arg(p, rest="images")
    add_input_args(p, count=50)
    p.add_argument("--stages", type=positive_int(max=MAX_STAGES), default=None, help="use only the first n stages of each code")
    p.add_argument("--beam", type=positive_int(max=MAX_BEAM), default=1, help="beam width for encoding (1 = greedy, the paper)")
    p.add_argument("-o", "--output", type=output_file, default=None, help="PNG to write (default: MODEL/reconstructions-cli.png, or "
                   "reconstructions-cli-2.png, … when an earlier one is there)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (a long job shows one on stderr)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluate import plots
    from ..modalities import modality_for

    model = load_model(args)
    modality = modality_for(model.config)
    data = load_inputs(args, model)
    recon = _reconstruct(model, data, args, modality.noun)
    n = args.stages if args.stages is not None else model.stages
    out = output_path(args.output, None if args.output else
                      default_output(args.model, f"reconstructions-cli{modality.pair_suffix}"))
    print(modality.write_pairs(model, data, recon, out, stages=n,
                               title=plots.describe_model(model.config, _dataset(args), model_title_name(args.model))))
    return 0


def _dataset(args) -> str | None:
    """The dataset named in the title: --dataset, the run's, or none when files were given."""
    from ..baselines import run_dataset

    if args.images:
        return None
    return args.dataset or run_dataset(args.model)


def _reconstruct(model, data, args, unit: str):
    """``model.reconstruct`` a chunk at a time (items are encoded independently, so the result is
    the same), with progress: a wide beam costs seconds per item."""
    import torch

    from ..modalities.base import progress_bar
    from .common import policy_of

    policy = policy_of(args)
    chunk = max(1, 256 // args.beam)
    bar = progress_bar(len(data), chunk=chunk, desc="reconstruct", unit=unit, enabled=not args.no_progress)
    parts = []
    try:
        for i in range(0, len(data), chunk):
            parts.append(model.reconstruct(data[i: i + chunk], stages=args.stages, policy=policy))
            bar.update(len(parts[-1]))
    finally:
        bar.close()
    return torch.cat(parts) if parts else model.reconstruct(data, stages=args.stages, policy=policy)
