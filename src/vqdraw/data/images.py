"""Image files, PIL images and arrays <-> tensors in [0, 1], fitted to what a model expects.

One path from a picture to a model's input, used by the CLI (``--fit``), by Python callers
(:func:`to_tensor`) and by ``folder:`` datasets, so that a model sees the same pixels at
training and at encoding time:

    open_image(path)          decode the file, apply its EXIF orientation
    to_8bit(im)               16-bit ("I;16", "I") and float ("F") images scaled to 8 bits
    flatten_alpha(im)         transparency composited onto ``background`` (white by default)
    fit_image(im, shape)      channels converted (grey <-> RGB), centre-crop to the aspect ratio,
                              resize with ``RESAMPLE`` (bicubic): (H, W, C) uint8

Transparent images are composited onto white: transparent PNGs are mostly drawings and icons
meant to be seen on a white page. A model trained on light strokes on black (MNIST) then sees
dark-on-light input; :func:`polarity_warning` says so, and ``background="black"`` (or any grey
level in [0, 1]) changes the choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import check_input_file
from .walk import files_under

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
RESAMPLE = "BICUBIC"
"""Pillow's filter for every resize of an input image (also the CelebA reader's)."""
_BACKGROUNDS = {"white": 1.0, "black": 0.0}


def expand_image_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders expanded to the images inside them (sorted, recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [q for q in files_under(p) if q.suffix.lower() in IMAGE_SUFFIXES]
        elif p.exists():
            check_input_file(p, "image file")  # a regular file: Pillow would block on a FIFO
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    if not out:
        raise InputError("no image files found in " + ", ".join(map(str, paths)))
    return out


def open_image(source):
    """A file (path or file object) decoded as a PIL image, its EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, (str, Path)):
        check_input_file(source, "image file")
    try:
        with Image.open(source) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:  # Pillow's limit against decompression bombs
        raise InputError(f"{source}: image too large ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{source}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def to_8bit(im):
    """16-bit and 32-bit images as 8-bit "L": "I;16*" scaled by 255/65535; "I" likewise when a
    value exceeds 255 (16-bit data), else taken as 8-bit values; "F" as [0, 1] when its maximum
    is at most 1, else as [0, 255]. Other modes are returned unchanged."""
    from PIL import Image

    if not (im.mode.startswith("I") or im.mode == "F"):
        return im
    arr = np.asarray(im, dtype=np.float64)
    if arr.size and not np.isfinite(arr).all():
        raise InputError(f"{getattr(im, 'filename', '') or 'image'}: holds NaN or infinite pixel values")
    if im.mode.startswith("I;16") or (im.mode == "I" and arr.size and arr.max() > 255):
        arr = arr * (255.0 / 65535.0)
    elif im.mode == "F" and arr.size and arr.max() <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _background_level(background) -> int:
    level = _BACKGROUNDS.get(background, background) if isinstance(background, str) else background
    if isinstance(level, str) or not 0.0 <= float(level) <= 1.0:
        raise InputError(f"background must be 'white', 'black' or a grey level in [0, 1], not {background!r}")
    return round(float(level) * 255)


def has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info)


def flatten_alpha(im, background="white"):
    """An image with transparency (RGBA, LA, a palette with a transparent entry) composited onto
    a plain ``background`` ("white", "black" or a grey level in [0, 1]); "RGB" or "L" out.
    Images without transparency are returned unchanged."""
    from PIL import Image

    if not has_alpha(im):
        return im
    grey = im.mode in ("LA", "La")
    rgba = im.convert("RGBA")
    level = _background_level(background)
    out = Image.alpha_composite(Image.new("RGBA", rgba.size, (level, level, level, 255)), rgba).convert("RGB")
    return out.convert("L") if grey else out


def crop_to_aspect(im, width: int, height: int):
    """Centre-crop a PIL image to the aspect ratio width:height (at least one pixel)."""
    w, h = im.size
    if w * height > h * width:  # too wide: trim left and right
        cw, ch = max(1, round(h * width / height)), h
    else:  # too tall: trim top and bottom
        cw, ch = w, max(1, round(w * height / width))
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def fit_image(im, shape: tuple[int, int, int], background="white") -> np.ndarray:
    """A PIL image fitted to ``shape`` = (C, H, W), C 1 or 3: (H, W, C) uint8.

    16-bit images scaled to 8 bits, transparency composited onto ``background``, channels
    converted (grey <-> RGB), then, if the size differs, centre-cropped to the aspect ratio and
    resized with :data:`RESAMPLE`.
    """
    from PIL import Image

    c, h, w = shape
    if c not in (1, 3):
        raise InputError(f"images can be fitted to 1 or 3 channels, not {c}")
    im = flatten_alpha(to_8bit(im), background).convert("L" if c == 1 else "RGB")
    if im.size != (w, h):
        im = crop_to_aspect(im, w, h).resize((w, h), getattr(Image.Resampling, RESAMPLE))
    return np.asarray(im, dtype=np.uint8).reshape(h, w, c)


def load_image(path: str | Path, shape: tuple[int, int, int], fit: bool = False, background="white",
               *, resize: bool | None = None) -> torch.Tensor:
    """One image file as (C, H, W) float in [0, 1] for a model taking ``shape`` = (C, H, W).

    Channels are always converted (and transparency composited onto ``background``). A different
    size is an :class:`InputError` unless ``fit``, which centre-crops and resizes (:func:`fit_image`).
    ``resize`` is the old name of ``fit``.
    """
    fit = fit if resize is None else resize
    c, h, w = shape
    im = open_image(path)
    if im.size != (w, h) and not fit:
        raise InputError(f"{path}: image is {im.size[0]}x{im.size[1]} but the model takes {w}x{h}; "
                         "pass --fit to crop and resize it")
    return _tensor(fit_image(im, shape, background))


def load_images(paths, shape, fit: bool = False, background="white", *, resize: bool | None = None) -> torch.Tensor:
    """Several files (see :func:`load_image`) as one (B, C, H, W) batch."""
    return torch.stack([load_image(p, shape, fit, background, resize=resize) for p in paths])


def _tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> (C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0).contiguous()


def _array_to_pil(arr: np.ndarray):
    """An (H, W) or (H, W, C) array (C 1, 2, 3 or 4; uint8, uint16, bool or floats in [0, 1]) as
    an 8-bit PIL image of mode L, LA, RGB or RGBA."""
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise InputError(f"an image array must be (H, W) or (H, W, C) with C in 1..4, got shape {a.shape}")
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.uint16:
        u8 = np.rint(a * (255.0 / 65535.0)).astype(np.uint8)
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise InputError("a float image array must hold values in [0, 1]; divide 0..255 values by 255")
        u8 = np.rint(a * 255.0).astype(np.uint8)
    else:
        raise InputError(f"image arrays must be uint8, uint16, bool or float in [0, 1], not {a.dtype}")
    mode = {2: "L", 3: {2: "LA", 3: "RGB", 4: "RGBA"}.get(a.shape[-1])}[a.ndim]
    return Image.fromarray(np.ascontiguousarray(u8), mode=mode)


def to_tensor(source, shape: tuple[int, int, int] | None = None, background="white") -> torch.Tensor:
    """A picture as a (C, H, W) float32 tensor in [0, 1], ready for ``model.encode(x[None])``.

    ``source``: a path, a PIL image, or a numpy array (H, W) or (H, W, C) with C = 1, 2 (grey +
    alpha), 3 or 4 (RGB + alpha), of dtype uint8 (0..255), uint16 (0..65535), bool, or float with
    values in [0, 1] (others are refused).

    ``shape`` = (C, H, W), e.g. ``model.config.data_shape``: the picture is fitted to it
    (:func:`fit_image`: 16-bit scaled, transparency composited onto ``background``, channels
    converted, centre-cropped and resized bicubically). ``None`` keeps the picture's size, with
    1 channel for a grey picture and 3 otherwise. Values pass through 8 bits either way.
    """
    from PIL import Image

    if isinstance(source, (str, Path)):
        im = open_image(source)
    elif isinstance(source, Image.Image):
        im = source
    elif isinstance(source, np.ndarray):
        im = _array_to_pil(source)
    else:
        raise InputError(f"to_tensor takes a path, a PIL image or a numpy array, not {type(source).__name__}")
    if shape is None:
        grey = im.mode in ("1", "L", "LA", "La", "F") or im.mode.startswith("I")
        if im.mode == "P":
            rgb = im.convert("RGB")
            grey = rgb.getchannel(0).tobytes() == rgb.getchannel(1).tobytes() == rgb.getchannel(2).tobytes()
        shape = (1 if grey else 3, im.height, im.width)
    return _tensor(fit_image(im, tuple(shape), background))


def polarity_warning(images: torch.Tensor, mean, threshold: float = 0.4, names=None) -> str | None:
    """A sentence for a person when the images' brightness is far from the model's training data
    (``mean``: ``model.config.mean``, per channel in [0, 1]), else None.

    Each image's mean brightness (over its pixels and channels) is compared with the mean of
    ``mean``; an image is flagged when they differ by more than ``threshold``. The usual cause is
    inverted polarity: dark strokes on a light page given to a model trained on light strokes on
    black (MNIST), or the reverse. ``names`` (one per image, e.g. the files' paths) names the
    flagged images in the sentence (the first five). The library only returns the text; the CLI prints it.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        return None
    target = float(np.mean(mean))
    seen = images.detach().float().flatten(1).mean(1).cpu()
    far = (seen - target).abs() > threshold
    if not far.any():
        return None
    flagged = seen[far]
    level = flagged.mean().item()
    hint = ("light pictures on a dark background" if target < 0.5 else "dark pictures on a light background")
    inverted = abs((1 - level) - target) < abs(level - target)
    which = ""
    if names is not None:
        flagged_names = [str(names[i]) for i in far.nonzero().flatten().tolist()]
        more = len(flagged_names) - 5
        which = f" ({', '.join(flagged_names[:5])}{f' and {more} more' if more > 0 else ''})"
    return (f"{int(far.sum())} of {len(seen)} image(s){which} have a mean brightness of {level:.2f} but the model's "
            f"training data average {target:.2f} ({hint}); results will be poor"
            + ("; the images may need inverting (1 - x)" if inverted else ""))


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """(C, H, W) in [0, 1] -> PNG, rounded to 8 bits."""
    from PIL import Image

    arr = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path, format="PNG")
