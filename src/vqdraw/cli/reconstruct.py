"""`vqdraw reconstruct`: originals beside their reconstructions."""

from __future__ import annotations

from pathlib import Path

from ..pretrained import output_home
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
    from .. import plots
    from ..bitstream import bits_per_image
    from ..metrics import mse, psnr, psnr_from_mse

    from . import _volumes

    model = load_model(args)
    _volumes.check_inputs(model, args.images, args.dataset)
    from . import _text

    if _text.is_text(model):  # original and reconstructed lines
        return _text.reconstruct(args, model)
    images = _volumes.load_volume_inputs(args, model) if _volumes.is_volume(model) else load_inputs(args, model)
    recon = model.reconstruct(images, stages=args.stages, beam=args.beam)
    n = args.stages if args.stages is not None else model.stages
    bits = bits_per_image(model.options, n)
    out = output_path(args.output, output_home(args.model) / "reconstructions-cli.png")
    if _volumes.is_volume(model):
        plots.save_volume_pairs(images, recon, out, title=f"{plots.describe_model(model.config, _dataset(args))}; "
                                f"{n} stages, {bits} bits")
        print(f"{out}: {len(images)} volumes, {bits} bits each, {_volumes.bernoulli_report(images, recon)}")
        return 0
    plots.save_pairs(images, recon, out, scale=plots._scale(model),
                     title=f"{plots.describe_model(model.config, _dataset(args))}; {n} stages, {bits} bits")
    errors = mse(images, recon)
    print(f"{out}: {len(images)} images, {bits} bits each, MSE {errors.mean().item():.5f}, "
          f"PSNR {psnr(images, recon).mean().item():.2f} dB (mean of per-image PSNR; "
          f"{psnr_from_mse(errors.mean().item()):.2f} dB of the mean MSE)")
    return 0


def _dataset(args) -> str | None:
    """The dataset named in the title: --dataset, the run's, or none when files were given."""
    from ..baselines import run_dataset

    if args.images:
        return None
    return args.dataset or run_dataset(args.model)
