"""The ``.vqd`` compressed file format: VQ-DRAW codes packed at their exact entropy bound.

A VQ-DRAW model encodes an image as ``n`` integer codes in ``[0, K)``, one per stage.
This module turns a batch of such codes into bytes and back. It is pure bit-level
work (numpy and the standard library only, no torch) and knows nothing about models
beyond a 16-byte fingerprint that says which model made the codes.

Packing
-------
The ``n`` codes of one image are read as one mixed-radix (base ``K``) integer with
the first stage most significant::

    value = c[0]*K**(n-1) + c[1]*K**(n-2) + ... + c[n-1]

and stored big-endian in exactly ``bits_per_image(K, n) = ceil(n*log2(K))`` bits, so
a ``K`` that is not a power of two wastes less than one bit per image. The images'
bit fields follow each other with no gaps; only the payload as a whole is padded
with zero bits to a byte boundary.

File layout (all integers little-endian, see docs/vqd-format.md)
-----------------------------------------------------------------

::

    offset  size
         0     4   magic  b"VQDR"
         4     1   format version (1)
         5     1   flags (reserved, 0)
         6    16   model fingerprint
        22     2   channels C           \\
        24     2   height H              } image shape, each 1..65535
        26     2   width W              /
        28     2   K, codes per stage (2..65535)
        30     2   n, stored stages (1..65535; may be a prefix of the model's stages)
        32     4   count, number of images
        36     P   payload: count*bits_per_image(K, n) bits, zero-padded to bytes
      36+P     4   CRC-32 (zlib.crc32) of bytes [0, 36+P)

    +------+-+-+----------------+-+-+-+-+-+---+=============+----+
    | VQDR |v|f|  fingerprint   |C|H|W|K|n|cnt|   payload   |CRC |
    +------+-+-+----------------+-+-+-+-+-+---+=============+----+
     \\_____________ 36-byte header _________/               4 bytes

The fixed overhead is ``header_size()`` = 40 bytes, whatever the number of images.

Errors
------
``read_vqd`` and ``unpack_codes`` raise :class:`VqdFormatError` (a ``VQDrawError``)
for any bytes that are not a valid file; the message is one line a person can act
on. Invalid arguments on the writing side (codes out of range, a bad shape or
fingerprint) raise :class:`vqdraw.errors.InputError`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from vqdraw.errors import InputError, VQDrawError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "VqdFile",
    "VqdFormatError",
    "bits_per_image",
    "header_size",
    "pack_codes",
    "payload_size",
    "read_vqd",
    "unpack_codes",
    "write_vqd",
]

MAGIC = b"VQDR"
FORMAT_VERSION = 1
FINGERPRINT_SIZE = 16

_HEADER = struct.Struct("<4sBB16sHHHHHI")  # magic, version, flags, fingerprint, C, H, W, K, n, count
_CRC = struct.Struct("<I")
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
_MAX_PACK_K = 2**31  # keeps every per-chunk accumulator inside int64
_CHUNK_LIMIT = 2**62


class VqdFormatError(VQDrawError, ValueError):
    """Bytes that are not a valid ``.vqd`` file: wrong magic, truncated, corrupt, or from another model."""


def header_size() -> int:
    """Fixed bytes per ``.vqd`` file besides the payload: the 36-byte header plus the 4-byte CRC."""
    return _HEADER.size + _CRC.size


def bits_per_image(K: int, n: int) -> int:
    """Exactly ``ceil(n * log2(K))``: the bits that hold ``n`` base-``K`` digits (0 when ``K == 1`` or ``n == 0``)."""
    K, n = _check_radix(K, n)
    return (K**n - 1).bit_length()


def payload_size(count: int, K: int, n: int) -> int:
    """Bytes of the packed payload for ``count`` images: ``ceil(count * bits_per_image(K, n) / 8)``."""
    if int(count) < 0:
        raise InputError(f"image count must be >= 0, got {count}")
    return (int(count) * bits_per_image(K, n) + 7) // 8


# ---------------------------------------------------------------------------------------------
# Packing


def pack_codes(codes: np.ndarray, K: int) -> bytes:
    """Pack ``codes`` (shape ``(B, n)``, integers in ``[0, K)``) into ``payload_size(B, K, n)`` bytes.

    Inverse of :func:`unpack_codes`.
    """
    K = _check_radix(K, 0)[0]
    arr = _check_codes(codes, K)
    count, n = arr.shape
    bits = bits_per_image(K, n)
    if count == 0 or bits == 0:
        return b""
    width = (bits + 7) // 8
    values = _digits_to_ints(arr, K)
    rows = np.frombuffer(b"".join(v.to_bytes(width, "big") for v in values), dtype=np.uint8)
    fields = np.unpackbits(rows.reshape(count, width), axis=1)[:, width * 8 - bits :]
    return np.packbits(fields.reshape(-1)).tobytes()


def unpack_codes(data: bytes, K: int, n: int, count: int) -> np.ndarray:
    """Unpack ``count`` images of ``n`` base-``K`` codes from ``data``; returns int64 ``(count, n)``.

    Inverse of :func:`pack_codes`. ``data`` must be exactly ``payload_size(count, K, n)``
    bytes with zero padding bits, and every image must decode to codes in ``[0, K)``;
    otherwise :class:`VqdFormatError` is raised.
    """
    K, n = _check_radix(K, n)
    count = int(count)
    expected = payload_size(count, K, n)
    if len(data) != expected:
        raise VqdFormatError(f"corrupt .vqd payload: expected {expected} bytes, got {len(data)}")
    bits = bits_per_image(K, n)
    if count == 0 or bits == 0:
        return np.zeros((count, n), dtype=np.int64)
    stream = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
    if stream[count * bits :].any():
        raise VqdFormatError("corrupt .vqd payload: non-zero padding bits")
    width = (bits + 7) // 8
    fields = np.zeros((count, width * 8), dtype=np.uint8)
    fields[:, width * 8 - bits :] = stream[: count * bits].reshape(count, bits)
    rows = np.packbits(fields, axis=1)
    values = [int.from_bytes(row.tobytes(), "big") for row in rows]
    return _ints_to_digits(values, K, n)


def _check_radix(K: int, n: int) -> tuple[int, int]:
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or not 1 <= K <= _MAX_PACK_K:
        raise InputError(f"K must be an integer in 1..{_MAX_PACK_K}, got {K!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"stage count n must be an integer >= 0, got {n!r}")
    return int(K), int(n)


def _check_codes(codes: np.ndarray, K: int) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise InputError(f"codes must have shape (images, stages), got shape {tuple(arr.shape)}")
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"codes must be integers, got dtype {arr.dtype}")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high >= K:
        bad = low if low < 0 else high
        raise InputError(f"code {bad} is out of range for K={K} (codes must be in [0, {K}))")
    return arr.astype(np.int64, copy=False)


def _chunking(K: int, n: int) -> tuple[int, int]:
    """Digits per int64 chunk ``m`` (``K**m <= 2**62``) and the chunk count, for ``n >= 1``."""
    m = 1
    while m < n and K ** (m + 1) <= _CHUNK_LIMIT:
        m += 1
    return m, -(-n // m)


def _digits_to_ints(arr: np.ndarray, K: int) -> list[int]:
    """Each row of base-``K`` digits (most significant first) as one Python int."""
    count, n = arr.shape
    m, chunks = _chunking(K, n)
    top = n - m * (chunks - 1)  # the leading chunk holds the leftover digits
    parts = np.zeros((count, chunks), dtype=np.int64)
    start = 0
    for j in range(chunks):
        stop = top if j == 0 else start + m
        acc = np.zeros(count, dtype=np.int64)
        for col in range(start, stop):  # Horner within the chunk, vectorised over images
            acc = acc * K + arr[:, col]
        parts[:, j] = acc
        start = stop
    base = K**m
    values = []
    for row in parts.tolist():
        v = row[0]
        for part in row[1:]:
            v = v * base + part
        values.append(v)
    return values


def _ints_to_digits(values: list[int], K: int, n: int) -> np.ndarray:
    """Inverse of :func:`_digits_to_ints`; rejects values ``>= K**n`` (codes out of range)."""
    limit = K**n
    m, chunks = _chunking(K, n)
    top = n - m * (chunks - 1)
    base = K**m
    parts = np.zeros((len(values), chunks), dtype=np.int64)
    for i, v in enumerate(values):
        if v >= limit:
            raise VqdFormatError(f"corrupt .vqd payload: image {i} decodes to codes outside [0, {K})")
        for j in range(chunks - 1, 0, -1):
            v, parts[i, j] = divmod(v, base)
        parts[i, 0] = v
    out = np.zeros((len(values), n), dtype=np.int64)
    start = 0
    for j in range(chunks):
        stop = top if j == 0 else start + m
        acc = parts[:, j].copy()
        for col in range(stop - 1, start - 1, -1):  # least significant digit last in the row
            out[:, col] = acc % K
            acc //= K
        start = stop
    return out


# ---------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True, eq=False)
class VqdFile:
    """A decoded ``.vqd`` file. ``header_bytes + payload_bytes`` is the file's length."""

    codes: np.ndarray  # int64, (count, stages)
    K: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    fingerprint: bytes  # 16 bytes
    stages: int
    header_bytes: int  # fixed overhead: header + CRC, == header_size()
    payload_bytes: int

    @property
    def count(self) -> int:
        """Number of images in the file."""
        return int(self.codes.shape[0])


def write_vqd(codes: np.ndarray, K: int, image_shape: tuple[int, int, int], fingerprint: bytes) -> bytes:
    """Serialise ``codes`` (``(B, n)`` in ``[0, K)``) for images of ``image_shape`` (C, H, W) as ``.vqd`` bytes."""
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or not 2 <= K <= _U16_MAX:
        raise InputError(f"K must be an integer in 2..{_U16_MAX} for a .vqd file, got {K!r}")
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and 1 <= d <= _U16_MAX for d in shape):
        raise InputError(f"image shape must be (C, H, W) with each in 1..{_U16_MAX}, got {image_shape!r}")
    if not isinstance(fingerprint, (bytes, bytearray)) or len(fingerprint) != FINGERPRINT_SIZE:
        raise InputError(f"model fingerprint must be {FINGERPRINT_SIZE} bytes, got {fingerprint!r}")
    arr = _check_codes(codes, int(K))
    count, n = arr.shape
    if not 1 <= n <= _U16_MAX:
        raise InputError(f"a .vqd file stores 1..{_U16_MAX} stages per image, got {n}")
    if count > _U32_MAX:
        raise InputError(f"a .vqd file stores at most {_U32_MAX} images, got {count}")
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, bytes(fingerprint), *map(int, shape), int(K), n, count)
    body = header + pack_codes(arr, int(K))
    return body + _CRC.pack(zlib.crc32(body))


def read_vqd(data: bytes, expected_fingerprint: bytes | None = None) -> VqdFile:
    """Parse ``.vqd`` bytes; raises :class:`VqdFormatError` (and nothing else) for any invalid input.

    When ``expected_fingerprint`` is given, a file made by another model is rejected.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise VqdFormatError(f".vqd data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise VqdFormatError("empty .vqd file (0 bytes)")
    if data[: len(MAGIC)] != MAGIC:
        if MAGIC.startswith(data):
            raise VqdFormatError(f"truncated .vqd file: expected at least {header_size()} bytes, got {len(data)}")
        raise VqdFormatError(f"not a .vqd file (starts with {data[:4].hex()}, expected {MAGIC.hex()} = {MAGIC!r})")
    if len(data) > len(MAGIC) and data[len(MAGIC)] != FORMAT_VERSION:
        raise VqdFormatError(
            f"unsupported .vqd format version {data[len(MAGIC)]} (this vqdraw reads version {FORMAT_VERSION})"
        )
    if len(data) < header_size():
        raise VqdFormatError(f"truncated .vqd file: expected at least {header_size()} bytes, got {len(data)}")

    _, _, flags, fingerprint, C, H, W, K, n, count = _HEADER.unpack_from(data)
    if flags != 0:
        raise VqdFormatError(f"unsupported .vqd flags 0x{flags:02x} (version {FORMAT_VERSION} requires 0)")
    if K < 2:
        raise VqdFormatError(f"invalid .vqd header: K={K} (must be 2..{_U16_MAX})")
    if n < 1:
        raise VqdFormatError("invalid .vqd header: stage count 0 (must be at least 1)")
    if 0 in (C, H, W):
        raise VqdFormatError(f"invalid .vqd header: image shape {(C, H, W)} has a zero dimension")

    payload_len = payload_size(count, K, n)
    expected = header_size() + payload_len
    if len(data) < expected:
        raise VqdFormatError(f"truncated .vqd file: expected {expected} bytes, got {len(data)}")
    if len(data) > expected:
        raise VqdFormatError(f"trailing garbage after .vqd data: expected {expected} bytes, got {len(data)}")
    (stored_crc,) = _CRC.unpack_from(data, expected - _CRC.size)
    actual_crc = zlib.crc32(data[: expected - _CRC.size])
    if stored_crc != actual_crc:
        raise VqdFormatError(
            f"corrupt .vqd file: checksum mismatch (stored {stored_crc:08x}, computed {actual_crc:08x})"
        )
    if expected_fingerprint is not None:
        if not isinstance(expected_fingerprint, (bytes, bytearray)) or len(expected_fingerprint) != FINGERPRINT_SIZE:
            raise InputError(f"expected fingerprint must be {FINGERPRINT_SIZE} bytes, got {expected_fingerprint!r}")
        if bytes(expected_fingerprint) != fingerprint:
            ours, theirs = bytes(expected_fingerprint).hex(), fingerprint.hex()
            shown = 12 if ours[:12] != theirs[:12] else len(ours)
            raise VqdFormatError(
                f".vqd file was made by a different model (file fingerprint {theirs[:shown]}, "
                f"this model {ours[:shown]})"
            )

    codes = unpack_codes(data[_HEADER.size : _HEADER.size + payload_len], K, n, count)
    return VqdFile(
        codes=codes,
        K=K,
        image_shape=(C, H, W),
        fingerprint=fingerprint,
        stages=n,
        header_bytes=header_size(),
        payload_bytes=payload_len,
    )
