"""The classical image codecs VQ-DRAW is compared with: JPEG and WebP through Pillow.

Each codec is a small object, as in CompressAI's bench codecs:

    codec.encode(arr, quality) -> bytes           arr: one image (H, W, C) uint8, C = 1 or 3
    codec.decode(data, channels) -> (H, W, C) uint8
    codec.payload_size(data) -> int               the image data only, without container bytes
    codec.qualities                               the default sweep
    codec.describe() -> str                       library versions and settings, for reports

``JPEG()``, ``WebP()`` and ``WebP(lossless=True)``. Grey images stay grey. Payload sizes:

* JPEG: the entropy-coded scan data only (every byte after each SOS segment up to the next marker
  that is not a restart marker; the SOI, APPn, DQT, SOF, DHT, SOS segments and EOI left out);
* WebP: the image chunk payloads only (the data of the ``VP8 ``/``VP8L`` chunk, plus ``ALPH`` if
  any, without the 12-byte RIFF/WEBP header, 8-byte chunk headers, padding and ``VP8X``).
"""

from __future__ import annotations

import io
import struct

import numpy as np

__all__ = ["JPEG", "JPEG_QUALITIES", "JPEG_SETTINGS", "WEBP_LOSSLESS_SETTINGS", "WEBP_QUALITIES",
           "WEBP_SETTINGS", "WebP", "decode_image_bytes", "jpeg_payload_size", "webp_payload_size"]

JPEG_QUALITIES = (1, 2, 3, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
JPEG_SETTINGS = {"optimize": True}  # baseline JPEG with Huffman tables optimised per image; Pillow's subsampling
WEBP_SETTINGS = {"method": 6}  # libwebp's slowest, smallest setting
WEBP_LOSSLESS_SETTINGS = {"lossless": True, "quality": 100, "method": 6}


def _pil(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def decode_image_bytes(data: bytes, channels: int) -> np.ndarray:
    """A JPEG/WebP/PNG file's image as (H, W, channels) uint8 (grey or RGB, as the original)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(im, dtype=np.uint8)
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def _version(feature: str) -> str:
    from PIL import __version__, features

    return f"Pillow {__version__}, lib{feature.replace('jpg', 'jpeg')} {features.version(feature)}"


class JPEG:
    """Baseline JPEG (libjpeg through Pillow) with ``JPEG_SETTINGS``; quality 1..95."""

    name = "JPEG"
    qualities = JPEG_QUALITIES
    settings = JPEG_SETTINGS

    def encode(self, arr: np.ndarray, quality: int) -> bytes:
        buf = io.BytesIO()
        _pil(arr).save(buf, format="JPEG", quality=int(quality), **self.settings)
        return buf.getvalue()

    def decode(self, data: bytes, channels: int) -> np.ndarray:
        return decode_image_bytes(data, channels)

    def payload_size(self, data: bytes) -> int:
        return jpeg_payload_size(data)

    def describe(self) -> str:
        return f"{_version('jpg')}, {self.settings}"


class WebP:
    """Lossy WebP at a quality 0..100 with ``WEBP_SETTINGS``, or lossless (the quality is ignored)."""

    def __init__(self, lossless: bool = False):
        self.lossless = lossless
        self.name = "WebP lossless" if lossless else "WebP"
        self.qualities = (100,) if lossless else WEBP_QUALITIES
        self.settings = WEBP_LOSSLESS_SETTINGS if lossless else WEBP_SETTINGS

    def encode(self, arr: np.ndarray, quality: int = 100) -> bytes:
        buf = io.BytesIO()
        if self.lossless:
            _pil(arr).save(buf, format="WEBP", **self.settings)
        else:
            _pil(arr).save(buf, format="WEBP", quality=int(quality), **self.settings)
        return buf.getvalue()

    def decode(self, data: bytes, channels: int) -> np.ndarray:
        return decode_image_bytes(data, channels)

    def payload_size(self, data: bytes) -> int:
        return webp_payload_size(data)

    def describe(self) -> str:
        return f"{_version('webp')}, {self.settings}"


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
