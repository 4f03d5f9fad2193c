"""Pictures a person would rather look at: image grids, learning curves, stage-by-stage figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .io import atomic_write_bytes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] -> (B, H, W, C) uint8 (rounded)."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile images (B, C, H, W) in [0, 1] into one picture, `ncol` per row, on a grey background."""
    arr = to_uint8(images)
    b, h, w, c = arr.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(b)))
    nrow = max(1, math.ceil(b / ncol))
    canvas = np.full((pad + nrow * (h + pad), pad + ncol * (w + pad), c), 128, dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = arr[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_png(img: Image.Image, path: str | Path) -> Path:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_samples(model, path: str | Path, n: int = 100, seed: int = 0) -> Path:
    """A grid of `n` samples decoded from uniformly random codes."""
    g = torch.Generator().manual_seed(seed)
    return save_png(grid(model.sample(n, generator=g), scale=_scale(model)), path)


def save_reconstructions(model, images: torch.Tensor, path: str | Path) -> Path:
    """Pairs side by side: original, then its reconstruction (10 pairs per row)."""
    recon = model.reconstruct(images).cpu()
    pairs = torch.stack([images.cpu(), recon], 1).flatten(0, 1)  # (2B, C, H, W)
    return save_png(grid(pairs, ncol=min(20, 2 * len(images)), scale=_scale(model)), path)


def stage_canvases(model, images: torch.Tensor, max_stages: int = 20) -> torch.Tensor:
    """(B, 1 + S, C, H, W): the target, then the reconstruction after each of the first S stages."""
    s = min(max_stages, model.stages)
    codes = model.encode(images, stages=s)
    steps = [model.decode(codes, stages=i).cpu() for i in range(1, s + 1)]
    return torch.stack([images.cpu(), *steps], 1)


def save_stages(model, images: torch.Tensor, path: str | Path, max_stages: int = 20) -> Path:
    """Paper Figure 6: one row per image, the target first, then each stage's reconstruction."""
    rows = stage_canvases(model, images, max_stages)
    return save_png(grid(rows.flatten(0, 1), ncol=rows.shape[1], scale=_scale(model)), path)


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG (atomically) and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_curves(metrics: list[dict], path: str | Path, title: str = "") -> Path:
    """Paper Figure 4: test (and train) MSE on a log axis, code entropy on a twin axis."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    train = [(m["step"], m["final"]) for m in metrics if "final" in m]
    test = [(m["step"], m["test_mse"]) for m in metrics if "test_mse" in m]
    ent = [(m["step"], m["entropy"]) for m in metrics if "entropy" in m]
    if train:
        ax.plot(*zip(*train), color="tab:blue", alpha=0.5, lw=1, label="train MSE (final stage)")
    if test:
        ax.plot(*zip(*test), color="tab:blue", lw=2, marker="o", ms=3, label="test MSE")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("reconstruction MSE (normalised)")
    ax2 = ax.twinx()
    if ent:
        ax2.plot(*zip(*ent), color="tab:orange", lw=1, label="entropy (nats / mini-batch)")
    ax2.set_ylabel("code entropy (nats)", color="tab:orange")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _scale(model) -> int:
    """Upscale small images so a grid is readable."""
    return 2 if model.config.image_shape[1] <= 32 else 1
