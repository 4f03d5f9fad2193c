"""vqdraw: VQ-DRAW (Nichol, 2020) — an image as N integers chosen stage by stage.

    image (B, C, H, W) in [0, 1]
       |  normalise (model config)
       v
    stages 1..N: refiner proposes K refinements, keep the best     core/model.py, core/refiner.py
       |
       v
    codes (B, N) in [0, K)          encode / decode are inverses    core/model.py
       |
       v
    bitstream: ceil(N log2 K) bits per image, .vqd files            compress/bitstream.py, compress/codec.py
       |
       v
    image again: replay the choices (Algorithm 2)                    model.decode

    >>> from vqdraw import VQDraw
    >>> model = VQDraw.from_preset("mnist")
    >>> codes = model.encode(images)          # (B, 10) int64
    >>> recon = model.decode(codes)           # (B, 1, 28, 28) in [0, 1]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the submodule defining it. Imported on first use (PEP 562), so that
# `import vqdraw` and `vqdraw --help` do not import torch.
_EXPORTS = {
    "VQDraw": "core.model",
    "EncodeResult": "core.model",
    "Policy": "core.stageloop",
    "Greedy": "core.stageloop",
    "Beam": "core.stageloop",
    "Follow": "core.stageloop",
    "ModelConfig": "core.config",
    "RefinerConfig": "core.config",
    "TrainConfig": "core.config",
    "PRESETS": "core.config",
    "get_preset": "core.config",
    "fit": "training.train",
    "FitOptions": "training.train",
    "Runtime": "training.runtime",
    "VQDrawError": "errors",
    "ConfigError": "errors",
    "InputError": "errors",
    "CheckpointError": "errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .core.config import PRESETS, ModelConfig, RefinerConfig, TrainConfig, get_preset
    from .errors import CheckpointError, ConfigError, InputError, VQDrawError
    from .core.model import EncodeResult, VQDraw
    from .core.stageloop import Beam, Follow, Greedy, Policy
    from .training.runtime import Runtime
    from .training.train import FitOptions, fit
