"""Shared CLI plumbing: loading a model from a run folder, dataclass fields as flags."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path


def add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, metavar="MODEL",
                   help="a training run folder (its newest checkpoint is used) or a saved model folder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")


def load_model(args):
    from ..model import VQDraw
    from ..train import pick_device

    device = pick_device(args.device)
    model = VQDraw.load(args.model, map_location=device)
    model.eval()
    return model


def add_dataclass_flags(p: argparse.ArgumentParser, cls, skip: set[str] = frozenset(), title: str = "") -> None:
    """One `--field-name` flag per dataclass field, typed from the annotation, default None
    (None = keep the preset's value). Help text is the field's docstring when available."""
    group = p.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        typ = hints[f.name]
        doc = docs.get(f.name, "")
        if typ is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=doc)
        elif typing.get_origin(typ) is tuple:
            inner = typing.get_args(typ)[0]
            group.add_argument(flag, dest=f.name, type=inner, nargs="+", default=None, help=doc)
        else:
            base = next((t for t in typing.get_args(typ) if t is not type(None)), typ) if typing.get_args(typ) else typ
            group.add_argument(flag, dest=f.name, type=base, default=None, help=doc)


def dataclass_overrides(args, cls, skip: set[str] = frozenset()) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        val = getattr(args, f.name, None)
        if val is not None:
            out[f.name] = tuple(val) if isinstance(val, list) else val
    return out


def _field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal right after a field) via the class source."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                and isinstance(getattr(b, "value", None), ast.Constant) and isinstance(b.value.value, str):
            docs[a.target.id] = b.value.value.strip().replace("%", "%%")
    return docs


def output_path(path: str | None, default: Path) -> Path:
    out = Path(path) if path else default
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def add_input_args(p: argparse.ArgumentParser, count: int) -> None:
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files or folders (default: test images of the model's dataset)")
    p.add_argument("--dataset", default=None, help="take test images from this dataset instead")
    p.add_argument("--data-dir", default=None, help="where datasets live")
    p.add_argument("--count", type=int, default=count,
                   help="how many images to use (test images: a class-balanced, seeded subset)")
    add_fit_arg(p)


def add_fit_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fit", "--resize", dest="fit", action="store_true",
                   help="fit images to the model: centre-crop to its aspect ratio, resize (bicubic), convert "
                   "the channels (transparency composited onto white); --resize is the old name")


def warn_polarity(images, model) -> None:
    """Print to stderr when the images look far darker or lighter than the model's training data."""
    import sys

    from ..images import polarity_warning

    message = polarity_warning(images, model.config.mean)
    if message:
        print(f"warning: {message}", file=sys.stderr)


def load_inputs(args, model):
    """(B, C, H, W) images: the files given, else --count test images of the dataset (--dataset,
    or the one the run was trained on), class-balanced (seeded random without labels)."""
    from ..baselines import run_dataset
    from ..data import balanced_subset, load_dataset
    from ..errors import InputError
    from ..images import expand_image_paths, load_images

    if args.images:
        paths = expand_image_paths(args.images)[: args.count] if args.count else expand_image_paths(args.images)
        images = load_images(paths, model.config.image_shape, fit=args.fit)
        warn_polarity(images, model)
        return images.to(model.device)
    name = args.dataset or run_dataset(args.model)
    if name is None:
        raise InputError("no images given and the model folder does not say its dataset; pass --dataset")
    test = load_dataset(name, "test", args.data_dir)
    if test.image_shape != tuple(model.config.image_shape):
        raise InputError(f"dataset {name} has images of shape {test.image_shape}, the model takes "
                         f"{tuple(model.config.image_shape)}")
    return test.batch(balanced_subset(test.labels, args.count, size=len(test)), model.device)
