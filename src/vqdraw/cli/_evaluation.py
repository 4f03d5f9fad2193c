"""Plumbing shared by the evaluation verbs (eval-samples, probe, code-stats); not a verb itself.

Their MODEL may be given as a positional argument (like the other verbs) or as ``--model``, and
may be a VQ-DRAW run/model folder or a VQ-VAE baseline folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_and_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_pos", nargs="?", metavar="MODEL",
                   help="a VQ-DRAW run or model folder, or a `vqdraw baseline` folder")
    p.add_argument("--model", dest="model_opt", metavar="MODEL", default=None, help="same as MODEL")
    p.add_argument("--dataset", default=None,
                   help="dataset to evaluate on (default: the one the model was trained on)")
    p.add_argument("--data-dir", default=None,
                   help="where datasets (and cached feature nets) live (default: $VQDRAW_DATA or ~/.cache/vqdraw)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="folder for the JSON and PNG files (default: MODEL/evaluation)")


def model_path(args) -> str:
    from ..errors import InputError

    pos, opt = getattr(args, "model_pos", None), getattr(args, "model_opt", None)
    if pos and opt and pos != opt:
        raise InputError(f"two different models given: {pos} and --model {opt}")
    path = pos or opt
    if not path:
        raise InputError("no model given: pass MODEL or --model MODEL")
    return path


def load(args):
    """(model in eval mode, model path, dataset name) from the parsed arguments."""
    from ..baselines import load_any_model, run_dataset
    from ..errors import InputError
    from ..train import pick_device

    path = model_path(args)
    model = load_any_model(path, map_location=pick_device(args.device))
    dataset = args.dataset or run_dataset(path)
    if dataset is None:
        raise InputError(f"{path} does not say which dataset it was trained on; pass --dataset")
    return model, path, dataset


def output_dir(args, path: str) -> Path:
    out = Path(args.output) if args.output else Path(path) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    return out
