"""Dataset items as ordinary files, the inputs `vqdraw encode` and the other verbs read:

    export_items(load_dataset("mnist-embedded", "test"), "my-digits/", 16)  ->  16 PNG files
    text -> UTF-8 .txt files, volumes -> .npy occupancy grids (D, H, W) bool, audio -> 16-bit .wav

The items are a class-balanced, seeded subset (:func:`.subset.balanced_subset`, the same items
`vqdraw reconstruct --count` takes), each named by its index in the split (``000123.png``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Dataset
from .subset import balanced_subset

SUFFIXES = {"image": ".png", "text": ".txt", "volume": ".npy", "audio": ".wav"}


@dataclass(frozen=True)
class Exported:
    """What :func:`export_items` wrote: the files (in index order) and the kind of data."""

    files: tuple[Path, ...]
    modality: str


def export_items(dataset: Dataset, out: str | Path, count: int, *, modality: str | None = None,
                 sample_rate: int | None = None, seed: int = 0) -> Exported:
    """Write `count` items of `dataset` (all of them if it holds fewer) into folder `out` (created
    if missing); files of the same names are replaced. `modality` ("image", "text", "volume",
    "audio") defaults to what the dataset's name says; `sample_rate` is audio's (default 8000 Hz)."""
    from . import dataset_modality
    from ..io import atomic_write_bytes

    kind = modality or dataset_modality(dataset.name)
    index = balanced_subset(dataset.labels, count, seed=seed, size=len(dataset))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(dataset) - 1)))
    files = []
    for i in index:
        path = folder / f"{int(i):0{width}d}{SUFFIXES[kind]}"
        atomic_write_bytes(path, _item_bytes(dataset.data[int(i)], kind, sample_rate))
        files.append(path)
    return Exported(tuple(files), kind)


def _item_bytes(item: np.ndarray, kind: str, sample_rate: int | None) -> bytes:
    """One item (*S, C) uint8 as the bytes of its file."""
    import io

    buf = io.BytesIO()
    if kind == "image":
        from PIL import Image

        pixels = item[..., 0] if item.shape[-1] == 1 else item  # (H, W) grey or (H, W, 3) colour
        Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    elif kind == "text":
        from .text import decode_characters

        buf.write(decode_characters(item[..., 0]).encode("utf-8"))
    elif kind == "volume":
        np.save(buf, np.ascontiguousarray(item[..., 0] > 127), allow_pickle=False)  # (D, H, W) bool
    elif kind == "audio":
        from .audio import DEFAULT_RATE, _soundfile, mu_law_decode

        sf = _soundfile()  # the [audio] extra; a one-line error without it
        samples = np.clip(mu_law_decode(item[..., 0].astype(np.int64)), -1, 1).astype(np.float32)
        sf.write(buf, samples, int(sample_rate or DEFAULT_RATE), subtype="PCM_16", format="WAV")
    else:
        raise ValueError(f"unknown kind of data {kind!r}")
    return buf.getvalue()
