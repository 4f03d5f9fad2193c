"""`vqdraw encode`: image files -> one ``.vqd`` file of VQ-DRAW codes."""

from __future__ import annotations

import sys

from .common import MAX_BATCH, MAX_BEAM, MAX_STAGES, add_fit_arg, add_model_arg, output_file, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "encode",
        description="Encode image files (or every image in the folders given) with a VQ-DRAW model and "
        "write their codes, packed at ceil(n·log2 K) bits per image, to one .vqd file "
        "(format: docs/vqd-format.md). Images must have the model's size and channels unless --fit.")
    add_model_arg(p, rest="images")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders (searched recursively); "
                   "for a volume model voxel grids, a text model text files, an audio model one WAV/FLAC file")
    p.add_argument("-o", "--output", type=output_file, required=True, metavar="OUT.vqd",
                   help="the .vqd file to write")
    p.add_argument("--stages", type=positive_int(max=MAX_STAGES), default=None,
                   help="keep only the first n codes of each image (fewer bits, coarser images)")
    p.add_argument("--beam", type=positive_int(max=MAX_BEAM), default=1, help="beam width for encoding (1 = greedy)")
    add_fit_arg(p)
    p.add_argument("--batch", type=positive_int(max=MAX_BATCH), default=256, help="images encoded at a time")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (shown when there is more than one batch)")
    p.add_argument("--prior", action="store_true",
                   help="entropy-code the codes with the learned prior beside the model (`vqdraw prior`; "
                   ".vqd version 3): fewer bits when the prior predicts the codes; decode finds it by itself")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..modalities import check_inputs, modality_for
    from .common import load_model

    if not args.images:
        raise InputError("no images given: vqdraw encode MODEL IMAGE... -o OUT.vqd")
    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; -o needs a file name such as {out / 'images.vqd'}")
    model = load_model(args)
    prior = None
    if args.prior:
        from ..prior import load_prior

        prior = load_prior(args.model, model)
    check_inputs(model.config, args.images)
    print(modality_for(model.config).encode(model, args.images, out, encode_options(args, prior)))
    if prior is not None and not _entropy_coded(out):
        print(f"vqdraw encode: {out}: written at fixed length, not entropy-coded: with the prior the file "
              "would have been larger (its header costs more than the prior saves on these items)",
              file=sys.stderr)
    return 0


def encode_options(args, prior=None):
    """The one :class:`~vqdraw.compress.codec.EncodeOptions` the command hands down to the codec."""
    from ..compress.codec import EncodeOptions
    from .common import policy_of

    return EncodeOptions(stages=args.stages, policy=policy_of(args),
                         batch=args.batch, fit=args.fit, prior=prior, progress=not args.no_progress)


def _entropy_coded(path) -> bool:
    from ..compress.bitstream import read_header

    with open(path, "rb") as fh:
        return read_header(fh.read()).version == 3
