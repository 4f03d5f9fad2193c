"""Metrics.

    distortion.py  MSE, PSNR (per image, and of a mean MSE) and SSIM between images and their
                   reconstructions: the one definition every report and log uses
    features.py    FeatureNet: a small CNN classifier per dataset; its penultimate layer is the
                   feature space (cached under <data dir>/features/<dataset>/)
    fid.py         FID, KID and k-NN precision/recall between two feature sets

Sample-quality metrics are measured in a feature space the project trains itself (no downloads).
The feature-net names are imported on first use, so importing ``vqdraw.evaluate.metrics`` stays light.
"""

from __future__ import annotations

import importlib

from .distortion import mse, psnr, psnr_from_mse, ssim
from .fid import compare, fid, frechet_distance, kid, precision_recall

_FEATURES = ("FeatureNet", "FeatureRecipe", "features_dir", "load_feature_net", "train_feature_net")


def __getattr__(name: str):
    if name in _FEATURES:  # features.py reads datasets and writes caches: imported on first use
        return getattr(importlib.import_module(f"{__name__}.features"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["mse", "psnr", "psnr_from_mse", "ssim", "compare", "fid", "frechet_distance", "kid",
           "precision_recall", *_FEATURES]
