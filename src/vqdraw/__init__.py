"""vqdraw: VQ-DRAW (Nichol, 2020) — an image as N integers chosen stage by stage.

    image (B, C, H, W) in [0, 1]
       |  normalise (model config)
       v
    stages 1..N: refiner proposes K refinements, keep the best     model.py, refiner.py
       |
       v
    codes (B, N) in [0, K)          encode / decode are inverses    model.py
       |
       v
    bitstream: ceil(N log2 K) bits per image, .vqd files            bitstream.py, codec.py
       |
       v
    image again: replay the choices (Algorithm 2)                    model.decode

    >>> from vqdraw import VQDraw
    >>> model = VQDraw.from_preset("mnist")
    >>> codes = model.encode(images)          # (B, 10) int64
    >>> recon = model.decode(codes)           # (B, 1, 28, 28) in [0, 1]
"""

from .config import PRESETS, ModelConfig, RefinerConfig, TrainConfig, get_preset
from .errors import CheckpointError, ConfigError, InputError, VQDrawError
from .model import EncodeResult, VQDraw
from .train import fit

__all__ = [
    "VQDraw",
    "EncodeResult",
    "ModelConfig",
    "RefinerConfig",
    "TrainConfig",
    "PRESETS",
    "get_preset",
    "fit",
    "VQDrawError",
    "ConfigError",
    "InputError",
    "CheckpointError",
]
__version__ = "0.1.0"
