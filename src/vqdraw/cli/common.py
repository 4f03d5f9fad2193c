"""Shared CLI plumbing: the one boundary for user numbers, paths and devices (argparse types),
the MODEL argument, loading a model, dataclass fields as flags.

Every verb takes its numbers, paths and devices through the argparse types below, so a bad value
ends in one line and exit code 2 before anything is loaded or allocated:

    positive_int(max=...)   whole numbers in [min, max] ("1e12", "-1", "0" refused)
    finite_float(min=...)   finite floats (nan/inf refused), optionally bounded
    output_file             a file to write: not an existing folder
    output_dir              a folder to write into: not an existing file
    device                  cpu, cuda, cuda:1, mps … that exists in this torch build and machine
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from pathlib import Path

from ..core.config import MAX_BATCH, MAX_BEAM, MAX_CODE, MAX_COUNT, MAX_STEPS, MAX_WIDTH  # noqa: F401 (the verbs import them here)
from ..core.fields import Range, range_of

# Upper bounds of the counts users pass: the config fields' own bounds (vqdraw.core.config), and two
# that no config field holds. Sanity bounds (a typo, not a plan), well above any real use; what a
# model or a dataset allows is checked later against the model or dataset.
MAX_SAMPLES = 100_000       # images drawn at once by sample / eval-samples
MAX_OPTIONS = MAX_STAGES = MAX_CODE  # K, N: the .vqd header stores them in 16 bits
MAX_SIZE = MAX_WIDTH        # widths: channels, latent dimensions, kernel sizes


def positive_int(max: int | None = None, min: int = 1):  # noqa: A002 - reads like the CLI docs
    """An argparse type: a whole number in [min, max] (min defaults to 1)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < min:
            raise argparse.ArgumentTypeError(f"must be at least {min}, got {value}")
        if max is not None and value > max:
            raise argparse.ArgumentTypeError(f"must be at most {max:,}, got {value:,}")
        return value

    parse.__name__ = "whole number"
    return parse


def finite_float(min: float | None = None, max: float | None = None, *,  # noqa: A002
                 above: float | None = None, below: float | None = None):
    """An argparse type: a finite float (no nan/inf), >= min, <= max, > above, < below where given."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if min is not None and value < min:
            raise argparse.ArgumentTypeError(f"must be at least {min:g}, got {value:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be greater than {above:g}, got {value:g}")
        if max is not None and value > max:
            raise argparse.ArgumentTypeError(f"must be at most {max:g}, got {value:g}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be less than {below:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def one_of(*names: str):
    """An argparse type: one of `names`."""
    def parse(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(names)}, got {text!r}")
        return text

    parse.__name__ = "name"
    return parse


def ranged_type(base: type, rng: Range | None):
    """The argparse type of a config field: its annotation's type bounded by its declared
    :class:`~vqdraw.core.fields.Range`, so the flag refuses exactly what the config refuses."""
    if rng is None:
        return base
    if rng.choices:
        return one_of(*rng.choices)
    if base is int:
        low = rng.low if rng.low is not None else -(2**63)
        if rng.above is not None:
            low = max(low, int(rng.above) + 1)
        parse = positive_int(min=int(low), max=None if rng.high is None else int(rng.high))
        if not rng.odd:
            return parse

        def odd(text: str) -> int:
            value = parse(text)
            if value % 2 == 0:
                raise argparse.ArgumentTypeError(f"must be odd, got {value}")
            return value

        odd.__name__ = parse.__name__
        return odd
    if base is float:
        return finite_float(min=rng.low, max=rng.high, above=rng.above, below=rng.below)
    return base


class OutputFile(str):
    """A path given as a file to write (what :func:`output_file` returns): the CLI's main checks
    every one with :func:`check_output` before the verb runs."""


class OutputDir(str):
    """A path given as a folder to write into (what :func:`output_dir` returns)."""


def output_file(text: str) -> str:
    """An argparse type: a file to (over)write; an existing folder is refused."""
    try:
        return _output_file(text)
    except OSError as exc:  # a name too long, a permission
        raise argparse.ArgumentTypeError(f"{text[:120]}: {exc.strerror or exc}") from None


def _output_file(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("empty file name")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name inside it, "
                                         f"such as {path / 'out'}{path.suffix or ''}")
    if path.parent.exists() and not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {path.parent} is a file, not a folder")
    return OutputFile(text)


def output_dir(text: str) -> str:
    """An argparse type: a folder to write into (created if missing); an existing file is refused."""
    try:
        return _output_dir(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text[:120]}: {exc.strerror or exc}") from None


def _output_dir(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("empty folder name")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    return OutputDir(text)


def device(text: str) -> str:
    """An argparse type: a torch device that exists here (imports torch, only when given)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return text
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise argparse.ArgumentTypeError(f"{text}: {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: only {torch.cuda.device_count()} CUDA device(s) here")
        return text
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise argparse.ArgumentTypeError(f"{text}: MPS is not available here; use --device cpu")
        return text
    backend = getattr(torch, dev.type, None)
    if backend is not None and hasattr(backend, "is_available") and backend.is_available():
        return text
    raise argparse.ArgumentTypeError(f"{text}: device type {dev.type!r} is not available here; use --device cpu")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where there is a default to show (not None, not a switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


DEVICE_HELP = "cpu, cuda, cuda:1 … (default: cuda if available)"
MODEL_HELP = "a training run folder (its newest checkpoint is used), a saved model folder, or pretrained:mnist"


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device, default=None, help=DEVICE_HELP)


def add_model_arg(p: argparse.ArgumentParser, *, rest: str | None = None, help: str = MODEL_HELP,  # noqa: A002
                  device: bool = True) -> None:
    """MODEL, the same way in every verb: the first positional argument, or -m/--model MODEL.

    ``rest`` names the verb's other positional argument (images, input) when it has one: with
    -m given, what argparse put in the MODEL slot belongs to it (see :func:`resolve_model`).
    """
    p.add_argument("model_pos", nargs="?", metavar="MODEL", default=None,
                   help=help + " (or give it as -m MODEL)")
    p.add_argument("-m", "--model", dest="model_opt", metavar="MODEL", default=None,
                   help="the same as the positional MODEL")
    p.set_defaults(model_rest=rest, model=None)
    if device:
        add_device_arg(p)


def policy_of(args):
    """The stage loop's policy for a verb's ``--beam W``: ``Beam(W)`` above 1, else ``Greedy()``."""
    from ..core.stageloop import Beam, Greedy

    width = getattr(args, "beam", 1)
    return Beam(width) if width > 1 else Greedy()


def resolve_model(args) -> None:
    """Set ``args.model`` from the positional MODEL or -m/--model (called by the CLI's main).

    Both given: for a verb without other positionals they must agree; for a verb that takes images
    or a file, the positional is the first of those unless it names the same model (or, differing,
    is itself a model folder, which is refused as two models).
    """
    from ..errors import InputError

    pos, opt, rest = args.model_pos, args.model_opt, args.model_rest
    if opt is not None and pos is not None and pos != opt:
        if rest is None or _is_model_folder(pos):
            raise InputError(f"two different models given: {pos} and --model {opt}")
        value = getattr(args, rest)
        if isinstance(value, list):
            setattr(args, rest, [pos, *value])
        elif value is None:
            setattr(args, rest, pos)
        else:
            raise InputError(f"unexpected argument {pos!r} (the model is --model {opt})")
    args.model = opt if opt is not None else pos
    if not args.model:
        raise InputError("no model given: pass MODEL (a run or model folder) or -m MODEL")


def _is_model_folder(path: str) -> bool:
    from ..pretrained import is_pretrained

    p = Path(path)
    return is_pretrained(path) or p.is_dir() and any((p / name).exists() for name in ("config.json", "LATEST", "train.json"))


def load_model(args):
    from ..core.model import VQDraw
    from ..training.runtime import pick_device

    device = pick_device(args.device)
    model = VQDraw.load(args.model, map_location=device)
    model.eval()
    return model


def add_dataclass_flags(p: argparse.ArgumentParser, cls, skip: set[str] = frozenset(), title: str = "",
                        defaults: dict[str, str] | None = None) -> None:
    """One `--field-name` flag per dataclass field, default None (None = keep the preset's value).

    Each flag's type is the field's annotation bounded by the range declared on the field
    (:func:`ranged_type`). ``defaults`` maps a field to the text shown as its default (such as
    each preset's value). Help text is the field's docstring."""
    defaults = defaults or {}
    group = p.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        typ = hints[f.name]
        doc = docs.get(f.name, "")
        if f.name in defaults:
            doc = f"{doc} (default: {defaults[f.name]})".strip()
        rng = range_of(f)
        if typ is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=doc)
        elif typing.get_origin(typ) is tuple:
            inner = typing.get_args(typ)[0]
            group.add_argument(flag, dest=f.name, type=ranged_type(inner, rng), nargs="+", default=None, help=doc)
        else:
            base = next((t for t in typing.get_args(typ) if t is not type(None)), typ) if typing.get_args(typ) else typ
            group.add_argument(flag, dest=f.name, type=ranged_type(base, rng), default=None, help=doc)


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


def output_path(path: str | None, default: Path, args=None, inputs=()) -> Path:
    """The file to write (`path`, else `default`), checked by :func:`check_output` when `args` is
    given, its folder created."""
    out = Path(path) if path else default
    if args is not None:
        check_output(args, out, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def default_output(model, name: str) -> Path:
    """Where a verb writes `name` when no -o is given: in the model's folder (``./pretrained-NAME/``
    for a shipped model), under a new numbered name (``reconstructions-cli-2.png``, …) when an
    earlier run of a verb already wrote `name` there, so a default output never replaces another."""
    from ..pretrained import output_home

    home = output_home(model)
    path = home / name
    stem, suffix = (path.stem, path.suffix) if path.suffix else (path.name, "")
    number = 2
    while path.exists():
        path = home / f"{stem}-{number}{suffix}"
        number += 1
    return path


def model_title_name(model) -> str | None:
    """The name a figure title gives the model: ``pretrained:NAME`` for a shipped model (its config
    may equal a preset's, but it is not that preset's training), else None (the title finds the preset)."""
    from ..pretrained import is_pretrained

    return str(model) if is_pretrained(model) else None


PICTURE_VERBS = ("decode", "eval")
"""Verbs whose output folder gets pictures and reports, never a model's files: it must not lie
inside a checkpoint (other verbs, such as prior and distill, write beside a model on purpose)."""


def check_outputs(args) -> None:
    """Check every output the command line names (called by the CLI's main before the verb
    runs): files with :func:`check_output` against the command's inputs (``images``, ``input``);
    the output folder of decode and eval must not lie inside a checkpoint of the model."""
    from .. import runs
    from ..errors import PathError

    inputs = []
    for name in ("images", "input", "inputs"):
        value = getattr(args, name, None)
        inputs += value if isinstance(value, list) else [value] if isinstance(value, str) else []
    model = getattr(args, "model", None)
    for value in vars(args).values():
        if isinstance(value, OutputFile):
            check_output(args, value, inputs)
        elif (isinstance(value, OutputDir) and model and getattr(args, "command", None) in PICTURE_VERBS
              and runs.writes_into(Path(value) / "000000.png", model)):
            raise PathError(f"{value}: inside a checkpoint of the model {model}; write somewhere else")


INPUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".npy", ".npz",
                  ".binvox", ".txt"}
"""Files a verb reads from a folder given as input (images, voxel grids, text)."""


def _read_from_folder(out: Path, folder) -> bool:
    """Whether `out` is an existing input file inside the input folder `folder`."""
    try:
        folder = Path(folder)
        return (folder.is_dir() and out.is_file() and out.suffix.lower() in INPUT_SUFFIXES
                and out.resolve().is_relative_to(folder.resolve()))
    except (OSError, RuntimeError):
        return False


def check_output(args, out, inputs=()) -> Path:
    """Refuse an output that would destroy something: a special file (a device, a FIFO), one of
    the model or run folder's own files (weights, configs, LATEST, checkpoints), or a file this
    command also reads (`inputs`: paths or folders given as inputs)."""
    from .. import runs
    from ..errors import PathError
    from ..io import check_output_target, same_file

    out = Path(out)
    model = getattr(args, "model", None)
    if model and runs.writes_into(out, model):
        raise PathError(f"{out}: one of the files of the model or run folder {model}; write somewhere else")
    for given in inputs:
        if same_file(out, given) or _read_from_folder(out, given):
            raise PathError(f"{out}: is also an input of this command; writing it would destroy it")
    check_output_target(out)
    return out


def add_input_args(p: argparse.ArgumentParser, count: int) -> None:
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files or folders (default: test images of the model's dataset)")
    p.add_argument("--dataset", default=None, help="take test images from this dataset instead")
    p.add_argument("--data-dir", default=None, help="where datasets live")
    p.add_argument("--count", type=positive_int(max=MAX_COUNT), default=count,
                   help="how many images to use (test images: a class-balanced, seeded subset)")
    add_fit_arg(p)


def add_fit_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fit", "--resize", dest="fit", action="store_true",
                   help="fit images to the model: centre-crop to its aspect ratio, resize (bicubic), convert "
                   "the channels (transparency composited onto white); --resize is the old name")


def inputs_of(args):
    """What a verb was asked to read (:class:`vqdraw.modalities.Inputs`): the files given, else
    --count test items of --dataset or of the dataset the model was trained on."""
    from ..baselines import run_dataset
    from ..modalities import Inputs

    files = tuple(str(f) for f in (getattr(args, "images", None) or ()))
    dataset = getattr(args, "dataset", None)
    if not files and dataset is None:
        dataset = run_dataset(args.model)
    return Inputs(files=files, dataset=dataset, data_dir=getattr(args, "data_dir", None),
                  count=getattr(args, "count", None), fit=bool(getattr(args, "fit", False)))


def load_inputs(args, model):
    """(B, *data_shape) data for the model: the files given, else --count test items of the
    dataset (--dataset, or the one the run was trained on), as its modality reads them (files or
    a dataset of the wrong kind for the model: one line)."""
    from ..modalities import check_inputs, modality_for

    check_inputs(model.config, getattr(args, "images", None), getattr(args, "dataset", None))
    return modality_for(model.config).load(model, inputs_of(args))


def train_test_splits(args, model, default: str | None = None):
    """(dataset name, train split, test split) for a verb that learns from a model's data
    (distill, prior): --dataset, else the one the model was trained on, else `default`; items
    fitted to the model's size (voxel grids reduced, text cut to its length) and checked."""
    from ..baselines import run_dataset
    from ..data import load_dataset_for
    from ..errors import InputError

    name = args.dataset or run_dataset(args.model) or default
    if name is None:
        raise InputError(f"{args.model} does not say which dataset it was trained on; pass --dataset")
    splits = [load_dataset_for(model.config, name, split, args.data_dir) for split in ("train", "test")]
    for split in splits:
        if tuple(split.data_shape) != tuple(model.config.data_shape):
            raise InputError(f"dataset {name} has items of shape {tuple(split.data_shape)}, the model takes "
                             f"{tuple(model.config.data_shape)}")
    return name, splits[0], splits[1]
