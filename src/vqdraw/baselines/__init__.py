"""Baselines to compare VQ-DRAW with, and loading any model the evaluation tools accept.

    vqvae.py   VQ-VAE with a 7x7 grid of codes and a tiny codebook (paper Figure 2)

The evaluation commands (eval-samples, probe, code-stats) take either kind of model folder:
:func:`load_any_model` reads the ``format`` field of its config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError


def load_any_model(path: str | Path, map_location="cpu"):
    """A VQ-DRAW model (model folder or run folder) or a VQ-VAE baseline folder, in eval mode."""
    from ..model import CONFIG_FILE, FORMAT, VQDraw, resolve_model_dir

    directory = resolve_model_dir(path)
    try:
        fmt = json.loads((directory / CONFIG_FILE).read_text()).get("format")
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: unreadable model config ({exc})") from exc
    if fmt == FORMAT:
        model = VQDraw.load(directory, map_location=map_location)
    else:
        from .vqvae import FORMAT as VQVAE_FORMAT
        from .vqvae import VQVAE

        if fmt != VQVAE_FORMAT:
            raise CheckpointError(f"{directory / CONFIG_FILE}: unknown model format {fmt!r}")
        model = VQVAE.load(directory, map_location=map_location)
    model.eval()
    return model


def model_kind(model) -> str:
    """'vqdraw' or 'vqvae'."""
    from .vqvae import VQVAE

    return "vqvae" if isinstance(model, VQVAE) else "vqdraw"


def run_dataset(path: str | Path) -> str | None:
    """The dataset a model was trained on, from train.json in its folder or the folder above."""
    path = Path(path)
    for folder in (path, path.parent):
        f = folder / "train.json"
        if f.exists():
            try:
                return json.loads(f.read_text())["train"]["dataset"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
    return None


__all__ = ["load_any_model", "model_kind", "run_dataset"]
