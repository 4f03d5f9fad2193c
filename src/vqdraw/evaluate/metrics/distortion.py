"""Distortion between images and their reconstructions: MSE, PSNR, SSIM, defined once.

All take images (B, C, H, W) with values in [0, ``peak``] (default 1) and work in float64:

    mse(x, y)         (B,)  mean squared error of each image over its pixels and channels
    psnr(x, y)        (B,)  10·log10(peak² / mse) of each image; +inf where the images are equal
    psnr_from_mse(m)  float 10·log10(peak² / m) of one mse value; +inf for 0
    ssim(x, y)        (B,)  single-scale SSIM of each image (Wang et al. 2004), or None when the
                            images are smaller than the 11x11 window

Two ways of summarising PSNR over a set differ, and reports name which one they give:

* the mean of the per-image PSNRs, ``psnr(x, y).mean()``: what CompressAI's ``eval_model``
  reports as ``psnr-rgb`` (it averages each image's PSNR), and what this project's RD JSON
  reports under that key;
* the PSNR of the mean MSE, ``psnr_from_mse(mse(x, y).mean())``: the training logs' ``test_psnr``
  and the RD JSON's ``psnr-of-mean-mse``. It is lower (PSNR is concave in the MSE), and is
  dominated by the worst images.
"""

from __future__ import annotations

import math

import torch

from ...errors import InputError

__all__ = ["SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW", "mse", "psnr", "psnr_from_mse", "ssim"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _pair(x: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape or x.dim() != 4:
        raise InputError(f"{what} needs two (B, C, H, W) tensors of one shape, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    return x.detach().cpu().double(), y.detach().cpu().double()


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image pair: (B, C, H, W) twice -> (B,) float64."""
    x, y = _pair(x, y, "mse")
    return (x - y).pow(2).flatten(1).mean(1)


def psnr_from_mse(value: float, peak: float = 1.0) -> float:
    """``10·log10(peak² / value)`` in dB; ``math.inf`` when ``value`` is 0 (identical images)."""
    if value < 0:
        raise InputError(f"an mse cannot be negative, got {value}")
    return math.inf if value == 0 else 10 * math.log10(peak * peak / value)


def psnr(x: torch.Tensor, y: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """PSNR of each image pair in dB: (B, C, H, W) twice -> (B,) float64, +inf for equal images.

    The mean of this over a set is CompressAI's ``psnr-rgb``.
    """
    return 10 * torch.log10(peak * peak / mse(x, y))  # 1/0 -> inf, log10(inf) -> inf


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, y: torch.Tensor, peak: float = 1.0) -> torch.Tensor | None:
    """Single-scale SSIM of each image pair: x, y (B, C, H, W) in [0, peak] -> (B,) float64.

    Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range ``peak``, population
    (co)variances, the mean of the SSIM map over the "valid" window positions and the channels.
    ``None`` when the images are smaller than the window.
    """
    x, y = _pair(x, y, "ssim")
    b, c, h, w = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        return None
    win = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA).expand(c, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, win, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.mean(dim=(1, 2, 3))
