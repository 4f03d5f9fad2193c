"""MNIST and Fashion-MNIST from their four official IDX files, gzipped (``.gz``) or not.

IDX: a big-endian header ``0 0 <dtype> <ndim>`` then ``ndim`` uint32 sizes, then the data.
Images are magic 2051 (unsigned bytes, 3 dims), labels magic 2049 (unsigned bytes, 1 dim).
The official split: ``train-*`` (60,000) and ``t10k-*`` (10,000).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetError, ImageSet
from .download import check_split, dataset_dir, missing_error

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_UBYTE = 0x08


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes with the expected `magic`, validating the header."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DatasetError(f"{path}: cannot read ({exc}); the file is damaged, "
                           "delete it and download it again") from exc
    if len(raw) < 4:
        raise DatasetError(f"{path}: only {len(raw)} bytes, not an IDX file")
    found = int.from_bytes(raw[:4], "big")
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    if raw[0] or raw[1]:
        raise DatasetError(f"{path}: bad magic number {found} (0x{found:08x}), expected {magic}; "
                           "not an IDX file")
    if raw[2] != _UBYTE:
        raise DatasetError(f"{path}: bad magic number {found}: element type 0x{raw[2]:02x}, "
                           "expected 0x08 (unsigned byte)")
    if found != magic:
        raise DatasetError(f"{path}: bad magic number {found}, expected {magic} ({kind} file)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated inside the header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DatasetError(f"{path}: {what}: its header declares {'x'.join(map(str, dims))} = "
                           f"{expected} bytes of data but the file holds {actual}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_folder(folder: Path, split: str, name: str) -> ImageSet:
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
    return ImageSet(images[..., None], labels.astype(np.int64), name=name)


def load_mnist(split: str = "train", data_dir: Path | None = None) -> ImageSet:
    """MNIST from ``<data dir>/mnist/``."""
    return load_idx_folder(dataset_dir("mnist", data_dir), split, "mnist")


def load_fashion_mnist(split: str = "train", data_dir: Path | None = None) -> ImageSet:
    """Fashion-MNIST from ``<data dir>/fashion-mnist/``."""
    return load_idx_folder(dataset_dir("fashion-mnist", data_dir), split, "fashion-mnist")
