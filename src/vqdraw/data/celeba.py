"""CelebA aligned faces at 64x64: ``img_align_celeba/*.jpg`` (178x218) + ``list_eval_partition.txt``.

The partition file's lines read ``000001.jpg 0`` (0 train, 1 valid, 2 test); train is 0
(162,770 images) and test is 2 (19,962). The images may also be read straight from an
unextracted ``img_align_celeba.zip``. Every image, train and test alike, becomes 64x64 by one of
two crops:

* ``author`` (the default; dataset ``celeba``): the paper author's preprocessing, torchvision's
  ``Resize(64)`` then ``CenterCrop(64)``: the shorter side is resized to 64 with Pillow's BILINEAR
  filter (178x218 -> 64x78), then the centre 64x64 is cut (rows 7..70): the centre 178x178 of the
  face image, whole width.
* ``tight`` (dataset ``celeba-tight``; vqdraw's earlier default): the centre 140x140 (the box
  (19, 39, 159, 179) for 178x218), resized to 64x64 with Pillow's BICUBIC filter: a 1.27x closer face.

Decoding 180k JPEGs takes minutes, so the result is cached in the dataset folder as
``celeba_64_author_<split>.npy`` (``celeba_64_<split>.npy`` for the tight crop: the name it always
had), written to a temporary name, then renamed, and memory-mapped on later loads.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .base import DatasetError, Dataset
from .capped import MAX_MEMBER_BYTES, MAX_TEXT_BYTES, read_capped, read_zip_member
from .download import check_split, dataset_dir, missing_error
from .folder import decode_all, open_image

CROP = 140
SIZE = 64
IMAGES = "img_align_celeba"
ARCHIVE = "img_align_celeba.zip"
PARTITION = "list_eval_partition.txt"
SPLIT_CODE = {"train": 0, "test": 2}
CROPS = ("author", "tight")


def read_partition(path: Path) -> list[tuple[str, int]]:
    """(file name, 0/1/2) per line of ``list_eval_partition.txt``."""
    out = []
    try:
        text = read_capped(path, MAX_TEXT_BYTES).decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the partition file ({exc})") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2") or "/" in parts[0] \
                or "\\" in parts[0] or parts[0].startswith("."):
            raise DatasetError(f"{path}: line {number}: expected '<file>.jpg <0|1|2>', "
                               f"got {line.strip()!r}")
        out.append((parts[0], int(parts[1])))
    return out


def crop_and_resize(img, crop: str = "author") -> np.ndarray:
    """A (64, 64, 3) uint8 array. ``author``: shorter side BILINEAR-resized to 64, then the centre
    64x64 (torchvision's Resize(64) + CenterCrop(64) on a PIL image). ``tight``: centre 140x140
    crop, then BICUBIC resize to 64x64."""
    from PIL import Image

    w, h = img.size
    if crop == "author":
        ow, oh = (SIZE, int(SIZE * h / w)) if w <= h else (int(SIZE * w / h), SIZE)
        img = img.convert("RGB").resize((ow, oh), Image.Resampling.BILINEAR)
        left, top = int(round((ow - SIZE) / 2.0)), int(round((oh - SIZE) / 2.0))
        return np.asarray(img.crop((left, top, left + SIZE, top + SIZE)), dtype=np.uint8)
    if crop != "tight":
        raise ValueError(f"unknown CelebA crop {crop!r}; known: {', '.join(CROPS)}")
    if w < CROP or h < CROP:
        raise ValueError(f"{w}x{h} is smaller than the {CROP}x{CROP} crop")
    left, top = (w - CROP) // 2, (h - CROP) // 2
    img = img.convert("RGB").crop((left, top, left + CROP, top + CROP))
    return np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.uint8)


@contextlib.contextmanager
def _image_reader(folder: Path, crop: str):
    """Yields a function file name -> (64, 64, 3) array, reading the folder or else the zip."""
    archive = None
    images = folder / IMAGES
    if images.is_dir():
        def source(name: str):
            path = images / name
            if not path.is_file():
                raise DatasetError(f"{path}: listed in {PARTITION} but missing")
            return path, str(path)
    elif (folder / ARCHIVE).is_file():
        try:
            archive = zipfile.ZipFile(folder / ARCHIVE)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{folder / ARCHIVE}: not a readable zip ({exc}); "
                               "download it again or unzip it there") from exc
        lock = threading.Lock()

        def source(name: str):
            where = f"{folder / ARCHIVE}:{IMAGES}/{name}"
            with lock:
                data = read_zip_member(archive, f"{IMAGES}/{name}", MAX_MEMBER_BYTES, where=where,
                                       what="a CelebA image", missing=f"listed in {PARTITION} but missing")
            return io.BytesIO(data), where
    else:
        raise missing_error("celeba", folder, [ARCHIVE],
                            reason=f"celeba: no {IMAGES}/ folder or {ARCHIVE} in {folder}")

    def decode(name: str) -> np.ndarray:
        src, where = source(name)
        try:
            return crop_and_resize(open_image(src, where), crop)
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from exc

    try:
        yield decode
    finally:
        if archive is not None:
            archive.close()


def _cached(path: Path, count: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return arr if arr.dtype == np.uint8 and arr.shape == (count, SIZE, SIZE, 3) else None


def load_celeba(split: str = "train", data_dir: Path | None = None,
                progress: bool = True, crop: str = "author") -> Dataset:
    """CelebA from ``<data dir>/celeba/``, decoded once into a memory-mapped ``.npy`` cache.
    ``crop``: ``author`` (his Resize(64) + CenterCrop(64)) or ``tight`` (see the module docstring)."""
    check_split(split, "celeba")
    if crop not in CROPS:
        raise DatasetError(f"unknown CelebA crop {crop!r}; known: {', '.join(CROPS)}")
    folder = dataset_dir("celeba", data_dir)
    partition = folder / PARTITION
    if not partition.is_file():
        missing = [PARTITION] + ([] if (folder / IMAGES).is_dir() or (folder / ARCHIVE).is_file()
                                 else [ARCHIVE])
        raise missing_error("celeba", folder, missing)
    names = [n for n, code in read_partition(partition) if code == SPLIT_CODE[split]]
    if not names:
        raise DatasetError(f"{partition}: lists no {split} images")
    cache = folder / (f"celeba_{SIZE}_{split}.npy" if crop == "tight" else f"celeba_{SIZE}_{crop}_{split}.npy")
    arr = _cached(cache, len(names))
    if arr is not None:
        return Dataset(arr, None, name="celeba")
    shape = (len(names), SIZE, SIZE, 3)
    desc = f"decoding CelebA {split}"
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    with _image_reader(folder, crop) as decode:
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        except OSError as exc:
            warnings.warn(f"cannot write the CelebA cache {cache} ({exc}); decoding into memory",
                          stacklevel=2)
            out = decode_all(names, decode, np.empty(shape, np.uint8), desc, progress)
            return Dataset(out, None, name="celeba")
        try:
            decode_all(names, decode, out, desc, progress)
            out.flush()
            del out
            os.replace(tmp, cache)
        finally:
            tmp.unlink(missing_ok=True)
    return Dataset(np.load(cache, mmap_mode="r"), None, name="celeba")


def load_celeba_tight(split: str = "train", data_dir: Path | None = None, progress: bool = True) -> Dataset:
    """CelebA with the tight 140x140 crop (vqdraw's earlier default)."""
    return load_celeba(split, data_dir, progress, crop="tight")
