"""Which test images to evaluate on when only some are wanted.

Test splits are often sorted by label (the embedded MNIST test split is: its first 100 images
are all 0s and 1s), so "the first n" is a biased sample. :func:`balanced_subset` takes as many
images of every class as it can, at random within a class, seeded.
"""

from __future__ import annotations

import numpy as np

from .base import DatasetError


def balanced_subset(labels, count: int, seed: int = 0, size: int | None = None) -> np.ndarray:
    """Indices (sorted, int64) of ``count`` items: class-balanced when there are ``labels``,
    a seeded random sample of ``range(size)`` when ``labels`` is None.

    Balanced: every class gives ``count // classes`` items or all it has, and the items left
    over go one per class to classes drawn at random; within a class the items are drawn at
    random. The same (labels, count, seed) always give the same indices. ``count`` at least the
    number of items gives all of them.
    """
    if labels is None:
        if size is None:
            raise DatasetError("balanced_subset needs labels or a size")
        n = int(size)
    else:
        labels = np.asarray(labels)
        n = len(labels)
    if count < 0:
        raise DatasetError(f"cannot take {count} items")
    if count >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)
    # rank every item within its class at random, then take ranks 0, 1, 2, … across the classes,
    # breaking ties in the last round by a random order of the classes
    order = rng.permutation(n)
    classes, inverse = np.unique(labels[order], return_inverse=True)
    rank = np.empty(n, dtype=np.int64)
    for k in range(len(classes)):
        members = np.flatnonzero(inverse == k)
        rank[members] = np.arange(len(members))
    class_priority = rng.permutation(len(classes))[inverse]
    chosen = order[np.lexsort((class_priority, rank))[:count]]
    return np.sort(chosen).astype(np.int64)
