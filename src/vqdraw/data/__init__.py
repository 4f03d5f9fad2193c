"""Datasets: readers of the official on-disk formats, all returning a :class:`Dataset`.

    load_dataset("mnist-embedded", "train")  ->  Dataset(data uint8 (N, H, W, C) for images, labels)
    load_dataset("mnist", "test", data_dir)  ->  reads <data_dir>/mnist/t10k-*-ubyte[.gz]
    load_dataset("folder:/path/to/images")   ->  any folder of PNG/JPEG images, no labels
    load_dataset("text-embedded")         ->  CPython's documentation prose as (N, 128, 1) characters
    load_dataset("text:/path/to/file.txt") ->  any UTF-8 text file or folder (see :mod:`.text`)
    load_dataset("voxels:/path/to/grids")    ->  .npy/.npz/.binvox occupancy grids (N, D, H, W, 1)
    load_dataset("audio:/path/to/wavs", size=(2048,), sample_rate=8000) -> mu-law clips (N, 2048, 1)
    balanced_subset(test.labels, 100)        ->  indices of 10 images of each class (seeded)

Registered datasets are read from ``<data_dir>/<name>/`` (data_dir None: see
:func:`vqdraw.data.download.default_data_dir`); missing files raise a DatasetError that says
where to get them and where to put them. :func:`ensure_downloaded` fetches them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from .base import DatasetError, Dataset
from .download import default_data_dir, ensure_downloaded
from .embedded import load_embedded_mnist
from .subset import balanced_subset

FOLDER_PREFIX = "folder:"
VOXELS_PREFIX = "voxels:"
TEXT_PREFIX = "text:"
TEXT_DATASETS = ("text-embedded", "wikitext2")
AUDIO_PREFIX = "audio:"
AUDIO_DATASETS = ("asterisk-en",)


def _lazy(module: str, function: str) -> Callable[[str, Path | None], Dataset]:
    """A loader that imports its reader module only when called (keeps imports light)."""

    def load(split: str, data_dir: Path | None = None) -> Dataset:
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)(split, data_dir)

    load.__name__ = function
    return load


# name -> loader(split, data_dir) ; other readers register themselves here.
LOADERS: dict[str, Callable[[str, Path | None], Dataset]] = {
    "mnist-embedded": lambda split, data_dir=None: load_embedded_mnist(split),
    "mnist": _lazy("idx", "load_mnist"),
    "fashion-mnist": _lazy("idx", "load_fashion_mnist"),
    "cifar10": _lazy("cifar", "load_cifar10"),
    "svhn": _lazy("svhn", "load_svhn"),
    "celeba": _lazy("celeba", "load_celeba"),
    "celeba-tight": _lazy("celeba", "load_celeba_tight"),
    "text-embedded": _lazy("text", "load_text_embedded"),
    "wikitext2": _lazy("text", "load_wikitext2"),
}


def dataset_names() -> list[str]:
    return sorted(LOADERS)


def load_dataset(name: str, split: str = "train", data_dir: str | Path | None = None,
                 size: tuple[int, ...] | None = None, sample_rate: int | None = None) -> Dataset:
    """Load split 'train' or 'test' of dataset `name`, raising DatasetError with a clear message.

    ``folder:PATH`` loads the PNG/JPEG images under PATH (every tenth file is the test split);
    ``voxels:PATH`` the occupancy grids under PATH (every tenth grid), see :mod:`.voxels`.
    ``size``: the spatial size a model reads (its ``data_shape[1:]``): voxel grids of a whole
    multiple of it are reduced to it by block maximum, text sequences are cut into chunks of it
    (:func:`.text.rechunk`); images are left as they are (their loaders fit them). Audio
    (``audio:PATH``, ``asterisk-en``) is resampled to ``sample_rate`` (default 8000 Hz) and cut into
    clips of ``size[0]`` samples (default 2048), see :mod:`.audio`; ``size=(bands, frames)`` (a
    speech model's) gives log-mel blocks instead (:mod:`.spectral`).
    """
    if dataset_modality(name) == "audio":
        return _load_audio(name, split, size, sample_rate)
    data = _load(name, split, data_dir, size)
    if size is not None and dataset_modality(name) == "text":
        from .text import rechunk

        data = rechunk(data, size[0])
    return data


def load_dataset_for(config, name: str, split: str = "train", data_dir: str | Path | None = None) -> Dataset:
    """:func:`load_dataset` at a model's size: ``config`` (a ModelConfig) gives the spatial size
    (``data_shape[1:]``: text chunk length, voxel grid size, audio clip or speech block) and an
    audio or speech model's sample rate. Every verb that reads a dataset for a model asks this."""
    return load_dataset(name, split, data_dir, size=tuple(config.data_shape[1:]),
                        sample_rate=getattr(config, "sample_rate", 0) or None)


def _load_audio(name: str, split: str, size, sample_rate) -> Dataset:
    from . import audio

    rate = sample_rate or audio.DEFAULT_RATE
    clip = size[0] if size else audio.DEFAULT_CLIP
    mel = tuple(size) if size and len(size) == 2 else None  # a speech model's (bands, frames)
    if name in AUDIO_DATASETS:
        return audio.load_asterisk_en(split, rate=rate, clip=clip, mel=mel)
    path = name[len(AUDIO_PREFIX):]
    if not path:
        raise DatasetError("audio: needs a path, as in audio:/path/to/wavs")
    return audio.load_audio_path(path, split, rate, clip, mel=mel)


def _load(name: str, split: str, data_dir, size) -> Dataset:
    if name.startswith(TEXT_PREFIX):
        from .text import load_text_path

        path = name[len(TEXT_PREFIX):]
        if not path:
            raise DatasetError("text: needs a path, as in text:/path/to/file.txt")
        return load_text_path(path, split=split)
    if name.startswith(VOXELS_PREFIX):
        from .voxels import load_voxel_folder

        path = name[len(VOXELS_PREFIX):]
        if not path:
            raise DatasetError("voxels: needs a path, as in voxels:/path/to/grids")
        return load_voxel_folder(path, split=split, size=size)
    if name.startswith(FOLDER_PREFIX):
        from .folder import load_image_folder

        path = name[len(FOLDER_PREFIX):]
        if not path:
            raise DatasetError("folder: needs a path, as in folder:/path/to/images")
        return load_image_folder(path, split=split)
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}, "
                           f"or {FOLDER_PREFIX}PATH for a folder of images, {VOXELS_PREFIX}PATH for "
                           f"a folder of voxel grids, {AUDIO_PREFIX}PATH for WAV/FLAC files")
    return LOADERS[name](split, Path(data_dir) if data_dir is not None else None)


def dataset_modality(name: str) -> str:
    """The kind of data a dataset name gives, known from the name alone (nothing is read):
    ``voxels:PATH`` volumes, ``text:PATH`` and the text sets text, ``audio:PATH`` and the audio sets
    audio, every other reader (registered image sets, ``folder:PATH``) images."""
    if name.startswith(TEXT_PREFIX) or name in TEXT_DATASETS:
        return "text"
    if name.startswith(AUDIO_PREFIX) or name in AUDIO_DATASETS:
        return "audio"
    return "volume" if name.startswith(VOXELS_PREFIX) else "image"


__all__ = ["DatasetError", "Dataset", "LOADERS", "balanced_subset", "dataset_modality", "dataset_names", "default_data_dir",
           "ensure_downloaded", "load_dataset", "load_dataset_for"]
