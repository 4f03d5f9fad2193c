"""The CLI's volume branches and modality checks, shared by train, encode, reconstruct, stages and eval.

A model's modality (:mod:`vqdraw.modality`) decides what its verbs read: image models PNG/JPEG
files and image datasets, volume models ``.npy`` / ``.npz`` / ``.binvox`` grids and ``voxels:PATH``.
Data of the other kind is refused here with one line before anything heavy is loaded.
"""

from __future__ import annotations

from pathlib import Path


def is_volume(model) -> bool:
    return model.config.rank == 3


def path_modality(path) -> str:
    """What a file or folder given on the command line holds, from its name(s): "volume" for a
    voxel file or a folder with voxel files and no images, else "image"."""
    from ..data.voxels import VOXEL_SUFFIXES
    from ..images import IMAGE_SUFFIXES
    from ._text import TEXT_SUFFIXES

    p = Path(path)
    if p.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    if p.is_dir():
        suffixes = {q.suffix.lower() for q in p.rglob("*") if q.is_file()}
        has_voxels = bool(suffixes & set(VOXEL_SUFFIXES))
        if suffixes & set(TEXT_SUFFIXES) and not suffixes & (set(IMAGE_SUFFIXES) | set(VOXEL_SUFFIXES)):
            return "text"
        return "volume" if has_voxels and not suffixes & set(IMAGE_SUFFIXES) else "image"
    return "volume" if p.suffix.lower() in VOXEL_SUFFIXES else "image"


def check_inputs(model, paths=(), dataset: str | None = None) -> None:
    """Refuse input files or a dataset name of another modality than the model's (one line)."""
    from ..data import dataset_modality
    from ..modality import check_modality

    for p in paths or ():
        check_modality(model.config, path_modality(p), str(p))
    if dataset:
        check_modality(model.config, dataset_modality(dataset), f"dataset {dataset}")


def check_dataset(config, name: str) -> None:
    """Refuse a dataset name of another modality than a model config's (for ``vqdraw train``)."""
    from ..data import dataset_modality
    from ..modality import check_modality

    check_modality(config, dataset_modality(name), f"dataset {name}")


def load_volume_files(paths, model, count: int | None = None):
    """Grids from voxel files/folders as float (B, 1, D, H, W) in {0, 1} on the model's device."""
    import torch

    from ..data.voxels import load_voxel_files

    grids = load_voxel_files(paths, size=tuple(model.config.data_shape[1:]))
    if count:
        grids = grids[:count]
    return torch.from_numpy(grids).float().unsqueeze(1).to(model.device)


def load_volume_inputs(args, model):
    """(B, 1, D, H, W) volumes: the files given, else --count test grids of the dataset (--dataset,
    or the one the run was trained on), a seeded random subset."""
    from ..baselines import run_dataset
    from ..data import balanced_subset, load_dataset
    from ..errors import InputError

    if args.images:
        return load_volume_files(args.images, model, args.count)
    name = args.dataset or run_dataset(args.model)
    if name is None:
        raise InputError("no voxel files given and the model folder does not say its dataset; pass --dataset")
    check_inputs(model, dataset=name)
    # whole multiples of the model's size are reduced, as in training
    test = load_dataset(name, "test", args.data_dir, size=tuple(model.config.data_shape[1:]))
    if test.image_shape != tuple(model.config.data_shape):
        raise InputError(f"dataset {name} has grids of shape {test.image_shape}, the model takes "
                         f"{tuple(model.config.data_shape)}")
    return test.batch(balanced_subset(test.labels, args.count, size=len(test)), model.device)


def save_grids_npy(volume, path) -> None:
    """One decoded volume (C, D, H, W) in [0, 1] as a bool occupancy grid (D, H, W) (C = 1) or
    (C, D, H, W), occupied where the probability is above 0.5."""
    import io

    import numpy as np

    from ..io import atomic_write_bytes

    grid = (volume.detach().cpu() > 0.5).numpy()
    if grid.shape[0] == 1:
        grid = grid[0]
    buf = io.BytesIO()
    np.save(buf, grid.astype(bool), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def bernoulli_report(volumes, recon) -> str:
    """"BCE x nats/voxel = y bits/voxel, IoU z" of reconstructions (probabilities) against grids."""
    import math

    from ..plots import volume_iou

    p = recon.detach().cpu().double().clamp(1e-7, 1 - 1e-7)
    x = volumes.detach().cpu().double()
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).mean().item()
    iou = volume_iou(volumes, recon).mean().item()
    return (f"BCE {bce:.5f} nats/voxel = {bce / math.log(2):.5f} bits/voxel, "
            f"mean IoU {iou:.3f} (threshold 0.5)")
