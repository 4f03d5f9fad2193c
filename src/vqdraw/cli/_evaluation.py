"""Plumbing shared by the evaluation verbs (eval-samples, probe, code-stats); not a verb itself.

Their MODEL is given like every verb's (the first positional, or -m/--model; common.add_model_arg),
and may be a VQ-DRAW run/model folder or a VQ-VAE baseline folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_arg, output_dir as output_dir_type


def add_model_and_data_args(p: argparse.ArgumentParser) -> None:
    add_model_arg(p, help="a VQ-DRAW run or model folder, or a `vqdraw baseline` folder")
    p.add_argument("--dataset", default=None,
                   help="dataset to evaluate on (default: the one the model was trained on)")
    p.add_argument("--data-dir", default=None,
                   help="where datasets (and cached feature nets) live (default: $VQDRAW_DATA or ~/.cache/vqdraw)")
    p.add_argument("-o", "--output", type=output_dir_type, default=None, metavar="DIR",
                   help="folder for the JSON and PNG files (default: MODEL/evaluation)")


def load(args):
    """(model in eval mode, model path, dataset name) from the parsed arguments."""
    from ..baselines import load_any_model, run_dataset
    from ..errors import InputError
    from ..training.runtime import pick_device

    path = args.model  # set by common.resolve_model
    model = load_any_model(path, map_location=pick_device(args.device))
    dataset = args.dataset or run_dataset(path)
    if dataset is None:
        raise InputError(f"{path} does not say which dataset it was trained on; pass --dataset")
    return model, path, dataset


def output_dir(args, path: str) -> Path:
    out = Path(args.output) if args.output else Path(path) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    return out
