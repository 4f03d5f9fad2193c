"""Rate–distortion curves: VQ-DRAW's code prefixes against JPEG and WebP on the same images.

    images (B, C, H, W) in [0, 1]
      |-- VQ-DRAW: for n = 1..N the n-stage codes -> .vqd bytes -> decode
      |-- JPEG, WebP (vqdraw.compress.codecs_classical) at each quality, and lossless WebP: one file per image
      v
    per setting: bits per image (several definitions, below), MSE, PSNR, SSIM, times  ->  curves

The codecs live in :mod:`vqdraw.compress.codecs_classical`, the distortion measures in
:mod:`vqdraw.evaluate.metrics.distortion`, the figures in :mod:`vqdraw.evaluate.rdplots`. Every curve uses
CompressAI's JSON layout, ``{"name", "description", "results": {"bpp": [...], "psnr-rgb": [...],
...}}``, one entry per setting. Definitions (docs/compression.md has them too):

* Distortion is measured on what a user gets back: every reconstruction is rounded to 8 bits
  (VQ-DRAW's as ``vqdraw decode`` writes its PNGs, JPEG and WebP decoded by Pillow) and compared
  with the original images as given. ``mse`` is the mean squared error over all pixels, channels
  and images (values in [0, 1]).
* ``psnr-rgb`` is the mean over the images of each image's PSNR, ``10·log10(1 / mse_i)`` (peak 1),
  as CompressAI's ``eval_model`` averages it; ``null`` when an image is reproduced exactly (its
  PSNR is infinite). ``psnr-of-mean-mse`` is ``10·log10(1 / mse)`` of the mean mse (lower; ``null``
  when lossless). The name ``psnr-rgb`` follows CompressAI even for grey images.
* ``ssim``: single-scale SSIM (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, data range 1, over the window positions that fit inside the image
  ("valid"), averaged over channels then images; ``null`` for images smaller than 11x11.
  ``ms-ssim-rgb`` is not reported: MS-SSIM needs four 2x downsamplings of an 11x11 window
  (images of at least 176 pixels a side), which small images such as 28x28 do not have.
* ``encoding_time`` / ``decoding_time`` (CompressAI's keys): wall-clock seconds per image, the
  whole set's time divided by the number of images. VQ-DRAW: images -> codes -> .vqd bytes, and
  .vqd bytes -> images, in batches on the model's device; JPEG/WebP: one Pillow call per image.
* ``bits_per_image``: the size measure the curve is named for, averaged over the images;
  ``bpp = bits_per_image / (H·W)``.

  - VQ-DRAW: the payload ``bits_per_image(K, n) = ceil(n·log2 K)``; ``VQ-DRAW (.vqd file, one
    image)``: the length of a .vqd file holding one image (40-byte overhead included);
    ``VQ-DRAW (.vqd file, all images)``: one .vqd file holding all the images, its length
    divided by their number.
  - JPEG / WebP: whole files as Pillow writes them, one per image. ``(no headers)``: the payload
    only (see :mod:`vqdraw.compress.codecs_classical`).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from ..compress.bitstream import bits_per_image, header_size
from ..compress.codec import compress_codes, decompress, encode_images, read_file
from ..compress.codecs_classical import JPEG, JPEG_QUALITIES, WEBP_QUALITIES, WebP
from ..core.inputs import check_policy
from ..core.stageloop import Beam, Greedy
from ..errors import InputError
from .metrics import distortion as dm

__all__ = ["as_uint8", "codec_curves", "distortion", "evaluate", "from_uint8", "sweep", "vqdraw_curves",
           "write_report"]

_MEASURES = ("mse", "psnr-rgb", "psnr-of-mean-mse", "ssim")


# ---------------------------------------------------------------------------------------------
# Distortion of 8-bit reconstructions


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] -> (B, H, W, C) uint8, rounded as PNG writers do."""
    x = images.detach().cpu().double().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float64 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).double() / 255.0


def _exact(images: torch.Tensor) -> torch.Tensor:
    """Images as float64; images that are 8-bit values stored as float32 (k/255, as datasets and
    image files give) are snapped back onto the 8-bit grid, so that a lossless codec scores
    mse 0 rather than float32 rounding noise."""
    x = images.detach().cpu().double()
    k = (x * 255).round()
    if x.numel() and (x * 255 - k).abs().max().item() < 1e-4:
        return k / 255.0
    return x


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def distortion(original: torch.Tensor, reconstruction_uint8: np.ndarray) -> dict:
    """``mse``, ``psnr-rgb`` (mean of per-image PSNR), ``psnr-of-mean-mse`` and ``ssim`` of 8-bit
    reconstructions (B, H, W, C) against the original images (B, C, H, W) in [0, 1]; an infinite
    PSNR is ``None`` (definitions in the module docstring)."""
    x = _exact(original)
    y = from_uint8(reconstruction_uint8)
    per_image = dm.mse(x, y)
    mse = per_image.mean().item()
    s = dm.ssim(x, y)
    return {
        "mse": mse,
        "psnr-rgb": _finite(dm.psnr(x, y).mean().item()),
        "psnr-of-mean-mse": _finite(dm.psnr_from_mse(mse)),
        "ssim": None if s is None else s.mean().item(),
    }


# ---------------------------------------------------------------------------------------------
# Curves


def _curve(name: str, description: str, hw: int, results: dict) -> dict:
    bits = results["bits_per_image"]
    ordered = {"bpp": [b / hw for b in bits], **results}
    return {"name": name, "description": description, "results": ordered}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def vqdraw_curves(
    model, images: torch.Tensor, batch_size: int = 256, beam: int | None = None, prior=None, *, policy=None
) -> tuple[list[dict], torch.Tensor]:
    """VQ-DRAW at every code prefix n = 1..N: three curves (payload, one-image .vqd file,
    all-images .vqd file) and the full-code reconstructions (B, C, H, W) on the CPU. With
    ``prior`` (:mod:`vqdraw.prior`) a fourth: one entropy-coded .vqd file (version 3) of all
    images, decoded back (the codes must come back unchanged), beside the prior's cross-entropy.

    The images go through the real pipeline, timed: encode with n stages -> .vqd bytes ->
    :func:`decompress`, each stage choosing by ``policy`` (greedy by default; ``beam=W`` is the
    deprecated spelling of ``policy=Beam(W)``). (Greedy n-stage codes are the first n of the N-stage
    codes, since greedy choices do not look ahead; they are still encoded once per n, so that
    ``encoding_time`` is what n stages cost.)
    """
    policy = check_policy(policy, beam, "vqdraw_curves")
    width = policy.width if isinstance(policy, Beam) else 1
    count = images.shape[0]
    if count == 0:
        raise InputError("no images to evaluate")
    c, h, w = model.config.data_shape
    K, N = model.options, model.stages
    exact = _exact(images)

    def encode(stages: int) -> tuple[torch.Tensor, bytes, float]:
        start = time.perf_counter()
        codes = torch.cat([
            encode_images(model, images[i : i + batch_size].to(model.device), stages=stages, policy=policy)
            for i in range(0, count, batch_size)
        ])
        data = compress_codes(model, codes)
        _sync(model.device)
        return codes, data, time.perf_counter() - start

    rows: dict[str, list] = {k: [] for k in (
        "stages", "payload", "one", "all", "all_bytes", *_MEASURES, "mse_unrounded", "encoding_time",
        "decoding_time", "coded_all", "coded_bytes", "coded_payload", "cross_entropy")}
    recon_full = None
    for n in range(1, N + 1):
        codes, data, enc_seconds = encode(n)
        start = time.perf_counter()
        recon, vqd = decompress(model, data, batch_size=batch_size)
        _sync(model.device)
        dec_seconds = time.perf_counter() - start
        assert vqd.count == count and vqd.stages == n
        d = distortion(images, as_uint8(recon))
        rows["stages"].append(n)
        rows["payload"].append(bits_per_image(K, n))
        rows["one"].append(8 * len(compress_codes(model, codes[:1])))
        rows["all"].append(8 * len(data) / count)
        rows["all_bytes"].append(len(data))
        for key in _MEASURES:
            rows[key].append(d[key])
        rows["mse_unrounded"].append((exact - recon.double()).pow(2).mean().item())
        rows["encoding_time"].append(enc_seconds / count)
        rows["decoding_time"].append(dec_seconds / count)
        if prior is not None:
            coded = compress_codes(model, codes, prior=prior)
            back = read_file(model, coded, prior)
            if not np.array_equal(back.codes, vqd.codes):
                raise RuntimeError("entropy-coded codes did not decode to the fixed-length ones")
            rows["coded_all"].append(8 * len(coded) / count)
            rows["coded_bytes"].append(len(coded))
            rows["coded_payload"].append(8 * back.payload_bytes / count)
            rows["cross_entropy"].append(float(-prior.log_prob(codes).mean()) / math.log(2))
        if n == N:
            recon_full = recon
    common = {k: rows[k] for k in ("stages", *_MEASURES, "mse_unrounded", "encoding_time", "decoding_time")}
    how = (f"beam search, width {width}" if width > 1 else "greedy" if policy is None or isinstance(policy, (Beam, Greedy))
           else f"policy {type(policy).__name__}")
    curves = [
        _curve("VQ-DRAW", f"VQ-DRAW code prefixes n = 1..{N} (K = {K}, {how}); size: the payload, "
               "ceil(n*log2 K) bits per image, no file overhead", h * w,
               {"bits_per_image": rows["payload"], **common,
                "bits_per_image_file_one_image": rows["one"],
                "bits_per_image_file_all_images": rows["all"]}),
        _curve("VQ-DRAW (.vqd file, one image)", "size: a whole .vqd file holding one image "
               f"({header_size()} bytes of header and checksum + the payload padded to a byte)", h * w,
               {"bits_per_image": rows["one"], "bytes_per_file": [b // 8 for b in rows["one"]], **common}),
        _curve("VQ-DRAW (.vqd file, all images)", f"size: one .vqd file holding all {count} images, "
               "its length in bits divided by the number of images", h * w,
               {"bits_per_image": rows["all"], "bytes_total": rows["all_bytes"], **common}),
    ]
    if prior is not None:
        curves.append(_curve(
            "VQ-DRAW (entropy-coded .vqd file, all images)", f"size: one .vqd file (version 3) holding all {count} "
            "images, the codes range-coded with the learned prior, its length in bits divided by the number of "
            "images; payload_bits_per_image: without the header and checksum; cross_entropy_bits: the prior's "
            "-log2 p(codes), the size the payload approaches", h * w,
            {"bits_per_image": rows["coded_all"], "bytes_total": rows["coded_bytes"],
             "payload_bits_per_image": rows["coded_payload"], "cross_entropy_bits": rows["cross_entropy"],
             **common}))
    return curves, recon_full


def sweep(codec, images: torch.Tensor, qualities) -> tuple[dict, dict]:
    """One codec at each quality, one file per image: the results of the whole files and of their
    payloads only (same distortion and times, other sizes)."""
    arrs = as_uint8(images)
    count, c = arrs.shape[0], arrs.shape[3]
    whole = {k: [] for k in ("quality", "bytes_total", "bits_per_image", *_MEASURES, "encoding_time",
                             "decoding_time")}
    bare = {k: [] for k in whole}
    for q in qualities:
        start = time.perf_counter()
        files = [codec.encode(a, q) for a in arrs]
        enc_seconds = time.perf_counter() - start
        start = time.perf_counter()
        recon = np.stack([codec.decode(f, c) for f in files])
        dec_seconds = time.perf_counter() - start
        d = distortion(images, recon)
        total = sum(len(f) for f in files)
        payload = sum(codec.payload_size(f) for f in files)
        for row, size in ((whole, total), (bare, payload)):
            row["quality"].append(q)
            row["bytes_total"].append(size)
            row["bits_per_image"].append(8 * size / count)
            for key in _MEASURES:
                row[key].append(d[key])
            row["encoding_time"].append(enc_seconds / count)
            row["decoding_time"].append(dec_seconds / count)
    return whole, bare


def codec_curves(
    images: torch.Tensor,
    jpeg_qualities=JPEG_QUALITIES,
    webp_qualities=WEBP_QUALITIES,
    webp_lossless: bool = True,
) -> list[dict]:
    """JPEG and WebP curves for images (B, C, H, W) in [0, 1] (rounded to 8 bits first), each
    image its own file: ``JPEG``, ``JPEG (no headers)``, ``WebP``, ``WebP (no headers)`` and,
    with ``webp_lossless``, ``WebP lossless`` and ``WebP lossless (no headers)``."""
    count, _, h, w = images.shape
    if count == 0:
        raise InputError("no images to evaluate")
    each = f"one file per image, sizes averaged over {count} images"
    headers = {
        "JPEG": "entropy-coded scan data only (no SOI/APPn/DQT/SOF/DHT/SOS segments, no EOI)",
        "WebP": "VP8/VP8L/ALPH chunk data only (no RIFF/WEBP header, chunk headers, padding or VP8X)",
        "WebP lossless": "VP8L chunk data only",
    }
    runs = [(JPEG(), jpeg_qualities, "whole .jpg files"), (WebP(), webp_qualities, "whole lossy .webp files")]
    if webp_lossless:
        lossless = WebP(lossless=True)
        runs.append((lossless, lossless.qualities, "whole lossless .webp files"))
    curves = []
    for codec, qualities, what in runs:
        whole, bare = sweep(codec, images, list(qualities))
        curves += [
            _curve(codec.name, f"{what} ({codec.describe()}); {each}", h * w, whole),
            _curve(f"{codec.name} (no headers)", f"{headers[codec.name]} of the same files; {each}", h * w, bare),
        ]
    return curves


def evaluate(
    model,
    images: torch.Tensor,
    *,
    jpeg_qualities=JPEG_QUALITIES,
    webp_qualities=WEBP_QUALITIES,
    webp_lossless: bool = True,
    batch_size: int = 256,
    beam: int | None = None,
    source: str = "",
    prior=None,
    policy=None,
) -> tuple[dict, torch.Tensor]:
    """The rate–distortion report for ``images`` (B, C, H, W) in [0, 1]: a dict with the
    settings and definitions and ``curves`` (a list of CompressAI-style curves), plus the
    VQ-DRAW full-code reconstructions (B, C, H, W) on the CPU. ``policy`` as in
    :func:`vqdraw_curves` (``beam=W``: deprecated)."""
    policy = check_policy(policy, beam, "evaluate")
    images = images.detach().cpu().float()
    c, h, w = model.config.data_shape
    vq, recon = vqdraw_curves(model, images, batch_size=batch_size, prior=prior, policy=policy)
    curves = vq + codec_curves(images, jpeg_qualities, webp_qualities, webp_lossless)
    report = {
        "format": "vqdraw-rd",
        "version": 2,
        "source": source,
        "count": int(images.shape[0]),
        "image_shape": [c, h, w],
        "model": {"fingerprint": model.fingerprint().hex(), "K": model.options, "N": model.stages,
                  "beam": policy.width if isinstance(policy, Beam) else 1, "device": str(model.device)},
        "definitions": {
            "bits_per_image": "the curve's size measure in bits, averaged over the images (see description)",
            "bpp": f"bits_per_image / (H*W) = bits_per_image / {h * w}",
            "mse": "mean squared error over all pixels, channels and images; values in [0, 1]; "
                   "reconstructions rounded to 8 bits",
            "psnr-rgb": "mean over the images of each image's PSNR 10*log10(1/mse_i) (peak 1), as CompressAI's "
                        "eval_model; null when an image is reproduced exactly (infinite PSNR)",
            "psnr-of-mean-mse": "10*log10(1/mse) of the mean mse (peak 1); null when mse is 0 (lossless)",
            "ssim": f"single-scale SSIM, {dm.SSIM_WINDOW}x{dm.SSIM_WINDOW} Gaussian window, sigma {dm.SSIM_SIGMA}, "
                    "K1 0.01, K2 0.03, data range 1, valid window positions, mean over channels then images",
            "ms-ssim-rgb": "not reported: MS-SSIM is undefined for images smaller than 176x176",
            "mse_unrounded": "VQ-DRAW only: the mse of the decoder's float output before rounding to 8 bits",
            "encoding_time": "seconds per image (wall clock for the whole set / images): VQ-DRAW images -> "
                             ".vqd bytes on the model's device; JPEG/WebP one Pillow encode per image",
            "decoding_time": "seconds per image: VQ-DRAW .vqd bytes -> images; JPEG/WebP one Pillow decode "
                             "per image",
        },
        "curves": curves,
    }
    return report, recon


# ---------------------------------------------------------------------------------------------
# Output files


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_report(report: dict, out_dir: str | Path) -> Path:
    """``rd.json`` (the whole report) and ``curves/<name>.json`` (one CompressAI-style curve per
    file, for tools that read one file per method) in ``out_dir``; returns rd.json's path."""
    from ..io import atomic_write_bytes

    out = Path(out_dir)
    for curve in report["curves"]:
        atomic_write_bytes(out / "curves" / f"{_slug(curve['name'])}.json",
                           (json.dumps(curve, indent=2) + "\n").encode())
    path = out / "rd.json"
    atomic_write_bytes(path, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
    return path
