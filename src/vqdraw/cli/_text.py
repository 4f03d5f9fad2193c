"""The CLI's text branches (text models: see :mod:`vqdraw.text`), used by sample, reconstruct,
encode and decode. Text files in, text files out; one line and exit 2 for anything else."""

from __future__ import annotations

from pathlib import Path

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst", ".raw")


def is_text(model) -> bool:
    from ..modality import modality_of

    return modality_of(model.config) == "text"


def read_texts(paths) -> str:
    """The text of the files/folders given (UTF-8; several are joined by newlines)."""
    from ..data.text import read_text_path
    from ..errors import InputError

    if not paths:
        raise InputError("no text files given")
    return "\n".join(read_text_path(p) for p in paths)


def sample(args, model, codes=None) -> int:
    """``vqdraw sample`` for a text model: samples.txt (one sequence a line) and a few printed;
    ``codes``: decode these (drawn from a learned prior) instead of uniformly random ones."""
    import torch

    from ..io import atomic_write_bytes
    from ..text import format_lines, sequences_to_text

    name = "samples.txt" if codes is None else "prior-samples.txt"
    out = Path(args.output) if args.output else Path(args.model) / name
    g = torch.Generator().manual_seed(args.seed)
    drawn = model.sample(args.count, stages=args.stages, generator=g) if codes is None else model.decode(codes)
    lines = sequences_to_text(drawn)
    atomic_write_bytes(out, format_lines(lines).encode())
    print(format_lines(lines[:5]), end="")
    print(out)
    return 0


def reconstruct(args, model) -> int:
    """``vqdraw reconstruct`` for a text model: original and reconstructed lines, printed and written."""
    from ..io import atomic_write_bytes
    from ..text import format_lines, reconstruct_lines, sequences_to_text

    data = _inputs(args, model)
    if args.count:
        data = data[: args.count]
    recon = reconstruct_lines(model, data, stages=args.stages, beam=args.beam)
    orig = sequences_to_text(data)
    same = sum(a == b for o, r in zip(orig, recon) for a, b in zip(o, r))
    total = sum(len(o) for o in orig)
    lines = []
    for o, r in zip(orig, recon):
        lines += ["original:      " + format_lines([o]).rstrip("\n"), "reconstructed: " + format_lines([r]).rstrip("\n"), ""]
    out = Path(args.output) if args.output else Path(args.model) / "reconstructions-cli.txt"
    atomic_write_bytes(out, "\n".join(lines).encode())
    print("\n".join(lines[:9]))
    n = args.stages or model.stages
    print(f"{out}: {len(orig)} sequences of {model.config.data_shape[-1]} characters, {n} stages, "
          f"character accuracy {same / max(total, 1):.4f}")
    return 0


def stages(args, model) -> int:
    """``vqdraw stages`` for a text model: one sequence decoded stage by stage, lines and a picture."""
    from ..text import default_stage_points, save_stages_text
    from .common import output_path

    data = _inputs(args, model)
    png = output_path(args.output, Path(args.model) / "stages-cli.png")
    points = [s for s in default_stage_points(model.stages) if s <= args.max_stages] or [1]
    print(save_stages_text(model, data, png.with_suffix(".txt"), png, stages=points,
                           title=f"{args.model}: K={model.options}, N={model.stages}"), end="")
    print(png)
    return 0


def _inputs(args, model):
    """The text files given as data (B, 1, L), else the first --count test sequences of the
    dataset (--dataset, or the run's)."""
    from ..baselines import run_dataset
    from ..data import load_dataset
    from ..errors import InputError
    from ..text import text_data_for

    if args.images:
        return text_data_for(model, read_texts(args.images))
    name = args.dataset or run_dataset(args.model)
    if name is None:
        raise InputError("no text files given and the model folder does not say its dataset; pass --dataset")
    test = load_dataset(name, "test", args.data_dir, size=tuple(model.config.data_shape[1:]))
    return test.batch(range(min(args.count or 8, len(test))), model.device)


def encode(args, model, out) -> int:
    """``vqdraw encode`` for a text model: the text files (joined) -> one .vqd file."""
    from ..io import atomic_write_bytes
    from ..text import compress_text

    text = read_texts(args.images)
    data = compress_text(model, text, stages=args.stages, beam=args.beam, batch=args.batch,
                         prior=getattr(args, "prior_model", None))
    atomic_write_bytes(out, data)
    length = model.config.data_shape[-1]
    chunks = -(-len(text) // length)
    print(f"{out}: {len(text)} characters in {chunks} chunk{'s' if chunks != 1 else ''} of {length}, "
          f"{args.stages or model.stages} stages of K={model.options}, {len(data)} bytes "
          f"= {8 * len(data) / max(len(text), 1):.3f} bits per character (lossy)")
    return 0


def decode(args, model, data: bytes, out: Path, prior=None) -> int:
    """``vqdraw decode`` for a text model: OUT is a .txt file, or a folder that gets decoded.txt."""
    from ..io import atomic_write_bytes
    from ..text import decompress_text

    text = decompress_text(model, data, stages=args.stages, prior=prior)
    target = out if out.suffix.lower() in TEXT_SUFFIXES else out / "decoded.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, text.encode("utf-8"))
    print(f"{target}: {len(text)} characters decoded from {args.input}")
    return 0
