"""`vqdraw decode`: a ``.vqd`` file -> one PNG per image in a folder."""

from __future__ import annotations

from .common import MAX_BATCH, MAX_STAGES, add_model_arg, output_dir, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "decode",
        description="Decode the codes in a .vqd file with the model that made them and write one PNG per "
        "image (000000.png, 000001.png, …) into OUT_DIR. The images are written to a temporary folder "
        "first and moved into OUT_DIR only when all of them are done, so an error leaves OUT_DIR as it "
        "was. Files of the same names already in OUT_DIR are replaced.")
    add_model_arg(p, rest="input")
    p.add_argument("input", nargs="?", metavar="IN.vqd", help="the .vqd file to decode")
    p.add_argument("-o", "--output", type=output_dir, required=True, metavar="OUT_DIR",
                   help="folder for the PNG images")
    p.add_argument("--stages", type=positive_int(max=MAX_STAGES), default=None,
                   help="decode only the first n of the stored stages (a coarser image)")
    p.add_argument("--batch", type=positive_int(max=MAX_BATCH), default=256, help="images decoded at a time")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..bitstream import check_vqd
    from ..codec import decompress, read_input_bytes
    from ..errors import InputError
    from . import _text
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
    if _text.is_text(model):  # OUT.txt, or OUT_DIR/decoded.txt
        return _text.decode(args, model, data, out)
    images, vqd = decompress(model, data, stages=args.stages, batch_size=args.batch)
    width = max(6, len(str(max(vqd.count - 1, 0))))
    n = args.stages or vqd.stages
    if vqd.modality == "volume":  # one .npy occupancy grid per volume (probability > 0.5)
        from ._volumes import save_grids_npy

        names = [f"{i:0{width}d}.npy" for i in range(vqd.count)]
        write_pngs_atomically(images, names, out, save=save_grids_npy)
        print(f"{out}: {vqd.count} .npy grid{'s' if vqd.count != 1 else ''} "
              f"({'x'.join(map(str, vqd.image_shape[1:]))}, bool) decoded from {args.input} "
              f"({n} of {vqd.stages} stages, K={vqd.K})")
        return 0
    names = [f"{i:0{width}d}.png" for i in range(vqd.count)]
    write_pngs_atomically(images, names, out)
    c, h, w = vqd.image_shape
    print(f"{out}: {vqd.count} PNG image{'s' if vqd.count != 1 else ''} ({w}x{h}, {c} channel"
          f"{'s' if c != 1 else ''}) decoded from {args.input} ({n} of {vqd.stages} stages, K={vqd.K})")
    return 0


def _name_the_checkpoint(path, model, data: bytes) -> None:
    """A file made by another checkpoint of the same run (say, before a --resume): say which
    one, so the user can decode with it."""
    from pathlib import Path

    from .. import runs
    from ..bitstream import read_header
    from ..errors import InputError
    from ..model import VQDraw

    wanted = read_header(data).fingerprint
    if wanted == model.fingerprint() or not runs.checkpoints(path):
        return
    ckpt = runs.find_checkpoint(path, wanted, lambda folder: VQDraw.load(folder).fingerprint())
    if ckpt is not None:
        latest = runs.resolve_model_dir(path)
        raise InputError(f"this .vqd file was made by {ckpt} of this run, not by its newest checkpoint "
                         f"{Path(latest).name}; decode it with: vqdraw decode {ckpt} ...")


def write_pngs_atomically(images, names: list[str], out, save=None) -> None:
    """Write images[i] as ``out/names[i]`` so that on any error ``out`` is left as it was.

    ``save(item, path)`` writes one file (default: :func:`vqdraw.images.save_image`, a PNG).

    Everything is written into a temporary folder beside ``out`` (same file system), which then
    becomes ``out`` by one rename, or, when ``out`` already exists, whose files are renamed into
    it (undone if a rename fails).
    """
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from ..errors import InputError
    from ..images import save_image

    save = save or save_image
    out = Path(out)
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(parent, out.name)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp"))
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    try:
        for image, name in zip(images, names):
            save(image, tmp / name)
        if not out.exists():
            os.rename(tmp, out)
            return
        moved: list[tuple[Path, Path | None]] = []  # (destination, backup of what it replaced)
        try:
            for name in names:
                dest = out / name
                backup = None
                if dest.exists():
                    backup = tmp / (name + ".old")
                    os.replace(dest, backup)
                moved.append((dest, backup))
                os.replace(tmp / name, dest)
        except BaseException:
            for dest, backup in reversed(moved):
                if backup is not None and backup.exists():
                    os.replace(backup, dest)
                elif backup is None:
                    dest.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise InputError(f"{out}: cannot write the images ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_dead_temporaries(parent, name: str) -> None:
    """Remove ``.NAME.<pid>.*.tmp`` folders left by a decode that was killed (its pid is gone)."""
    import os
    import re
    import shutil

    pattern = re.compile(re.escape(f".{name}.") + r"(\d+)\.[^/]*\.tmp")
    for p in parent.iterdir():
        m = pattern.fullmatch(p.name)
        if not m or not p.is_dir() or p.is_symlink():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (OSError, OverflowError):
            pass
