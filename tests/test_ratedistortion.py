"""Tests for the rate–distortion evaluation (vqdraw.evaluate.ratedistortion) and `vqdraw eval`."""

from __future__ import annotations

import io
import json
import math
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from vqdraw import RefinerConfig, VQDraw
from vqdraw.evaluate import ratedistortion as rd
from vqdraw.evaluate import rdplots
from vqdraw.compress.codecs_classical import JPEG_QUALITIES, jpeg_payload_size, webp_payload_size
from vqdraw.evaluate.metrics.distortion import ssim
from vqdraw.compress.bitstream import bits_per_image, header_size
from vqdraw.cli import main

STAGES, K, COUNT = 3, 5, 20
JPEG_Q, WEBP_Q = (1, 50, 95), (0, 50, 100)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> VQDraw:
    torch.manual_seed(0)
    small = RefinerConfig(down=(8, 8), body=(16,), up=(8, 8))
    return VQDraw.from_preset("mnist", stages=STAGES, options=K, refiner=small).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from vqdraw.data import load_dataset

    return load_dataset("mnist-embedded", "test").batch(range(COUNT))


@pytest.fixture(scope="module")
def report(model, images):
    rep, recon = rd.evaluate(model, images, jpeg_qualities=JPEG_Q, webp_qualities=WEBP_Q, batch_size=8)
    return rep, recon


def _curves(rep) -> dict:
    return {c["name"]: c["results"] for c in rep["curves"]}


def _u8(images: torch.Tensor) -> np.ndarray:
    return images.mul(255).round().to(torch.uint8)[:, 0].numpy()  # (B, H, W) grey


def test_report_is_valid_json_in_compressai_layout(report, tmp_path):
    rep, _ = report
    path = rd.write_report(rep, tmp_path)
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(rep))
    names = [c["name"] for c in loaded["curves"]]
    assert names == ["VQ-DRAW", "VQ-DRAW (.vqd file, one image)", "VQ-DRAW (.vqd file, all images)", "JPEG",
                     "JPEG (no headers)", "WebP", "WebP (no headers)", "WebP lossless", "WebP lossless (no headers)"]
    for curve in loaded["curves"]:
        assert set(curve) == {"name", "description", "results"} and curve["description"]
        r = curve["results"]
        n = len(r["bpp"])
        for key in ("bpp", "bits_per_image", "mse", "psnr-rgb", "psnr-of-mean-mse", "ssim", "encoding_time",
                    "decoding_time"):
            assert len(r[key]) == n, (curve["name"], key)
        assert "ms-ssim-rgb" not in r
        assert r["bpp"] == pytest.approx([b / 784 for b in r["bits_per_image"]])
        for mse, psnr in zip(r["mse"], r["psnr-of-mean-mse"]):
            assert psnr is None if mse == 0 else psnr == pytest.approx(10 * math.log10(1 / mse))
        for mean_psnr, psnr in zip(r["psnr-rgb"], r["psnr-of-mean-mse"]):
            # PSNR is concave in the mse: the mean of per-image PSNRs is at least the PSNR of the mean mse
            assert (mean_psnr is None) if psnr is None else mean_psnr >= psnr - 1e-9
        assert all(t > 0 for t in r["encoding_time"] + r["decoding_time"])
        assert all(s is None or -1 <= s <= 1 for s in r["ssim"])
    per_curve = sorted(p.name for p in (tmp_path / "curves").iterdir())
    assert len(per_curve) == len(names)
    assert json.loads((tmp_path / "curves" / "jpeg.json").read_text())["name"] == "JPEG"


def test_vqdraw_sizes_and_distortion(report, model, images):
    rep, recon = report
    c = _curves(rep)
    vq = c["VQ-DRAW"]
    assert vq["stages"] == [1, 2, 3]
    payload = [bits_per_image(K, n) for n in (1, 2, 3)]
    assert vq["bits_per_image"] == payload == [3, 5, 7]
    one = [8 * (header_size() + (b + 7) // 8) for b in payload]
    assert vq["bits_per_image_file_one_image"] == one == c["VQ-DRAW (.vqd file, one image)"]["bits_per_image"]
    every = [8 * (header_size() + (COUNT * b + 7) // 8) / COUNT for b in payload]
    assert vq["bits_per_image_file_all_images"] == pytest.approx(every)
    assert c["VQ-DRAW (.vqd file, all images)"]["bytes_total"] == [header_size() + (COUNT * b + 7) // 8 for b in payload]

    codes = model.encode(images)
    assert torch.equal(recon, model.decode(codes))
    for i, n in enumerate((1, 2, 3)):
        out = _u8(model.decode(codes[:, :n])).astype(np.float64) / 255
        mse = np.mean((out - _u8(images) / 255.0) ** 2)
        assert vq["mse"][i] == pytest.approx(mse, rel=1e-9)
        per_image = np.mean((out - _u8(images) / 255.0) ** 2, axis=(1, 2))
        assert vq["psnr-rgb"][i] == pytest.approx(np.mean(10 * np.log10(1 / per_image)), rel=1e-9)


def _pillow(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_jpeg_sizes_are_what_pillow_produces(report, images):
    rep, _ = report
    c = _curves(rep)
    arrs = _u8(images)
    for i, q in enumerate(JPEG_Q):
        files = [_pillow(a, "JPEG", quality=q, optimize=True) for a in arrs]
        assert c["JPEG"]["quality"][i] == q
        assert c["JPEG"]["bytes_total"][i] == sum(len(f) for f in files)
        assert c["JPEG"]["bits_per_image"][i] == pytest.approx(8 * sum(len(f) for f in files) / COUNT)
        # baseline JPEG: one scan; its data runs from the end of the (last) SOS segment to EOI
        bare = 0
        for f in files:
            sos = f.rindex(b"\xff\xda")
            (length,) = struct.unpack(">H", f[sos + 2 : sos + 4])
            assert f.endswith(b"\xff\xd9")
            bare += len(f) - 2 - (sos + 2 + length)
        assert c["JPEG (no headers)"]["bytes_total"][i] == bare
        decoded = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("L")) for f in files]) / 255.0
        mse = np.mean((decoded - _u8(images) / 255.0) ** 2)
        assert c["JPEG"]["mse"][i] == pytest.approx(mse, rel=1e-9) == c["JPEG (no headers)"]["mse"][i]
    assert c["JPEG"]["bits_per_image"][0] < c["JPEG"]["bits_per_image"][-1]


def test_webp_sizes_are_what_pillow_produces(report, images):
    rep, _ = report
    c = _curves(rep)
    arrs = _u8(images)
    for name, settings in [("WebP", [dict(quality=q, method=6) for q in WEBP_Q]),
                           ("WebP lossless", [dict(lossless=True, quality=100, method=6)])]:
        for i, kw in enumerate(settings):
            files = [_pillow(a, "WEBP", **kw) for a in arrs]
            assert c[name]["bytes_total"][i] == sum(len(f) for f in files)
            bare = 0
            for f in files:  # simple format: RIFF header, one VP8/VP8L chunk
                assert f[12:16] in (b"VP8 ", b"VP8L") and len(f) == 20 + struct.unpack("<I", f[16:20])[0] + (f[16] & 1)
                bare += struct.unpack("<I", f[16:20])[0]
            assert c[name + " (no headers)"]["bytes_total"][i] == bare
    assert c["WebP lossless"]["mse"] == [0.0] and c["WebP lossless"]["psnr-rgb"] == [None]
    assert c["WebP lossless"]["psnr-of-mean-mse"] == [None]


def test_jpeg_payload_parser_handles_several_scans(images):
    arr = _u8(images)[0]
    plain = _pillow(arr, "JPEG", quality=80)
    progressive = _pillow(np.stack([arr] * 3, -1), "JPEG", quality=80, progressive=True)
    assert progressive.count(b"\xff\xda") > 1
    for f in (plain, progressive):
        assert 0 < jpeg_payload_size(f) < len(f)
    with pytest.raises(ValueError):
        jpeg_payload_size(b"GIF89a")
    with pytest.raises(ValueError):
        webp_payload_size(plain)


def test_ssim_matches_reference_values():
    # Reference: scikit-image 0.26.0, structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    # use_sample_covariance=False, data_range=1.0, channel_axis=0) on these inputs.
    i, j = np.meshgrid(np.arange(16), np.arange(20), indexing="ij")
    a = (np.sin(i * 0.7) * np.cos(j * 0.3) + 1) / 2
    b = (np.sin(i * 0.7 + 0.4) * np.cos(j * 0.33) + 1) / 2 * 0.9
    grey = ssim(torch.tensor(a)[None, None], torch.tensor(b)[None, None])
    assert grey.item() == pytest.approx(0.8470212911109937, abs=1e-12)
    a3 = np.stack([a, a**2, 1 - a])
    b3 = np.stack([b, a**2 * 0.8, 1 - b])
    colour = ssim(torch.tensor(a3)[None], torch.tensor(b3)[None])
    assert colour.item() == pytest.approx(0.8808604811981633, abs=1e-12)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert ssim(x[:, :, :10], x[:, :, :10]) is None  # smaller than the 11x11 window


def test_plots(report, images, tmp_path):
    rep, recon = report
    for path in (rdplots.save_rd_plot(rep, tmp_path / "rd.png"),
                 rdplots.save_compare(rep, images, recon, tmp_path / "compare.png", count=4)):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 100


def test_cli_eval(model, tmp_path, capsys):
    model.save(tmp_path / "model")
    out = tmp_path / "eval"
    rc = main(["eval", "--model", str(tmp_path / "model"), "--dataset", "mnist-embedded", "--count", "6",
               "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "VQ-DRAW 3 stages: 7 bits payload" in text and "JPEG smallest" in text
    rep = json.loads((out / "rd.json").read_text())
    assert rep["count"] == 6 and rep["source"] == "mnist-embedded test split"
    assert rep["model"]["fingerprint"] and rep["image_shape"] == [1, 28, 28]
    assert _curves(rep)["JPEG"]["quality"] == list(JPEG_QUALITIES)
    for name in ("rd.png", "compare.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"


def test_psnr_rgb_is_the_mean_of_per_image_psnr_as_compressai():
    # two 1x2x2 images; the first is off by 0.1 in one pixel (mse 0.0025), the second by 0.2 in
    # every pixel (mse 0.04): per-image PSNRs 26.0206 and 13.9794 dB, mean 20.0 dB, while the PSNR
    # of the mean mse 0.02125 is 16.7264 dB.
    x = torch.full((2, 1, 2, 2), 0.4, dtype=torch.float64)
    y = x.clone()
    y[0, 0, 0, 0] += 0.1
    y[1] += 0.2
    d = rd.distortion(x, rd.as_uint8(y))
    exact = rd.from_uint8(rd.as_uint8(x)) - rd.from_uint8(rd.as_uint8(y))  # on the 8-bit grid
    m0, m1 = exact[0].pow(2).mean().item(), exact[1].pow(2).mean().item()
    assert d["psnr-rgb"] == pytest.approx((10 * math.log10(1 / m0) + 10 * math.log10(1 / m1)) / 2)
    assert d["psnr-rgb"] == pytest.approx(20.0, abs=0.1)
    assert d["psnr-of-mean-mse"] == pytest.approx(10 * math.log10(1 / ((m0 + m1) / 2)))
    assert d["psnr-of-mean-mse"] == pytest.approx(16.73, abs=0.1)
    assert rd.distortion(x, rd.as_uint8(x))["psnr-rgb"] is None  # exact: infinite PSNR
