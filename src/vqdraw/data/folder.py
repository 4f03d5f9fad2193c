"""Any folder of PNG/JPEG images (searched recursively, in sorted path order) as a dataset.

Every tenth file in sorted order (the 10th, 20th, …) is the test split; the rest is train.
There are no labels. Every image goes through :func:`vqdraw.data.images.fit_image`, the path
``vqdraw encode --fit`` and :func:`vqdraw.data.images.to_tensor` take too: 16-bit images scaled to
8 bits, transparency composited onto white, colour converted to 1 (grayscale) or 3 (RGB)
channels, and images whose size differs from the target centre-cropped to the target's aspect
ratio then resized bicubically (or rejected when resizing is off).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .images import fit_image
from .base import DatasetError, Dataset
from .download import check_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_BLOCK = 256


def list_images(root: Path) -> list[Path]:
    """PNG/JPEG files under `root`, recursively, sorted by relative path; hidden ones skipped."""
    found = [
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def open_image(source, where: str):
    """Open and fully decode an image (path or file object), applying EXIF orientation."""
    from ..errors import InputError
    from .images import open_image as _open

    try:
        return _open(source)
    except InputError as exc:
        raise DatasetError(f"{where}: cannot decode the image ({exc.__cause__})") from exc.__cause__


def decode_all(items: Sequence, decode: Callable[[object], np.ndarray], out: np.ndarray,
               desc: str, progress: bool = True) -> np.ndarray:
    """Fill ``out[i] = decode(items[i])`` using a few threads, reporting progress
    (:class:`vqdraw.progress.Progress`)."""
    from ..progress import Progress

    workers = max(1, min(8, os.cpu_count() or 1))
    bar = Progress(len(items), desc=desc, unit="img", enabled=progress)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(items), _BLOCK):
                block = items[start:start + _BLOCK]
                for i, arr in enumerate(pool.map(decode, block)):
                    out[start + i] = arr
                bar.update(len(block))
    finally:
        bar.close()
    return out


def load_image_folder(path: str | Path, size: tuple[int, int] | None = None,
                      channels: int | None = None, resize: bool = True,
                      split: str = "train", progress: bool = True) -> Dataset:
    """Split 'train' or 'test' of the images under `path` as an unlabelled Dataset.

    size: (height, width); None takes the size of the first image in sorted order.
    channels: 1 or 3; None takes 1 if the first image is grayscale, else 3.
    resize: fit images of another size (centre crop + bicubic resize); False rejects them.
    """
    root = Path(path).expanduser()
    name = f"folder:{root}"
    check_split(split, name)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder of images")
    if channels not in (None, 1, 3):
        raise DatasetError(f"{name}: channels must be 1 or 3, not {channels}")
    files = list_images(root)
    if not files:
        raise DatasetError(f"{root}: no PNG or JPEG images found (searched recursively)")
    first = open_image(files[0], str(files[0]))
    if size is None:
        size = (first.height, first.width)
    if channels is None:
        channels = 1 if first.mode in _GRAY_MODES else 3
    height, width = size
    keep = [p for i, p in enumerate(files) if (i % 10 == 9) == (split == "test")]
    if not keep:
        raise DatasetError(f"{root}: only {len(files)} image(s), so the {split} split "
                           "(every tenth file) is empty; add at least 10 images")

    def decode(p: Path) -> np.ndarray:
        img = open_image(p, str(p))
        if img.size != (width, height) and not resize:
            raise DatasetError(f"{p}: {img.width}x{img.height} pixels (width x height), "
                               f"expected {width}x{height}; resize it or allow resizing")
        return fit_image(img, (channels, height, width))

    out = np.empty((len(keep), height, width, channels), dtype=np.uint8)
    decode_all(keep, decode, out, desc=f"decoding {root.name}", progress=progress)
    return Dataset(out, None, name=name)
