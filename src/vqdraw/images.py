"""Image files <-> tensors in [0, 1], checked against what a model expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def expand_image_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders expanded to the images inside them (sorted, recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    if not out:
        raise InputError("no image files found in " + ", ".join(map(str, paths)))
    return out


def load_image(path: str | Path, shape: tuple[int, int, int], resize: bool = False) -> torch.Tensor:
    """One image file as (C, H, W) float in [0, 1] for a model taking `shape` = (C, H, W).

    Channels are converted (grey <-> RGB). A different size is an error unless `resize`, which
    centre-crops to the target aspect ratio and resizes with Lanczos.
    """
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("L" if c == 1 else "RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from exc
    if im.size != (w, h):
        if not resize:
            raise InputError(
                f"{path}: image is {im.size[0]}x{im.size[1]} but the model takes {w}x{h}; "
                "pass --resize to resize it"
            )
        im = _crop_to_aspect(im, w / h).resize((w, h), Image.LANCZOS)
    arr = np.asarray(im, dtype=np.uint8).reshape(h, w, c)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_images(paths, shape, resize: bool = False) -> torch.Tensor:
    return torch.stack([load_image(p, shape, resize) for p in paths])


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """(C, H, W) in [0, 1] -> PNG, rounded to 8 bits."""
    from PIL import Image

    arr = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path, format="PNG")


def _crop_to_aspect(im, aspect: float):
    w, h = im.size
    if w / h > aspect:
        nw = round(h * aspect)
        left = (w - nw) // 2
        return im.crop((left, 0, left + nw, h))
    nh = round(w / aspect)
    top = (h - nh) // 2
    return im.crop((0, top, w, top + nh))
