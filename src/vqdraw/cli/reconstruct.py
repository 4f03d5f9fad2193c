"""`vqdraw reconstruct`: originals beside their reconstructions."""

from __future__ import annotations

from pathlib import Path

from .common import (MAX_BEAM, MAX_STAGES, add_input_args, add_model_arg, load_inputs, load_model,
                     output_file, output_path, positive_int)


def register(sub) -> None:
    p = sub.add_parser("reconstruct",
                       description="Encode images and decode the codes; write a PNG with each original "
                       "beside its reconstruction and print the reconstruction error.")
    add_model_arg(p, rest="images")
    add_input_args(p, count=50)
    p.add_argument("--stages", type=positive_int(max=MAX_STAGES), default=None, help="use only the first n stages of each code")
    p.add_argument("--beam", type=positive_int(max=MAX_BEAM), default=1, help="beam width for encoding (1 = greedy, the paper)")
    p.add_argument("-o", "--output", type=output_file, default=None, help="PNG to write (default: MODEL/reconstructions-cli.png)")
    p.set_defaults(func=run)


def run(args) -> int:
    import math

    import torch

    from .. import plots

    model = load_model(args)
    images = load_inputs(args, model)
    recon = model.reconstruct(images, stages=args.stages, beam=args.beam)
    pairs = torch.stack([images.cpu(), recon.cpu()], 1).flatten(0, 1)
    out = output_path(args.output, Path(args.model) / "reconstructions-cli.png")
    plots.save_png(plots.grid(pairs, ncol=min(20, len(pairs)), scale=plots._scale(model)), out)
    mse = (recon - images).pow(2).mean().item()
    n = args.stages if args.stages is not None else model.stages
    bits = n * math.log2(model.options)
    print(f"{out}: {len(images)} images, {bits:g} bits each, MSE {mse:.5f}, "
          f"PSNR {10 * math.log10(1 / max(mse, 1e-12)):.2f} dB")
    return 0
