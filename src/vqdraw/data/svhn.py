"""SVHN cropped digits: ``train_32x32.mat`` (73,257) and ``test_32x32.mat`` (26,032).

MATLAB v5 files read with scipy.io.loadmat: ``X`` is 32x32x3xN uint8, ``y`` is Nx1 with labels
1..10, where 10 stands for the digit 0 (mapped to 0 here).
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetError, Dataset
from .download import check_split, dataset_dir, missing_error


MAX_MAT_BYTES = 1 << 30  # train_32x32.mat's variables hold about 225 MB
_CLASS_BYTES = {4: 2, 6: 8, 7: 4, 8: 1, 9: 1, 10: 2, 11: 2, 12: 4, 13: 4, 14: 8, 15: 8}  # mxClass -> bytes


def declared_bytes(path: Path) -> int:
    """The bytes the top-level variables of a MATLAB v5 file declare (dimensions x element size),
    read from each variable's header; a compressed variable is inflated only for its first bytes.
    0 where the file is not laid out as expected (scipy then reports the problem)."""
    total = 0
    try:
        with open(path, "rb") as fh:
            head = fh.read(128)
            if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
                return 0
            order = "<" if head[126:128] == b"IM" else ">"
            while True:
                tag = fh.read(8)
                if len(tag) < 8:
                    return total
                kind, nbytes = struct.unpack(order + "II", tag)
                if kind >> 16:  # a small data element: everything is in the tag
                    continue
                if kind == 15:  # miCOMPRESSED: inflate the start only
                    start = zlib.decompressobj().decompress(fh.read(min(nbytes, 4096)), 256)
                    fh.seek(nbytes - min(nbytes, 4096), 1)
                elif kind == 14:  # miMATRIX
                    start = tag + fh.read(min(nbytes, 248))
                    fh.seek(nbytes - min(nbytes, 248), 1)
                else:
                    fh.seek(nbytes + (-nbytes % 8), 1)
                    continue
                total += _matrix_bytes(start, order)
    except (OSError, zlib.error, struct.error):
        return total


def _matrix_bytes(start: bytes, order: str) -> int:
    """dims product x element size of one miMATRIX element from its first bytes (tag, flags, dims)."""
    kind, _, _, _, flags, _, dims_kind, dims_len = struct.unpack_from(order + "IIIIIIII", start)
    if kind != 14 or dims_kind != 5:
        return 0
    count = dims_len // 4
    dims = struct.unpack_from(order + "i" * count, start, 32)
    return math.prod(max(d, 0) for d in dims) * _CLASS_BYTES.get(flags & 0xFF, 8)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,) int64 in 0..9) from one SVHN .mat file.

    The sizes the file declares are checked first (at most :data:`MAX_MAT_BYTES`), so a
    compressed variable that would inflate to gigabytes is refused before scipy reads it.
    """
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # the optional extra [svhn]
        raise DatasetError('reading SVHN needs scipy: pip install "vqdraw[svhn]"') from exc

    declared = declared_bytes(path)
    if declared > MAX_MAT_BYTES:
        raise DatasetError(f"{path}: its variables declare {declared:,} bytes, more than the "
                           f"{MAX_MAT_BYTES:,} an SVHN file holds; not the official file")
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


def load_svhn(split: str = "train", data_dir: Path | None = None) -> Dataset:
    """SVHN from ``<data dir>/svhn/``."""
    check_split(split, "svhn")
    folder = dataset_dir("svhn", data_dir)
    path = folder / f"{split}_32x32.mat"
    if not path.is_file():
        raise missing_error("svhn", folder, [path.name])
    images, labels = read_svhn_mat(path)
    return Dataset(images, labels, name="svhn")
