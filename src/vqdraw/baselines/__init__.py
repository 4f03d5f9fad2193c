"""Baselines to compare VQ-DRAW with, and loading any model the evaluation tools accept.

    vqvae.py   VQ-VAE with a 7x7 grid of codes and a tiny codebook (paper Figure 2)

The evaluation commands (eval-samples, probe, code-stats) take either kind of model folder:
:func:`load_any_model` reads the ``format`` field of its config.json.
"""

from __future__ import annotations

from pathlib import Path

from .. import runs
from ..errors import CheckpointError
from ..runs import run_dataset  # noqa: F401 (re-exported: where the evaluation tools look for it)


def load_any_model(path: str | Path, map_location="cpu"):
    """A VQ-DRAW model (model folder or run folder) or a VQ-VAE baseline folder, in eval mode."""
    from ..core.model import STORED, VQDraw
    from .vqvae import STORED as VQVAE_STORED
    from .vqvae import VQVAE

    directory = runs.resolve_model_dir(path)
    meta = runs.read_json(directory / runs.CONFIG_FILE, "unreadable model config")
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt == STORED.name:
        model = VQDraw.load(directory, map_location=map_location)
    elif fmt == VQVAE_STORED.name:
        model = VQVAE.load(directory, map_location=map_location)
    else:
        raise CheckpointError(f"{directory / runs.CONFIG_FILE}: unknown model format {fmt!r}")
    model.eval()
    return model


def model_kind(model) -> str:
    """'vqdraw' or 'vqvae'."""
    from .vqvae import VQVAE

    return "vqvae" if isinstance(model, VQVAE) else "vqdraw"


__all__ = ["load_any_model", "model_kind", "run_dataset"]
