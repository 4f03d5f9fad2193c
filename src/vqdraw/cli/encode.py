"""`vqdraw encode`: image files -> one ``.vqd`` file of VQ-DRAW codes."""

from __future__ import annotations

from .common import MAX_BATCH, MAX_BEAM, MAX_STAGES, add_fit_arg, add_model_arg, output_file, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "encode",
        description="Encode image files (or every image in the folders given) with a VQ-DRAW model and "
        "write their codes, packed at ceil(n·log2 K) bits per image, to one .vqd file "
        "(format: docs/vqd-format.md). Images must have the model's size and channels unless --fit.")
    add_model_arg(p, rest="images")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--output", type=output_file, required=True, metavar="OUT.vqd",
                   help="the .vqd file to write")
    p.add_argument("--stages", type=positive_int(max=MAX_STAGES), default=None,
                   help="keep only the first n codes of each image (fewer bits, coarser images)")
    p.add_argument("--beam", type=positive_int(max=MAX_BEAM), default=1, help="beam width for encoding (1 = greedy)")
    add_fit_arg(p)
    p.add_argument("--batch", type=positive_int(max=MAX_BATCH), default=256, help="images encoded at a time")
    p.add_argument("--prior", action="store_true",
                   help="entropy-code the codes with the learned prior beside the model (`vqdraw prior`; "
                   ".vqd version 3): fewer bits when the prior predicts the codes; decode finds it by itself")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from ..bitstream import bits_per_image, header_size
    from ..codec import compress_codes, encode_images
    from ..errors import InputError
    from ..images import expand_image_paths, load_images
    from . import _volumes
    from .common import load_model, warn_polarity

    if not args.images:
        raise InputError("no images given: vqdraw encode MODEL IMAGE... -o OUT.vqd")
    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; -o needs a file name such as {out / 'images.vqd'}")
    model = load_model(args)
    args.prior_model = _load_prior(args, model)
    _volumes.check_inputs(model, args.images)
    if args.stages is not None and args.stages > model.stages:
        raise InputError(f"this model has {model.stages} stages; --stages {args.stages} is too many")
    if _volumes.is_volume(model):
        return _encode_volumes(args, model, out)
    from . import _text

    if _text.is_text(model):  # text files -> one .vqd with the text's length
        return _text.encode(args, model, out)
    paths = expand_image_paths(args.images)
    shape = tuple(model.config.image_shape)
    if not args.fit:
        for path in paths:
            check_channels(path, shape[0])

    batches = [paths[i : i + args.batch] for i in range(0, len(paths), args.batch)]
    codes = []
    with tqdm(batches, desc="encoding", unit="batch", disable=None if len(batches) > 1 else True,
              leave=False) as bar:
        for chunk in bar:
            images = load_images(chunk, shape, fit=args.fit)
            if not codes:
                warn_polarity(images, model)
            images = images.to(model.device)
            codes.append(encode_images(model, images, stages=args.stages, beam=args.beam))
    data = _write_vqd(out, compress_codes(model, torch.cat(codes), prior=args.prior_model))

    n = args.stages or model.stages
    count = len(paths)
    bits = bits_per_image(model.options, n)
    if args.prior_model is not None:
        head = header_size(shape, "image", coded=True)
        print(f"{out}: {count} image{'s' if count != 1 else ''}, {n} stages of K={model.options}, entropy-coded "
              f"with the prior: {8 * (len(data) - head) / count:.2f} bits per image payload (fixed length: "
              f"{bits}), {head} header bytes, {len(data)} bytes in all = {len(data) / count:.2f} bytes "
              f"({8 * len(data) / count:.1f} bits) per image")
        return 0
    print(f"{out}: {count} image{'s' if count != 1 else ''}, {n} stages of K={model.options}: "
          f"{bits} bits per image payload, {header_size()} header bytes, {len(data)} bytes in all "
          f"= {len(data) / count:.2f} bytes ({8 * len(data) / count:.1f} bits) per image")
    return 0


def _load_prior(args, model):
    """The prior beside the model when --prior is given (a one-line error when there is none)."""
    if not args.prior:
        return None
    from ..prior import load_prior

    return load_prior(args.model, model)


def _encode_volumes(args, model, out) -> int:
    """The volume branch: voxel files (.npy/.npz/.binvox, folders searched) -> one .vqd file."""
    import torch

    from ..bitstream import bits_per_image, header_size
    from ..codec import compress_codes, encode_images
    from ..modality import modality_of
    from . import _volumes

    volumes = _volumes.load_volume_files(args.images, model)
    codes = [encode_images(model, volumes[i : i + args.batch], stages=args.stages, beam=args.beam)
             for i in range(0, len(volumes), args.batch)]
    data = _write_vqd(out, compress_codes(model, torch.cat(codes), prior=args.prior_model))
    n = args.stages or model.stages
    count = len(volumes)
    shape = tuple(model.config.data_shape)
    coded = args.prior_model is not None
    head = header_size(shape, modality_of(model.config), coded=coded)
    payload = (f"{8 * (len(data) - head) / max(count, 1):.2f} bits per volume payload, entropy-coded with the prior"
               if coded else f"{bits_per_image(model.options, n)} bits per volume payload")
    print(f"{out}: {count} volume{'s' if count != 1 else ''} ({'x'.join(map(str, shape[1:]))}), {n} stages of "
          f"K={model.options}: {payload}, {head} header bytes, {len(data)} bytes in all")
    return 0


def check_channels(path, channels: int) -> None:
    """Refuse an image file whose channels differ from the model's (grey vs colour) before loading it."""
    from PIL import Image, UnidentifiedImageError

    from ..errors import InputError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode == "P":  # a palette: grey if every palette entry is grey
                r, g, b = im.convert("RGB").split()
                mode = "L" if r.tobytes() == g.tobytes() == b.tobytes() else "RGB"
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image too large ({exc})") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    grey_modes = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
    has = 1 if mode in grey_modes else 3
    if has != channels:
        kind = {1: "greyscale (1 channel)", 3: "colour (3 channels)"}
        raise InputError(f"{path}: image is {kind[has]} but the model takes {kind.get(channels, f'{channels} channels')}"
                         "; pass --fit to convert it")


def _write_vqd(out, data: bytes) -> bytes:
    """Write the .vqd bytes atomically; a write error is one line. Returns the bytes."""
    from ..errors import InputError
    from ..io import atomic_write_bytes

    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise InputError(f"{out}: cannot write the .vqd file ({exc.strerror or exc})") from None
    return data
