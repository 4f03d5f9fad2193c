"""Rate–distortion: VQ-DRAW's code prefixes against JPEG and WebP on the same images.

    images (B, C, H, W) in [0, 1]
      |-- VQ-DRAW: codes (B, N); for n = 1..N the first n codes -> .vqd bytes -> decode
      |-- JPEG (Pillow/libjpeg) at each quality: one .jpg per image
      |-- WebP (Pillow/libwebp) at each quality, and lossless: one .webp per image
      v
    per setting: bits per image (several definitions, below), MSE, PSNR, SSIM  ->  curves

Every curve uses CompressAI's JSON layout, ``{"name", "description", "results": {"bpp": [...],
"psnr-rgb": [...], ...}}``, one entry per setting. Definitions (docs/compression.md has them too):

* Distortion is measured on what a user gets back: every reconstruction is rounded to 8 bits
  (VQ-DRAW's as ``vqdraw decode`` writes its PNGs, JPEG and WebP decoded by Pillow) and compared
  with the original images as given. ``mse`` is the mean squared error over all pixels, channels
  and images (values in [0, 1]); ``psnr-rgb`` is ``10·log10(1 / mse)`` of that mean (peak 1;
  ``null`` when the mse is 0, i.e. lossless). The name follows CompressAI even for grey images.
* ``ssim``: single-scale SSIM (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, data range 1, over the window positions that fit inside the image
  ("valid"), averaged over channels then images; ``null`` for images smaller than 11x11.
  ``ms-ssim-rgb`` is not reported: MS-SSIM needs four 2x downsamplings of an 11x11 window
  (images of at least 176 pixels a side), which small images such as 28x28 do not have.
* ``bits_per_image``: the size measure the curve is named for, averaged over the images;
  ``bpp = bits_per_image / (H·W)``.

  - VQ-DRAW: the payload ``bits_per_image(K, n) = ceil(n·log2 K)``; ``VQ-DRAW (.vqd file, one
    image)``: the length of a .vqd file holding one image (40-byte overhead included);
    ``VQ-DRAW (.vqd file, all images)``: one .vqd file holding all the images, its length
    divided by their number.
  - JPEG / WebP: whole files as Pillow writes them, one per image. ``(no headers)``: JPEG's
    entropy-coded scan data only (every byte after each SOS segment up to the next marker that
    is not a restart marker; the SOI, APPn, DQT, SOF, DHT, SOS segments and EOI are left out),
    WebP's image chunk payloads only (the data of the ``VP8 ``/``VP8L`` chunk, plus ``ALPH``
    if any, without the 12-byte RIFF/WEBP header, 8-byte chunk headers, padding and ``VP8X``).
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import torch

from .bitstream import bits_per_image, header_size
from .codec import compress_codes, decompress, encode_images
from .errors import InputError

__all__ = [
    "JPEG_QUALITIES",
    "JPEG_SETTINGS",
    "SSIM_WINDOW",
    "SSIM_SIGMA",
    "WEBP_LOSSLESS_SETTINGS",
    "WEBP_QUALITIES",
    "WEBP_SETTINGS",
    "codec_curves",
    "decode_image_bytes",
    "distortion",
    "encode_jpeg",
    "encode_webp",
    "evaluate",
    "jpeg_payload_size",
    "save_compare",
    "save_rd_plot",
    "ssim",
    "vqdraw_curves",
    "webp_payload_size",
    "write_report",
]

JPEG_QUALITIES = (1, 2, 3, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
JPEG_SETTINGS = {"optimize": True}  # baseline JPEG with Huffman tables optimised per image; Pillow's subsampling
WEBP_SETTINGS = {"method": 6}  # libwebp's slowest, smallest setting
WEBP_LOSSLESS_SETTINGS = {"lossless": True, "quality": 100, "method": 6}
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


# ---------------------------------------------------------------------------------------------
# Distortion


def _as_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] -> (B, H, W, C) uint8, rounded as PNG writers do."""
    x = images.detach().cpu().double().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _from_uint8(arr: np.ndarray) -> torch.Tensor:
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


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """Single-scale SSIM of each image pair: x, y (B, C, H, W) in [0, 1] -> (B,) float64.

    Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, population
    (co)variances, the mean of the SSIM map over the "valid" window positions and the channels.
    ``None`` when the images are smaller than the window.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise InputError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    b, c, h, w = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        return None
    x, y = x.detach().cpu().double(), y.detach().cpu().double()
    win = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA).expand(c, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, win, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = _SSIM_K1**2, _SSIM_K2**2
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.mean(dim=(1, 2, 3))


def distortion(original: torch.Tensor, reconstruction_uint8: np.ndarray) -> dict:
    """``mse``, ``psnr-rgb`` and ``ssim`` (definitions in the module docstring) of 8-bit
    reconstructions (B, H, W, C) against the original images (B, C, H, W) in [0, 1]."""
    x = _exact(original)
    y = _from_uint8(reconstruction_uint8)
    mse = (x - y).pow(2).mean().item()
    s = ssim(x, y)
    return {
        "mse": mse,
        "psnr-rgb": None if mse <= 0 else 10 * math.log10(1.0 / mse),
        "ssim": None if s is None else s.mean().item(),
    }


# ---------------------------------------------------------------------------------------------
# JPEG and WebP through Pillow


def _pil(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def encode_jpeg(arr: np.ndarray, quality: int) -> bytes:
    """One image (H, W, C) uint8 as a JPEG file (Pillow, ``JPEG_SETTINGS``); grey images stay grey."""
    buf = io.BytesIO()
    _pil(arr).save(buf, format="JPEG", quality=int(quality), **JPEG_SETTINGS)
    return buf.getvalue()


def encode_webp(arr: np.ndarray, quality: int | None = None, lossless: bool = False) -> bytes:
    """One image (H, W, C) uint8 as a WebP file: lossy at ``quality`` (``WEBP_SETTINGS``), or lossless."""
    buf = io.BytesIO()
    if lossless:
        _pil(arr).save(buf, format="WEBP", **WEBP_LOSSLESS_SETTINGS)
    else:
        _pil(arr).save(buf, format="WEBP", quality=int(quality), **WEBP_SETTINGS)
    return buf.getvalue()


def decode_image_bytes(data: bytes, channels: int) -> np.ndarray:
    """A JPEG/WebP/PNG file's image as (H, W, channels) uint8 (grey or RGB, as the original)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(im, dtype=np.uint8)
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def jpeg_payload_size(data: bytes) -> int:
    """Bytes of entropy-coded scan data in a JPEG file: the file without its marker segments.

    Walks the markers from SOI; for every SOS segment counts the bytes after the segment up to
    the next marker other than RST0..7 (stuffed ``FF 00`` bytes and restart markers count as
    scan data). Raises ``ValueError`` for bytes that are not a JPEG.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
    pos, total, n = 2, 0, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG: expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return total
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            continue
        if pos + 2 > n:
            raise ValueError("JPEG: truncated segment")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        pos += length
        if marker == 0xDA:  # SOS: scan data follows up to the next real marker
            start = pos
            while pos < n:
                if data[pos] == 0xFF and pos + 1 < n and data[pos + 1] != 0x00 and not 0xD0 <= data[pos + 1] <= 0xD7:
                    break
                pos += 1
            total += pos - start
    raise ValueError("JPEG: no EOI marker")


def webp_payload_size(data: bytes) -> int:
    """Bytes of image data in a WebP file: the data of its ``VP8 ``, ``VP8L`` and ``ALPH`` chunks,
    without the RIFF/WEBP header, chunk headers, padding bytes and other chunks."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP file (no RIFF/WEBP header)")
    pos, total = 12, 0
    while pos + 8 <= len(data):
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if fourcc in (b"VP8 ", b"VP8L", b"ALPH"):
            total += size
        pos += 8 + size + (size & 1)
    return total


# ---------------------------------------------------------------------------------------------
# Curves


def _curve(name: str, description: str, hw: int, results: dict) -> dict:
    bits = results["bits_per_image"]
    ordered = {"bpp": [b / hw for b in bits], **results}
    return {"name": name, "description": description, "results": ordered}


def vqdraw_curves(
    model, images: torch.Tensor, batch_size: int = 256, beam: int = 1
) -> tuple[list[dict], torch.Tensor]:
    """VQ-DRAW at every code prefix n = 1..N: three curves (payload, one-image .vqd file,
    all-images .vqd file) and the full-code reconstructions (B, C, H, W) on the CPU.

    The images go through the real pipeline: codes -> .vqd bytes -> :func:`decompress`.
    With ``beam`` = 1 the n-stage codes are the first n of the N-stage codes (greedy choices
    do not look ahead), so the images are encoded once; with beam search, once per n.
    """
    count = images.shape[0]
    if count == 0:
        raise InputError("no images to evaluate")
    c, h, w = model.config.image_shape
    K, N = model.options, model.stages

    def encode(stages: int) -> torch.Tensor:
        return torch.cat([
            encode_images(model, images[i : i + batch_size].to(model.device), stages=stages, beam=beam)
            for i in range(0, count, batch_size)
        ])

    full = encode(N)
    rows: dict[str, list] = {k: [] for k in (
        "stages", "payload", "one", "all", "all_bytes", "mse", "psnr-rgb", "ssim", "mse_unrounded")}
    recon_full = None
    for n in range(1, N + 1):
        codes = full[:, :n] if beam == 1 else encode(n)
        data = compress_codes(model, codes)
        recon, vqd = decompress(model, data, batch_size=batch_size)
        assert vqd.count == count and vqd.stages == n
        d = distortion(images, _as_uint8(recon))
        rows["stages"].append(n)
        rows["payload"].append(bits_per_image(K, n))
        rows["one"].append(8 * len(compress_codes(model, codes[:1])))
        rows["all"].append(8 * len(data) / count)
        rows["all_bytes"].append(len(data))
        for key in ("mse", "psnr-rgb", "ssim"):
            rows[key].append(d[key])
        rows["mse_unrounded"].append((_exact(images) - recon.double()).pow(2).mean().item())
        if n == N:
            recon_full = recon
    common = {k: rows[k] for k in ("stages", "mse", "psnr-rgb", "ssim", "mse_unrounded")}
    how = "greedy" if beam == 1 else f"beam search, width {beam}"
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
    return curves, recon_full


def codec_curves(
    images: torch.Tensor,
    jpeg_qualities=JPEG_QUALITIES,
    webp_qualities=WEBP_QUALITIES,
    webp_lossless: bool = True,
) -> list[dict]:
    """JPEG and WebP curves for images (B, C, H, W) in [0, 1] (rounded to 8 bits first), each
    image its own file: ``JPEG``, ``JPEG (no headers)``, ``WebP``, ``WebP (no headers)`` and,
    with ``webp_lossless``, ``WebP lossless`` and ``WebP lossless (no headers)``."""
    arrs = _as_uint8(images)
    count, h, w, c = arrs.shape
    if count == 0:
        raise InputError("no images to evaluate")

    def sweep(settings: list, encoder, payload_size) -> tuple[dict, dict]:
        whole = {"quality": [], "bytes_total": [], "bits_per_image": [], "mse": [], "psnr-rgb": [], "ssim": []}
        bare = {k: [] for k in whole}
        for q in settings:
            files = [encoder(a, q) for a in arrs]
            recon = np.stack([decode_image_bytes(f, c) for f in files])
            d = distortion(images, recon)
            total = sum(len(f) for f in files)
            payload = sum(payload_size(f) for f in files)
            for row, size in ((whole, total), (bare, payload)):
                row["quality"].append(q)
                row["bytes_total"].append(size)
                row["bits_per_image"].append(8 * size / count)
                for key in ("mse", "psnr-rgb", "ssim"):
                    row[key].append(d[key])
        return whole, bare

    from PIL import __version__ as pil_version
    from PIL import features

    jpeg_lib = f"Pillow {pil_version}, libjpeg {features.version('jpg')}"
    webp_lib = f"Pillow {pil_version}, libwebp {features.version('webp')}"
    each = f"one file per image, sizes averaged over {count} images"
    curves = []
    jw, jb = sweep(list(jpeg_qualities), encode_jpeg, jpeg_payload_size)
    curves += [
        _curve("JPEG", f"whole .jpg files ({jpeg_lib}, {JPEG_SETTINGS}); {each}", h * w, jw),
        _curve("JPEG (no headers)", "entropy-coded scan data only (no SOI/APPn/DQT/SOF/DHT/SOS "
               f"segments, no EOI) of the same files; {each}", h * w, jb),
    ]
    ww, wb = sweep(list(webp_qualities), lambda a, q: encode_webp(a, q), webp_payload_size)
    curves += [
        _curve("WebP", f"whole lossy .webp files ({webp_lib}, {WEBP_SETTINGS}); {each}", h * w, ww),
        _curve("WebP (no headers)", "VP8/VP8L/ALPH chunk data only (no RIFF/WEBP header, chunk headers, "
               f"padding or VP8X) of the same files; {each}", h * w, wb),
    ]
    if webp_lossless:
        lw, lb = sweep([100], lambda a, q: encode_webp(a, lossless=True), webp_payload_size)
        curves += [
            _curve("WebP lossless", f"whole lossless .webp files ({webp_lib}, {WEBP_LOSSLESS_SETTINGS}); "
                   f"{each}", h * w, lw),
            _curve("WebP lossless (no headers)", f"VP8L chunk data only of the same files; {each}", h * w, lb),
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
    beam: int = 1,
    source: str = "",
) -> tuple[dict, torch.Tensor]:
    """The rate–distortion report for ``images`` (B, C, H, W) in [0, 1]: a dict with the
    settings and definitions and ``curves`` (a list of CompressAI-style curves), plus the
    VQ-DRAW full-code reconstructions (B, C, H, W) on the CPU."""
    images = images.detach().cpu().float()
    c, h, w = model.config.image_shape
    vq, recon = vqdraw_curves(model, images, batch_size=batch_size, beam=beam)
    curves = vq + codec_curves(images, jpeg_qualities, webp_qualities, webp_lossless)
    report = {
        "format": "vqdraw-rd",
        "version": 1,
        "source": source,
        "count": int(images.shape[0]),
        "image_shape": [c, h, w],
        "model": {"fingerprint": model.fingerprint().hex(), "K": model.options, "N": model.stages,
                  "beam": beam},
        "definitions": {
            "bits_per_image": "the curve's size measure in bits, averaged over the images (see description)",
            "bpp": f"bits_per_image / (H*W) = bits_per_image / {h * w}",
            "mse": "mean squared error over all pixels, channels and images; values in [0, 1]; "
                   "reconstructions rounded to 8 bits",
            "psnr-rgb": "10*log10(1/mse) of the mean mse (peak 1); null when mse is 0 (lossless)",
            "ssim": f"single-scale SSIM, {SSIM_WINDOW}x{SSIM_WINDOW} Gaussian window, sigma {SSIM_SIGMA}, "
                    "K1 0.01, K2 0.03, data range 1, valid window positions, mean over channels then images",
            "ms-ssim-rgb": "not reported: MS-SSIM is undefined for images smaller than 176x176",
            "mse_unrounded": "VQ-DRAW only: the mse of the decoder's float output before rounding to 8 bits",
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
    from .io import atomic_write_bytes

    out = Path(out_dir)
    for curve in report["curves"]:
        atomic_write_bytes(out / "curves" / f"{_slug(curve['name'])}.json",
                           (json.dumps(curve, indent=2) + "\n").encode())
    path = out / "rd.json"
    atomic_write_bytes(path, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
    return path


_STYLE = {
    "VQ-DRAW": dict(color="tab:red", marker="o", ls="-"),
    "VQ-DRAW (.vqd file, one image)": dict(color="tab:red", marker=".", ls="--"),
    "JPEG": dict(color="tab:blue", marker="s", ls="-"),
    "JPEG (no headers)": dict(color="tab:blue", marker="s", ls="--", mfc="none"),
    "WebP": dict(color="tab:green", marker="^", ls="-"),
    "WebP (no headers)": dict(color="tab:green", marker="^", ls="--", mfc="none"),
}


def save_rd_plot(report: dict, path: str | Path, title: str = "") -> Path:
    """PSNR against bits per image (log axis) for the curves in ``_STYLE``; lossless WebP, whose
    PSNR is infinite, as vertical lines at its sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
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
            ax.axvline(bits, color="tab:gray", ls=ls, lw=1, label=f"{name} ({bits:.0f} bits, PSNR ∞)")
    ax.set_xscale("log")
    ax.set_xlabel("bits per image (log scale)")
    ax.set_ylabel("PSNR (dB, peak 1, 8-bit output)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    c, h, w = report["image_shape"]
    ax.set_title(title or f"rate–distortion on {report['count']} images {w}x{h}"
                 + (f" ({report['source']})" if report.get("source") else ""), fontsize=9)
    fig.tight_layout()
    from .plots import save_figure

    return save_figure(fig, path)


def _nearest(curve: dict, bits: float) -> int:
    """Index of the setting whose bits_per_image is nearest to ``bits`` (on a log scale)."""
    sizes = curve["results"]["bits_per_image"]
    return min(range(len(sizes)), key=lambda i: abs(math.log(sizes[i] / bits)))


def save_compare(
    report: dict, images: torch.Tensor, recon: torch.Tensor, path: str | Path, count: int = 8
) -> Path:
    """Side by side for ``count`` images spread evenly over the set: the original, VQ-DRAW's full code, and
    JPEG and WebP at the quality whose whole-file size is nearest to VQ-DRAW's one-image
    .vqd file. Each panel is labelled with its size measure and PSNR over all evaluated images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plots

    by_name = {c["name"]: c for c in report["curves"]}
    vq = by_name["VQ-DRAW"]["results"]
    vq_file = by_name["VQ-DRAW (.vqd file, one image)"]["results"]["bits_per_image"][-1]
    k = min(count, images.shape[0])
    pick = torch.linspace(0, images.shape[0] - 1, k).round().long()
    x = images.detach().cpu().float()[pick]
    arrs = _as_uint8(x)
    c = arrs.shape[3]

    def fmt(p):
        return "∞" if p is None else f"{p:.2f}"

    panels = [("original", x),
              (f"VQ-DRAW, {vq['stages'][-1]} stages\n{vq['bits_per_image'][-1]}-bit payload, "
               f"{vq_file:.0f}-bit .vqd file\nPSNR {fmt(vq['psnr-rgb'][-1])} dB", recon.cpu()[pick])]
    for name, enc in (("JPEG", encode_jpeg), ("WebP", encode_webp)):
        if name not in by_name:
            continue
        r = by_name[name]["results"]
        i = _nearest(by_name[name], vq_file)
        q = r["quality"][i]
        out = np.stack([decode_image_bytes(enc(a, q), c) for a in arrs])
        panels.append((f"{name} quality {q} (size nearest)\n{r['bits_per_image'][i]:.0f} bits per "
                       f"whole file\nPSNR {fmt(r['psnr-rgb'][i])} dB", _from_uint8(out).float()))
    ncol = max(1, min(4, k))
    tiles = [plots.grid(imgs, ncol=ncol, scale=1) for _, imgs in panels]
    aspect = tiles[0].height / tiles[0].width
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.6 * aspect + 0.8), dpi=110)
    for ax, (label, _), tile in zip(np.atleast_1d(axes), panels, tiles):
        ax.imshow(tile, cmap="gray" if c == 1 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(label, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    from .plots import save_figure

    return save_figure(fig, path)
