"""`vqdraw decode`: a ``.vqd`` file -> one PNG per image in a folder."""

from __future__ import annotations

from ..core.config import MAX_SAMPLE_RATE
from .common import MAX_BATCH, MAX_STAGES, add_model_arg, output_dir, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "decode",
        description="Decode the codes in a .vqd file with the model that made them and write one PNG per "
        "image (000000.png, 000001.png, …) into OUT_DIR. The images are decoded --batch at a time and "
        "written to a temporary folder beside OUT_DIR as they come, then moved into OUT_DIR only when all "
        "of them are done, so an error leaves OUT_DIR as it was. Files of the same names already in "
        "OUT_DIR are replaced.")
    add_model_arg(p, rest="input")
    p.add_argument("input", nargs="?", metavar="IN.vqd", help="the .vqd file to decode")
    p.add_argument("-o", "--output", type=output_dir, required=True, metavar="OUT_DIR",
                   help="folder for the PNG images")
    p.add_argument("--stages", type=positive_int(max=MAX_STAGES), default=None,
                   help="decode only the first n of the stored stages (a coarser image)")
    p.add_argument("--batch", type=positive_int(max=MAX_BATCH), default=256,
                   help="images decoded at a time: each batch is written before the next is decoded, so "
                   "memory depends on this, not on the number of images")
    p.add_argument("--rate", type=positive_int(max=MAX_SAMPLE_RATE), default=None, metavar="HZ",
                   help="audio and speech models: write the WAV at this sample rate, resampled from the "
                   "model's (default: the model's rate)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (shown when there is more than one batch)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..compress.bitstream import check_vqd
    from ..compress.codec import DecodeOptions, read_input_bytes
    from ..errors import InputError
    from ..modalities import modality_for
    from .common import load_model

    if args.input is None:
        raise InputError("no .vqd file given: vqdraw decode MODEL IN.vqd -o OUT_DIR")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    data = read_input_bytes(args.input)
    check_vqd(data)  # a broken file is refused before the model is loaded (header, length, CRC; no unpacking)
    model = load_model(args)
    _name_the_checkpoint(args.model, model, data)
    options = DecodeOptions(stages=args.stages, batch=args.batch, prior=_prior_for(args.model, model, data),
                            progress=not args.no_progress, rate=args.rate)
    modality = modality_for(model.config)
    if args.rate is not None and not modality.decodes_at_rate:
        raise InputError(f"--rate is for audio and speech models; this model makes {modality.name} data")
    print(modality.decode(model, data, out, options, source=args.input))
    return 0


def _prior_for(path, model, data: bytes):
    """An entropy-coded file (version 3): the prior beside the model (None for other files; the
    reader then refuses a coded file without a prior, or with another one, in one line)."""
    from ..compress.bitstream import read_header
    from ..prior import find_prior

    if read_header(data).version != 3:
        return None
    return find_prior(path, model)


def _name_the_checkpoint(path, model, data: bytes) -> None:
    """A file made by another checkpoint of the same run (say, before a --resume): say which
    one, so the user can decode with it."""
    from pathlib import Path

    from .. import runs
    from ..compress.bitstream import read_header
    from ..errors import InputError
    from ..core.model import VQDraw

    wanted = read_header(data).fingerprint
    if wanted == model.fingerprint() or not runs.checkpoints(path):
        return
    ckpt = runs.find_checkpoint(path, wanted, lambda folder: VQDraw.load(folder).fingerprint())
    if ckpt is not None:
        latest = runs.resolve_model_dir(path)
        raise InputError(f"this .vqd file was made by {ckpt} of this run, not by its newest checkpoint "
                         f"{Path(latest).name}; decode it with: vqdraw decode {ckpt} ...")
