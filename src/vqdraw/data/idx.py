"""MNIST and Fashion-MNIST from their four official IDX files, gzipped (``.gz``) or not.

IDX: a big-endian header ``0 0 <dtype> <ndim>`` then ``ndim`` uint32 sizes, then the data.
Images are magic 2051 (unsigned bytes, 3 dims), labels magic 2049 (unsigned bytes, 1 dim).
The official split: ``train-*`` (60,000) and ``t10k-*`` (10,000).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetError, Dataset
from .capped import MAX_IDX_BYTES, open_capped
from .download import check_split, dataset_dir, missing_error, read_dir

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_UBYTE = 0x08


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes with the expected `magic`, validating the header.

    The header is read first and the data after it only up to the size the header declares
    (at most :data:`~vqdraw.data.capped.MAX_IDX_BYTES`), so a gzip bomb costs no more than a
    genuine file before it is refused.
    """
    path = Path(path)
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    try:
        with open_capped(path, MAX_IDX_BYTES) as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise DatasetError(f"{path}: only {len(head)} bytes, not an IDX file")
            found = int.from_bytes(head, "big")
            if head[0] or head[1]:
                raise DatasetError(f"{path}: bad magic number {found} (0x{found:08x}), expected {magic}; "
                                   "not an IDX file")
            if head[2] != _UBYTE:
                raise DatasetError(f"{path}: bad magic number {found}: element type 0x{head[2]:02x}, "
                                   "expected 0x08 (unsigned byte)")
            if found != magic:
                raise DatasetError(f"{path}: bad magic number {found}, expected {magic} ({kind} file)")
            ndim = head[3]
            sizes = fh.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise DatasetError(f"{path}: truncated inside the header")
            dims = tuple(int.from_bytes(sizes[4 * i: 4 + 4 * i], "big") for i in range(ndim))
            expected = math.prod(dims)
            if expected > MAX_IDX_BYTES:
                raise DatasetError(f"{path}: its header declares {'x'.join(map(str, dims))} = {expected:,} "
                                   f"bytes, more than the {MAX_IDX_BYTES:,} an IDX dataset file may hold")
            body = fh.read(expected + 1)  # one byte more reveals trailing data
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DatasetError(f"{path}: cannot read ({exc}); the file is damaged, "
                           "delete it and download it again") from exc
    if len(body) != expected:
        if len(body) > expected:
            raise DatasetError(f"{path}: has trailing bytes: its header declares {'x'.join(map(str, dims))} = "
                               f"{expected} bytes of data but the file holds more")
        raise DatasetError(f"{path}: truncated: its header declares {'x'.join(map(str, dims))} = "
                           f"{expected} bytes of data but the file holds {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_folder(folder: Path, split: str, name: str) -> Dataset:
    """Split 'train' or 'test' of an IDX dataset whose four files are in `folder`."""
    check_split(split, name)
    prefix = "train" if split == "train" else "t10k"
    wanted = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    found = [_find(folder, w) for w in wanted]
    missing = [f"{w}.gz" for w, f in zip(wanted, found) if f is None]
    if missing:
        raise missing_error(name, folder, missing)
    images = read_idx(found[0], IMAGES_MAGIC)
    labels = read_idx(found[1], LABELS_MAGIC)
    if images.ndim != 3 or labels.ndim != 1:
        raise DatasetError(f"{found[0].name}/{found[1].name}: expected 3-dim images and "
                           f"1-dim labels, got {images.ndim} and {labels.ndim} dims")
    if len(images) != len(labels):
        raise DatasetError(f"{found[0].name} holds {len(images)} images but {found[1].name} "
                           f"holds {len(labels)} labels (in {folder})")
    return Dataset(images[..., None], labels.astype(np.int64), name=name)


def load_mnist(split: str = "train", data_dir: Path | None = None) -> Dataset:
    """MNIST from ``<data dir>/mnist/``."""
    return load_idx_folder(dataset_dir("mnist", data_dir), split, "mnist")


def load_fashion_mnist(split: str = "train", data_dir: Path | None = None) -> Dataset:
    """Fashion-MNIST from ``<data dir>/fashion-mnist/``, else from Debian's package
    (``apt install dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist)."""
    return load_idx_folder(read_dir("fashion-mnist", data_dir), split, "fashion-mnist")
