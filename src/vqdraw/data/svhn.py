"""SVHN cropped digits: ``train_32x32.mat`` (73,257) and ``test_32x32.mat`` (26,032).

MATLAB v5 files read with scipy.io.loadmat: ``X`` is 32x32x3xN uint8, ``y`` is Nx1 with labels
1..10, where 10 stands for the digit 0 (mapped to 0 here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetError, ImageSet
from .download import check_split, dataset_dir, missing_error


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,) int64 in 0..9) from one SVHN .mat file."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # the optional extra [svhn]
        raise DatasetError('reading SVHN needs scipy: pip install "vqdraw[svhn]"') from exc

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises many kinds for damaged files
        raise DatasetError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc}); "
                           "delete it and download it again") from exc
    if "X" not in mat or "y" not in mat:
        raise DatasetError(f"{path}: lacks the variables X and y of an SVHN file")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DatasetError(f"{path}: X should be uint8 of shape 32x32x3xN, got {x.dtype} {x.shape}")
    y = np.asarray(y).reshape(-1)
    if y.shape != (x.shape[3],):
        raise DatasetError(f"{path}: {x.shape[3]} images but {y.size} labels")
    labels = y.astype(np.int64)
    if not np.array_equal(labels, y) or (labels.size and (labels.min() < 1 or labels.max() > 10)):
        raise DatasetError(f"{path}: labels should be integers 1..10")
    labels[labels == 10] = 0
    images = np.ascontiguousarray(x.transpose(3, 0, 1, 2))
    return images, labels


def load_svhn(split: str = "train", data_dir: Path | None = None) -> ImageSet:
    """SVHN from ``<data dir>/svhn/``."""
    check_split(split, "svhn")
    folder = dataset_dir("svhn", data_dir)
    path = folder / f"{split}_32x32.mat"
    if not path.is_file():
        raise missing_error("svhn", folder, [path.name])
    images, labels = read_svhn_mat(path)
    return ImageSet(images, labels, name="svhn")
