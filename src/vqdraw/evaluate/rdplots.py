"""The rate–distortion figures of a :func:`vqdraw.evaluate.ratedistortion.evaluate` report.

    save_rd_plot   rd.png: PSNR against bits per image (log axis), VQ-DRAW against JPEG and WebP
    save_compare   compare.png: the same images through VQ-DRAW and through JPEG/WebP at a similar size
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from . import plots
from ..compress.codecs_classical import JPEG, WebP
from .ratedistortion import as_uint8, from_uint8

__all__ = ["save_compare", "save_rd_plot"]

_STYLE = {
    "VQ-DRAW": dict(color="tab:red", marker="o", ls="-"),
    "VQ-DRAW (.vqd file, one image)": dict(color="tab:red", marker=".", ls="--"),
    "VQ-DRAW (entropy-coded .vqd file, all images)": dict(color="tab:purple", marker="D", ls="-"),
    "JPEG": dict(color="tab:blue", marker="s", ls="-"),
    "JPEG (no headers)": dict(color="tab:blue", marker="s", ls="--", mfc="none"),
    "WebP": dict(color="tab:green", marker="^", ls="-"),
    "WebP (no headers)": dict(color="tab:green", marker="^", ls="--", mfc="none"),
}


def _title(report: dict) -> str:
    c, h, w = report["image_shape"]
    m = report["model"]
    source = f" of {report['source']}" if report.get("source") else ""
    return (f"VQ-DRAW (K={m['K']}, N={m['N']}) against JPEG and WebP: "
            f"{report['count']} images {w}x{h}x{c}{source}")


def save_rd_plot(report: dict, path: str | Path, title: str = "") -> Path:
    """PSNR (mean of per-image PSNR) against bits per image (log axis) for the curves in
    ``_STYLE``; lossless WebP, whose PSNR is infinite, as vertical lines at its sizes. The legend
    sits outside the axes, right of the data."""
    fig = plots.figure(9.0, 4.8)
    ax = fig.add_subplot()
    by_name = {c["name"]: c for c in report["curves"]}
    for name, style in _STYLE.items():
        if name not in by_name:
            continue
        r = by_name[name]["results"]
        pts = [(b, p) for b, p in zip(r["bits_per_image"], r["psnr-rgb"]) if p is not None]
        if pts:
            ax.plot(*zip(*pts), label=name, ms=4, lw=1.4, **style)
    for name, ls in (("WebP lossless", "-"), ("WebP lossless (no headers)", "--")):
        if name in by_name:
            bits = by_name[name]["results"]["bits_per_image"][0]
            ax.axvline(bits, color="tab:gray", ls=ls, lw=1, label=f"{name}\n({bits:.0f} bits, PSNR ∞)")
    ax.set_xscale("log")
    ax.set_xlabel("bits per image (log scale)")
    ax.set_ylabel("PSNR (dB, mean over images, 8-bit output)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_title(title or _title(report), fontsize=9)
    fig.tight_layout()
    return plots.save_figure(fig, path)


def _nearest(curve: dict, bits: float) -> int:
    """Index of the setting whose bits_per_image is nearest to ``bits`` (on a log scale)."""
    sizes = curve["results"]["bits_per_image"]
    return min(range(len(sizes)), key=lambda i: abs(math.log(sizes[i] / bits)))


def save_compare(
    report: dict, images: torch.Tensor, recon: torch.Tensor, path: str | Path, count: int = 8
) -> Path:
    """Side by side for ``count`` images spread evenly over the set: the original, VQ-DRAW's full code, and
    JPEG and WebP at the quality whose whole-file size is nearest to VQ-DRAW's one-image
    .vqd file. Each panel is labelled with its size measure and PSNR (mean over all evaluated images)."""
    by_name = {c["name"]: c for c in report["curves"]}
    vq = by_name["VQ-DRAW"]["results"]
    vq_file = by_name["VQ-DRAW (.vqd file, one image)"]["results"]["bits_per_image"][-1]
    k = min(count, images.shape[0])
    pick = torch.linspace(0, images.shape[0] - 1, k).round().long()
    x = images.detach().cpu().float()[pick]
    arrs = as_uint8(x)
    c = arrs.shape[3]

    def fmt(p):
        return "∞" if p is None else f"{p:.2f}"

    panels = [("original", x),
              (f"VQ-DRAW, {vq['stages'][-1]} stages\n{vq['bits_per_image'][-1]}-bit payload, "
               f"{vq_file:.0f}-bit .vqd file\nPSNR {fmt(vq['psnr-rgb'][-1])} dB", recon.cpu()[pick])]
    for codec in (JPEG(), WebP()):
        if codec.name not in by_name:
            continue
        r = by_name[codec.name]["results"]
        i = _nearest(by_name[codec.name], vq_file)
        q = r["quality"][i]
        out = np.stack([codec.decode(codec.encode(a, q), c) for a in arrs])
        panels.append((f"{codec.name} quality {q} (size nearest)\n{r['bits_per_image'][i]:.0f} bits per "
                       f"whole file\nPSNR {fmt(r['psnr-rgb'][i])} dB", from_uint8(out).float()))
    ncol = max(1, min(4, k))
    tiles = [plots.grid(imgs, ncol=ncol, scale=1) for _, imgs in panels]
    aspect = tiles[0].height / tiles[0].width
    fig = plots.figure(2.6 * len(panels), 2.6 * aspect + 1.0)
    axes = fig.subplots(1, len(panels))
    for ax, (label, _), tile in zip(np.atleast_1d(axes), panels, tiles):
        ax.imshow(np.asarray(tile), cmap="gray" if c == 1 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(label, fontsize=7)
        ax.axis("off")
    fig.suptitle(_title(report), fontsize=8)
    fig.tight_layout()
    return plots.save_figure(fig, path)
