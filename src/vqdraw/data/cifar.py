"""CIFAR-10, python version: ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/``.

Each batch is a pickle of a dict with b'data' ((N, 3072) uint8: the R, G and B 32x32 planes of
each image, row-major) and b'labels' (N ints 0..9). Train is ``data_batch_1..5`` (50,000), test
is ``test_batch`` (10,000). Members are read straight from the tar, nothing is extracted.

Pickles can run code, so they are read with a restricted unpickler that only resolves the few
globals a pickled uint8 array needs (numpy's ``_reconstruct``, ``ndarray``, ``dtype``, and
``_codecs.encode`` with latin-1, which Python 3 uses for bytes in protocol 2); any other
global is refused.
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetError, Dataset
from .capped import MAX_MEMBER_BYTES, MAX_TAR_BYTES, CappedReader, read_capped
from .download import check_split, dataset_dir, missing_error

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin-1", errors)


def _allowed_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed: dict[tuple[str, str], object] = {("_codecs", "encode"): _latin1_encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = _reconstruct
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the globals needed for numpy uint8 arrays; refuses everything else."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one CIFAR-10 batch pickle into (images (N, 32, 32, 3) uint8, labels (N,) int64)."""
    try:
        batch = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any failure to unpickle is a bad file
        raise DatasetError(f"{where}: not a valid CIFAR-10 batch ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{where}: not a CIFAR-10 batch (no b'data' / b'labels' entries)")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DatasetError(f"{where}: b'data' should be uint8 of shape (N, 3072), got "
                           f"{getattr(data, 'dtype', type(data).__name__)} {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: b'labels' is not a list of integers") from exc
    if labels.shape != (len(data),):
        raise DatasetError(f"{where}: {len(data)} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{where}: labels outside 0..9")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def _read_members(folder: Path, names: tuple[str, ...]) -> list[tuple[bytes, str]]:
    """The raw bytes of each batch, from the extracted folder or else from the archive."""
    extracted = folder / FOLDER
    if extracted.is_dir():
        out = []
        for n in names:
            path = extracted / n
            if not path.is_file():
                raise DatasetError(f"{path}: missing from the extracted CIFAR-10 folder; "
                                   f"delete {extracted} or put {ARCHIVE} in {folder} instead")
            out.append((read_capped(path, MAX_MEMBER_BYTES), str(path)))
        return out
    archive = folder / ARCHIVE
    if not archive.is_file():
        raise missing_error("cifar10", folder, [ARCHIVE])
    wanted = {f"{FOLDER}/{n}": n for n in names}
    found: dict[str, bytes] = {}
    try:  # the uncompressed stream and each member are capped: a gzip bomb is refused, not read
        with gzip.open(archive, "rb") as gz, tarfile.open(
                fileobj=CappedReader(gz, MAX_TAR_BYTES, str(archive)), mode="r:") as tar:
            for member in tar:  # one pass over the stream, in archive order
                if member.name in wanted and member.isfile():
                    if member.size > MAX_MEMBER_BYTES:
                        raise DatasetError(f"{archive}:{member.name}: {member.size:,} bytes, more than a "
                                           f"CIFAR-10 batch can hold ({MAX_MEMBER_BYTES:,}); not the official file")
                    found[wanted[member.name]] = tar.extractfile(member).read()
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{archive}: cannot read the archive ({exc}); it is damaged, "
                           "delete it and download it again") from exc
    lost = [n for n in names if n not in found]
    if lost:
        raise DatasetError(f"{archive}: lacks {', '.join(f'{FOLDER}/{n}' for n in lost)}")
    return [(found[n], f"{archive}:{FOLDER}/{n}") for n in names]


def load_cifar10(split: str = "train", data_dir: Path | None = None) -> Dataset:
    """CIFAR-10 from ``<data dir>/cifar10/`` (archive or extracted folder)."""
    check_split(split, "cifar10")
    folder = dataset_dir("cifar10", data_dir)
    names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    batches = [read_batch(raw, where) for raw, where in _read_members(folder, names)]
    images = np.ascontiguousarray(np.concatenate([b[0] for b in batches]))
    labels = np.concatenate([b[1] for b in batches])
    return Dataset(images, labels, name="cifar10")
