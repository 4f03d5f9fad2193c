"""The ``.vqd`` compressed file format: VQ-DRAW codes packed at their exact entropy bound.

A VQ-DRAW model encodes an image (or a voxel grid, a sequence) as ``n`` integer codes in
``[0, K)``, one per stage. This module turns a batch of such codes into bytes and back. It is
pure bit-level work (numpy and the standard library only, no torch) and knows nothing about
models beyond a 16-byte fingerprint that says which model made the codes, and the kind and
shape of the data they stand for.

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

Version 2 (written for data other than images; images keep version 1, byte for byte) records
the modality and a data shape of any rank::

         0     4   magic  b"VQDR"
         4     1   format version (2)
         5     1   flags (reserved, 0)
         6    16   model fingerprint
        22     1   modality code: 1 image, 2 volume, 3 sequence, 4 text, 5 audio, 6 speech (MODALITY_CODES)
        23     1   r, the number of data dimensions (channels first): 3, 4 or 2 by modality
        24    2r   the data shape, r u16 values each 1..65535
     24+2r     2   K
     26+2r     2   n
     28+2r     4   count
     32+2r     P   payload (as in version 1)
   32+2r+P     4   CRC-32 of everything before it

Text (modality 4, shape (1, L): ``count`` chunks of L characters) has one more field, the text's
length in characters, a u64 after ``count`` (so the payload starts at 40+2r); decoding keeps that
many characters of the ``count * L`` decoded, dropping the padding of the last chunk. The length
must lie in ``((count - 1) * L, count * L]`` (0 when count is 0).

Audio (modality 5, shape (1, L): ``count`` clips of L samples, mono) records the waveform's length
in samples the same way (a u64 after ``count``), then its sample rate in Hz (u32, at least 1), so
the payload starts at 44+2r; decoding keeps that many samples of the clips concatenated.

Speech (modality 6, shape (1, B, F): ``count`` blocks of F log-mel frames of B bands, a frame every
:data:`SPEECH_HOP` = 64 samples) records the waveform's length in samples and its sample rate as
audio does; a waveform of ``length`` samples has ``1 + length // 64`` frames, which must lie in
``((count - 1) * F, count * F]``.

A volume file has ``header_size((1, 32, 32, 32), "volume")`` = 44 bytes of overhead.

Each modality's layout (its byte, dimensions and fields after ``count``) is one row of
:data:`LAYOUTS`; a modality defined outside the package adds a row with :func:`register_layout`
(code 128..255, its own opaque header block), read and written by the same code as the built-in
rows.

Version 3 (entropy-coded, written only when a prior is given: ``write_vqd(..., coder=prior)``)
holds the same header fields as version 2 plus the prior's fingerprint and a block size, and a
range-coded payload instead of the fixed-length one::

         0     4   magic  b"VQDR"
         4     1   format version (3)
         5     1   flags (reserved, 0)
         6    16   model fingerprint
        22    16   prior fingerprint
        38     1   modality code
        39     1   r
        40    2r   the data shape
     40+2r     2   K
     42+2r     2   n
     44+2r     4   count
     48+2r     2   block: items per block of the stream (1..65535, block*K <= 2**22)
     50+2r     8   (text only) the text's length in characters
         …     P   payload: range-coded 32-bit little-endian words (P a multiple of 4)
       …+P     4   CRC-32 of everything before it

The payload's meaning (block by block, stage by stage, with the prior's integer frequencies) is
:mod:`vqdraw.compress.entropy`'s; this module only checks its framing, and hands the payload to the
``coder`` (an object with ``fingerprint()``, ``encode_codes`` and ``decode_codes``: a
:class:`vqdraw.prior.Prior`). Since no code gets more than 3/4 of the probability, every code
costs at least log2(4/3) bits, so a file holds at most ``SYMBOLS_PER_BIT * (8 * P + SLACK_BITS)``
codes (``count * n``): the cost of reading a file stays linear in its size. The payload must be
exactly the words the coder writes for its codes: the decoder stops as soon as it would read past
the payload's end, and refuses words left over after the last code; ``count = 0`` needs an empty
payload.

Errors
------
``read_vqd`` and ``unpack_codes`` raise :class:`VqdFormatError` (a ``VQDrawError``)
for any bytes that are not a valid file; the message is one line a person can act
on. Invalid arguments on the writing side (codes out of range, a bad shape or
fingerprint) raise :class:`vqdraw.errors.InputError`.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from vqdraw.errors import InputError, VQDrawError

__all__ = [
    "FORMAT_VERSION",
    "LAYOUTS",
    "Layout",
    "MAGIC",
    "MODALITY_CODES",
    "VERSIONS",
    "MAX_MIXED_RADIX_BITS",
    "VqdFile",
    "VqdFormatError",
    "VqdHeader",
    "bits_per_image",
    "check_header",
    "check_prior",
    "MAX_BLOCK_CELLS",
    "check_vqd",
    "header_size",
    "pack_codes",
    "mixed_radix_limit_ok",
    "payload_size",
    "read_header",
    "read_vqd",
    "register_layout",
    "unpack_codes",
    "write_vqd",
]

MAGIC = b"VQDR"
FORMAT_VERSION = 3
"""The newest version this module reads and writes (images are still written as version 1, other
data as version 2; version 3 only when entropy-coded with a prior)."""
VERSIONS = (1, 2, 3)
FINGERPRINT_SIZE = 16
_HEADER = struct.Struct("<4sBB16sHHHHHI")  # version 1: magic, version, flags, fingerprint, C, H, W, K, n, count
_HEADER2 = struct.Struct("<4sBB16sBB")  # version 2: magic, version, flags, fingerprint, modality, r
_TAIL2 = struct.Struct("<HHI")  # version 2, after the r u16 sizes: K, n, count
_HEADER3 = struct.Struct("<4sBB16s16sBB")  # version 3: magic, version, flags, model fp, prior fp, modality, r
_TAIL3 = struct.Struct("<HHIH")  # version 3, after the sizes: K, n, count, block
_CRC = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")  # a layout's length field (text, audio, speech), after the tail
_RATE = struct.Struct("<I")  # a layout's sample rate (audio, speech), after the length
_EXTRA = struct.Struct("<H")  # a plug-in layout's own block, after the tail: its byte length, then the bytes
PLUGIN_CODES = range(128, 256)
"""Modality codes for layouts registered from outside the package (:func:`register_layout`)."""
MAX_EXTRA_BYTES = 4096
"""A plug-in modality's own header block holds at most this many bytes."""
SPEECH_HOP = 64
"""Samples between a speech model's spectrogram frames (:data:`vqdraw.data.spectral.HOP`)."""
MAX_BLOCK_CELLS = 1 << 22
"""Version 3: block * K is at most this (bounds a decoder's memory per block)."""
SYMBOLS_PER_BIT = 3
"""Version 3: count * n <= SYMBOLS_PER_BIT * (payload bits + SLACK_BITS); every code costs at
least log2(4/3) = 0.415 bits (1/0.415 < 3)."""
SLACK_BITS = 64
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
_MAX_PACK_K = 2**31  # keeps every per-chunk accumulator inside int64
_CHUNK_LIMIT = 2**62
MAX_MIXED_RADIX_BITS = 16384
"""Largest image, in bits, for a ``K`` that is not a power of two (its unpacking is quadratic)."""


class VqdFormatError(VQDrawError, ValueError):
    """Bytes that are not a valid ``.vqd`` file: wrong magic, truncated, corrupt, or from another model."""


@dataclass(frozen=True)
class Layout:
    """One modality's version-2 (and 3) files: the modality byte, the data's dimensions (channels
    first), and the fields after ``count`` — a length (``length_unit``: what it counts), then a
    sample rate, or (a plug-in's) an opaque block of its own. Every modality's layout is a row of
    :data:`LAYOUTS`, the built-in ones and those :func:`register_layout` adds alike."""

    name: str
    code: int
    dims: int
    length_unit: str | None = None
    """The length field (u64): what it counts ("characters", "samples"); None: no length."""
    rate: bool = False
    """A sample rate in Hz (u32, at least 1) after the length."""
    hop: int = 1
    """Samples per chunk element: a waveform of L samples fills ``1 + L // hop`` elements (speech's
    frames) when ``hop`` > 1, else L elements."""
    coded: bool = True
    """Whether entropy-coded (version 3) files may hold it (with its length field, no rate or block)."""
    own_block: bool = False
    """A plug-in's own header block: a u16 byte length, then that many bytes (``extra``)."""

    def fields_size(self, extra_bytes: int = 0) -> int:
        """Bytes after ``count``: the length, the rate, or the block's length and ``extra_bytes``."""
        if self.own_block:
            return _EXTRA.size + extra_bytes
        return (_LENGTH.size if self.length_unit else 0) + (_RATE.size if self.rate else 0)

    def check_length(self, length, count: int, chunk: int, error) -> None:
        """The length must fill ``count`` chunks of ``chunk`` elements, the last one partly."""
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
            raise error(f"{self.name} length must be a whole number, got {length!r}")
        unit = self.length_unit
        if self.hop > 1:  # L samples make 1 + L // hop elements: (count - 1) * chunk < 1 + L // hop <= count * chunk
            low, high = ((count - 1) * chunk * self.hop, count * chunk * self.hop - 1) if count and length >= 0 \
                else (0, -1)
            unit = f"frames ({self.hop} samples each)"
        else:
            low, high = ((count - 1) * chunk + 1, count * chunk) if count else (0, 0)
        if not low <= length <= high:
            raise error(f"{self.name} length {length} does not fit {count} chunks of {chunk} {unit} "
                        f"(must be {low}..{high})")


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("image", 1, 3),
    Layout("volume", 2, 4),
    Layout("sequence", 3, 2),
    Layout("text", 4, 2, length_unit="characters"),
    Layout("audio", 5, 2, length_unit="samples", rate=True, coded=False),
    Layout("speech", 6, 3, length_unit="samples", rate=True, hop=SPEECH_HOP, coded=False),
)}
"""Every modality a ``.vqd`` file may hold, by name (:data:`vqdraw.core.modality.MODALITIES` and
the registered ones): the format's one table of layouts."""
_BY_CODE = {layout.code: layout for layout in LAYOUTS.values()}
MODALITY_CODES = {name: layout.code for name, layout in LAYOUTS.items()}
"""Version 2's modality byte by modality name."""
_BUILT_IN_CODES = ", ".join(f"{c} {m}" for m, c in MODALITY_CODES.items())  # for messages: the same in every process


def register_layout(name: str, code: int, dims: int) -> None:
    """A new ``.vqd`` layout for a modality defined outside the package: version-2 files whose
    modality byte is ``code`` (one of :data:`PLUGIN_CODES`, 128..255), data of ``dims`` dimensions
    (channels first, 2..4), and after ``count`` the modality's own header block, opaque to this
    module: a u16 byte length (at most :data:`MAX_EXTRA_BYTES`) and that many bytes, which the
    modality writes (``write_vqd(..., extra=...)``) and reads back (``VqdFile.extra``). Called by
    :func:`vqdraw.modalities.register`."""
    if not isinstance(name, str) or not name.isidentifier() or name in LAYOUTS:
        raise InputError(f"a new .vqd layout needs a new identifier-like name, got {name!r:.40}")
    if isinstance(code, bool) or not isinstance(code, int) or code not in PLUGIN_CODES:
        raise InputError(f"a plug-in modality's code must be a whole number in "
                         f"{PLUGIN_CODES.start}..{PLUGIN_CODES.stop - 1}, got {code!r:.40}")
    if code in _BY_CODE:
        raise InputError(f"modality code {code} is taken by {_BY_CODE[code].name!r}")
    if isinstance(dims, bool) or not isinstance(dims, int) or not 2 <= dims <= 4:
        raise InputError(f"a .vqd layout holds data of 2-4 dimensions (channels first), got {dims!r:.40}")
    layout = Layout(name, code, dims, coded=False, own_block=True)
    LAYOUTS[name] = _BY_CODE[code] = layout
    MODALITY_CODES[name] = code


def header_size(data_shape: tuple[int, ...] | None = None, modality: str | None = None, *,
                coded: bool = False, extra: bytes = b"") -> int:
    """Fixed bytes per ``.vqd`` file besides the payload: the header plus the 4-byte CRC.

    40 for images (version 1; also with no arguments); ``36 + 2 * len(data_shape)`` for data
    written as version 2 (a volume (1, D, H, W): 44). ``coded``: version 3 (entropy-coded),
    ``54 + 2 * len(data_shape)`` (images 60), 8 more for text. A plug-in layout's files
    (:func:`register_layout`) add 2 bytes and its ``extra`` block."""
    if coded:
        shape = (1, 1, 1) if data_shape is None else tuple(data_shape)
        layout = LAYOUTS.get(modality or "image")
        fields = _LENGTH.size if layout is not None and layout.coded and layout.length_unit else 0  # text's length
        return _HEADER3.size + 2 * len(shape) + _TAIL3.size + fields + _CRC.size
    if data_shape is None or _version_for(tuple(data_shape), modality) == 1:
        return _HEADER.size + _CRC.size
    return _version2_size(tuple(data_shape), modality, len(extra))


def _version2_size(shape: tuple[int, ...], modality: str | None, extra_bytes: int = 0) -> int:
    """A version-2 file's header plus CRC (images too: a version-2 image file is valid, though
    vqdraw writes images as version 1); a plug-in layout's holds its block of ``extra_bytes``."""
    layout = LAYOUTS.get(modality or "image")
    fields = layout.fields_size(extra_bytes) if layout is not None else 0
    return _HEADER2.size + 2 * len(shape) + _TAIL2.size + fields + _CRC.size


def _version_for(shape: tuple[int, ...], modality: str | None) -> int:
    """Images are written as version 1 (as before version 2 existed), everything else as 2."""
    return 1 if (modality or "image") == "image" and len(shape) == 3 else 2


def _layout_for(shape: tuple[int, ...], modality: str | None) -> Layout:
    if modality is None:
        modality = {2: "sequence", 3: "image", 4: "volume"}.get(len(shape))
        if modality is None:
            raise InputError(f"data shape {shape!r} has 2-4 dimensions (channels first) in a .vqd file")
    layout = LAYOUTS.get(modality)
    if layout is None:
        raise InputError(f"unknown modality {modality!r}; a .vqd file knows {', '.join(LAYOUTS)}")
    if len(shape) != layout.dims:
        raise InputError(f"{modality} data have {layout.dims} dimensions (channels first); got shape {shape!r}")
    return layout


def bits_per_image(K: int, n: int) -> int:
    """Exactly ``ceil(n * log2(K))``: the bits that hold ``n`` base-``K`` digits (0 when ``K == 1`` or ``n == 0``)."""
    K, n = _check_radix(K, n)
    if K == 1 or n == 0:
        return 0
    if K & (K - 1) == 0:  # a power of two: log2(K) bits per code, exactly
        return n * (K.bit_length() - 1)
    estimate = n * math.log2(K)  # never an integer for K not a power of two
    bits = math.ceil(estimate)
    if bits - estimate > 1e-6 and estimate - (bits - 1) > 1e-6:  # far from a rounding doubt
        return bits
    return (K**n - 1).bit_length()  # rare: exact big-integer answer


def payload_size(count: int, K: int, n: int) -> int:
    """Bytes of the packed payload for ``count`` images: ``ceil(count * bits_per_image(K, n) / 8)``."""
    if int(count) < 0:
        raise InputError(f"image count must be >= 0, got {count}")
    return (int(count) * bits_per_image(K, n) + 7) // 8


def mixed_radix_limit_ok(K: int, n: int) -> bool:
    """Whether ``n`` base-``K`` codes fit the format's cost limit: always for a power-of-two ``K``;
    otherwise images of at most :data:`MAX_MIXED_RADIX_BITS` bits.

    Base conversion of one image's number costs time quadratic in its bits (see unpack_codes),
    so images of a ``K`` that is not a power of two are capped; every power-of-two ``K``
    unpacks by bit slicing in time linear in the payload.
    """
    K, n = _check_radix(K, n)
    return K & (K - 1) == 0 or bits_per_image(K, n) <= MAX_MIXED_RADIX_BITS


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
    if K & (K - 1) == 0:  # each code is its own log2(K)-bit field
        return np.packbits(_ints_to_bits(arr.reshape(-1), bits // n).reshape(-1)).tobytes()
    if bits <= 63:  # one int64 per image
        values = np.zeros(count, dtype=np.int64)
        for col in range(n):
            values = values * K + arr[:, col]
        return np.packbits(_ints_to_bits(values, bits).reshape(-1)).tobytes()
    width = (bits + 7) // 8
    values = _digits_to_ints(arr, K)
    rows = np.frombuffer(b"".join(v.to_bytes(width, "big") for v in values), dtype=np.uint8)
    fields = np.unpackbits(rows.reshape(count, width), axis=1)[:, width * 8 - bits :]
    return np.packbits(fields.reshape(-1)).tobytes()


def _ints_to_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`_bits_to_ints`: each of ``values`` (int64 >= 0) as ``bits`` 0/1 uint8, MSB first."""
    out = np.empty((values.shape[0], bits), dtype=np.uint8)
    for col in range(bits):
        out[:, col] = (values >> (bits - 1 - col)) & 1
    return out


def unpack_codes(data: bytes, K: int, n: int, count: int) -> np.ndarray:
    """Unpack ``count`` images of ``n`` base-``K`` codes from ``data``; returns int64 ``(count, n)``.

    Inverse of :func:`pack_codes`. ``data`` must be exactly ``payload_size(count, K, n)``
    bytes with zero padding bits, and every image must decode to codes in ``[0, K)``;
    otherwise :class:`VqdFormatError` is raised.

    Cost: the length is checked before anything is allocated, so the work is bounded by
    ``len(data)``. A power-of-two ``K`` is unpacked by slicing bits and images of at most 63
    bits with vectorised int64 arithmetic, both in time linear in the payload; other images
    (a ``K`` that is not a power of two, more than 63 bits) are converted one by one with
    Python integers, in time quadratic in their size, which :data:`MAX_MIXED_RADIX_BITS` caps.
    """
    K, n = _check_radix(K, n)
    count = int(count)
    expected = payload_size(count, K, n)
    if len(data) != expected:
        raise VqdFormatError(f"corrupt .vqd payload: expected {expected} bytes, got {len(data)}")
    if not mixed_radix_limit_ok(K, n):
        raise VqdFormatError(
            f".vqd images of {bits_per_image(K, n)} bits with K={K} (not a power of two) exceed the "
            f"{MAX_MIXED_RADIX_BITS}-bit limit of this reader"
        )
    bits = bits_per_image(K, n)
    if count == 0 or bits == 0:
        return np.zeros((count, n), dtype=np.int64)
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    used = count * bits
    if used % 8 and raw[-1] & ((1 << (8 - used % 8)) - 1):
        raise VqdFormatError("corrupt .vqd payload: non-zero padding bits")
    fields = np.unpackbits(raw, count=used).reshape(count, bits)  # one uint8 per bit
    if K & (K - 1) == 0:
        return _bits_to_ints(fields.reshape(count * n, bits // n)).reshape(count, n)
    if bits <= 63:
        values = _bits_to_ints(fields)
        bad = np.flatnonzero(values >= K**n)
        if bad.size:
            raise VqdFormatError(
                f"corrupt .vqd payload: image {int(bad[0])} decodes to codes outside [0, {K})"
            )
        out = np.empty((count, n), dtype=np.int64)
        for col in range(n - 1, -1, -1):  # least significant digit last in the row
            values, out[:, col] = np.divmod(values, K)
        return out
    width = (bits + 7) // 8
    padded = np.zeros((count, width * 8), dtype=np.uint8)
    padded[:, width * 8 - bits :] = fields
    rows = np.packbits(padded, axis=1)
    values = [int.from_bytes(row.tobytes(), "big") for row in rows]
    return _ints_to_digits(values, K, n)


def _bits_to_ints(fields: np.ndarray) -> np.ndarray:
    """Each row of ``fields`` (0/1 uint8, at most 63 columns, most significant first) as int64."""
    out = np.zeros(fields.shape[0], dtype=np.int64)
    for col in range(fields.shape[1]):  # one vectorised pass per bit of a row
        out <<= 1
        out |= fields[:, col]
    return out


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
    data_shape: tuple[int, ...]  # channels first: (C, H, W) images, (C, D, H, W) volumes, (C, L) sequences
    fingerprint: bytes  # 16 bytes
    stages: int
    header_bytes: int  # fixed overhead: header + CRC, == header_size(data_shape, modality)
    payload_bytes: int
    modality: str = "image"  # "image", "volume", "sequence" or "text" (version 1 files: "image")
    version: int = 1
    length: int | None = None  # text: the number of characters (the rest of the last chunk is padding); audio: samples
    sample_rate: int | None = None  # audio only: samples per second
    prior_fingerprint: bytes | None = None  # version 3: the prior the codes were entropy-coded with
    extra: bytes | None = None  # a plug-in layout's own header block (register_layout); None for the others

    @property
    def count(self) -> int:
        """Number of images (items) in the file."""
        return int(self.codes.shape[0])


def write_vqd(codes: np.ndarray, K: int, data_shape: tuple[int, ...], fingerprint: bytes, *,
              modality: str | None = None, length: int | None = None, sample_rate: int | None = None,
              coder=None, block: int | None = None, extra: bytes | None = None) -> bytes:
    """Serialise ``codes`` (``(B, n)`` in ``[0, K)``) for data of ``data_shape`` as ``.vqd`` bytes.

    ``data_shape`` is (C, H, W) for images, (C, D, H, W) for volumes, (C, L) for sequences;
    ``modality`` defaults to the one its rank implies. Images are written as version 1 (the same
    bytes as before version 2 existed), other data as version 2. ``length`` (text only, required
    there): the text's length in characters, ``count`` chunks of ``data_shape[-1]`` holding it.
    Audio records its length in samples the same way, and its ``sample_rate`` (Hz, required there).
    ``coder`` (a :class:`vqdraw.prior.Prior`): write version 3, the codes range-coded with it in
    blocks of ``block`` items (default: 1024, fewer when ``block * K`` would pass
    :data:`MAX_BLOCK_CELLS`). ``extra`` (bytes, required for and only for a layout registered with
    :func:`register_layout`): the modality's own header block, stored as given.
    """
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or not 2 <= K <= _U16_MAX:
        raise InputError(f"K must be an integer in 2..{_U16_MAX} for a .vqd file, got {K!r}")
    shape = tuple(data_shape)
    if not 2 <= len(shape) <= 4 or not all(isinstance(d, (int, np.integer)) and 1 <= d <= _U16_MAX for d in shape):
        raise InputError(f"image shape must be (C, H, W) (volumes (C, D, H, W), sequences (C, L)) with each "
                         f"in 1..{_U16_MAX}, got {data_shape!r}")
    layout = _layout_for(shape, modality)
    modality = layout.name
    if not isinstance(fingerprint, (bytes, bytearray)) or len(fingerprint) != FINGERPRINT_SIZE:
        raise InputError(f"model fingerprint must be {FINGERPRINT_SIZE} bytes, got {fingerprint!r}")
    arr = _check_codes(codes, int(K))
    count, n = arr.shape
    if not 1 <= n <= _U16_MAX:
        raise InputError(f"a .vqd file stores 1..{_U16_MAX} stages per image, got {n}")
    if count > _U32_MAX:
        raise InputError(f"a .vqd file stores at most {_U32_MAX} images, got {count}")
    if coder is None and not mixed_radix_limit_ok(int(K), n):
        raise InputError(
            f"{n} codes with K={K} take {bits_per_image(int(K), n)} bits per image; a .vqd file holds at "
            f"most {MAX_MIXED_RADIX_BITS} when K is not a power of two"
        )
    if bool(layout.length_unit) != (length is not None):
        raise InputError("a text, audio or speech .vqd file needs the data's length (and only those have one)")
    if layout.rate != (sample_rate is not None):
        raise InputError("an audio or speech .vqd file needs the sample rate (and only those have one)")
    if length is not None:
        layout.check_length(length, count, shape[-1], InputError)
    if sample_rate is not None and (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer))
                                    or not 1 <= sample_rate <= _U32_MAX):
        raise InputError(f"sample rate must be an integer in 1..{_U32_MAX}, got {sample_rate!r}")
    if layout.own_block != (extra is not None):
        raise InputError(f"the .vqd header block (extra=) is for modalities with their own layout; "
                         f"{modality} {'needs one' if layout.own_block else 'has none'}")
    if extra is not None and (not isinstance(extra, (bytes, bytearray)) or len(extra) > MAX_EXTRA_BYTES):
        raise InputError(f"a modality's header block must be at most {MAX_EXTRA_BYTES} bytes, "
                         f"got {len(extra) if isinstance(extra, (bytes, bytearray)) else type(extra).__name__}")
    if coder is not None:
        if not layout.coded:
            raise InputError(f"entropy-coded (version 3) .vqd files do not hold {modality}; write it at fixed length")
        return _write_coded(arr, int(K), shape, bytes(fingerprint), modality, length, coder, block)
    if _version_for(shape, modality) == 1:
        header = _HEADER.pack(MAGIC, 1, 0, bytes(fingerprint), *map(int, shape), int(K), n, count)
    else:
        header = (_HEADER2.pack(MAGIC, 2, 0, bytes(fingerprint), layout.code, len(shape))
                  + struct.pack(f"<{len(shape)}H", *map(int, shape)) + _TAIL2.pack(int(K), n, count)
                  + _pack_fields(layout, length, sample_rate, extra))
    body = header + pack_codes(arr, int(K))
    return body + _CRC.pack(zlib.crc32(body))


def _write_coded(arr: np.ndarray, K: int, shape: tuple[int, ...], fingerprint: bytes, modality: str,
                 length: int | None, coder, block: int | None) -> bytes:
    """Version 3: the header, the coder's payload, the CRC."""
    count, n = arr.shape
    if block is None:
        block = max(1, min(1024, MAX_BLOCK_CELLS // K))
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not 1 <= block <= _U16_MAX \
            or block * K > MAX_BLOCK_CELLS:
        raise InputError(f"block must be a whole number in 1..{min(_U16_MAX, MAX_BLOCK_CELLS // K)} "
                         f"for K={K}, got {block!r}")
    prior_fp = coder.fingerprint()
    if not isinstance(prior_fp, bytes) or len(prior_fp) != FINGERPRINT_SIZE:
        raise InputError(f"prior fingerprint must be {FINGERPRINT_SIZE} bytes, got {prior_fp!r}")
    payload = coder.encode_codes(arr, int(block)) if count else b""
    if len(payload) % 4 or not _coded_count_ok(count, n, len(payload)):
        raise InputError(f"these {count * n} codes cannot be entropy-coded within the format's limit "
                         f"({len(payload)} payload bytes); write them at fixed length (no prior)")
    header = (_HEADER3.pack(MAGIC, 3, 0, fingerprint, prior_fp, LAYOUTS[modality].code, len(shape))
              + struct.pack(f"<{len(shape)}H", *map(int, shape)) + _TAIL3.pack(K, n, count, int(block))
              + _pack_fields(LAYOUTS[modality], length, None, None))
    body = header + payload
    return body + _CRC.pack(zlib.crc32(body))


def _coded_count_ok(count: int, n: int, payload_bytes: int) -> bool:
    return count * n <= SYMBOLS_PER_BIT * (8 * payload_bytes + SLACK_BITS)


def _pack_fields(layout: Layout, length, rate, extra) -> bytes:
    """A layout's fields after ``count``, as the caller has checked them."""
    if layout.own_block:
        return _EXTRA.pack(len(extra)) + bytes(extra)
    return ((_LENGTH.pack(int(length)) if layout.length_unit else b"")
            + (_RATE.pack(int(rate)) if layout.rate else b""))


def _unpack_fields(layout: Layout, data: memoryview, at: int, need: int, count: int, chunk: int):
    """A layout's fields after ``count`` (at offset ``at``; the file holds at least ``need`` bytes
    counting them, their block's bytes not yet): (length, rate, extra), each None where absent."""
    def invalid(message: str) -> VqdFormatError:
        return VqdFormatError(f"invalid .vqd header: {message}")

    if layout.own_block:
        (size,) = _EXTRA.unpack_from(data, at)
        if size > MAX_EXTRA_BYTES:
            raise invalid(f"a {layout.name} header block of {size} bytes (at most {MAX_EXTRA_BYTES})")
        if len(data) < need + size:
            raise VqdFormatError(f"truncated .vqd file: expected at least {need + size} bytes, got {len(data)}")
        return None, None, bytes(data[at + _EXTRA.size: at + _EXTRA.size + size])
    length = rate = None
    if layout.rate:  # checked before the length (a rate of 0 is the plainer message)
        (rate,) = _RATE.unpack_from(data, at + _LENGTH.size)
        if rate == 0:
            raise invalid(f"{layout.name} sample rate 0")
    if layout.length_unit:
        (length,) = _LENGTH.unpack_from(data, at)
        layout.check_length(length, count, chunk, invalid)
    return length, rate, None


@dataclass(frozen=True)
class VqdHeader:
    """What a ``.vqd`` header declares, checked for consistency with the file's length."""

    fingerprint: bytes  # 16 bytes
    data_shape: tuple[int, ...]  # the data shape, channels first
    K: int
    stages: int
    count: int
    payload_bytes: int
    modality: str = "image"
    version: int = 1
    header_bytes: int = 40  # header + CRC
    length: int | None = None  # text only: characters; audio: samples
    sample_rate: int | None = None  # audio only: Hz
    prior_fingerprint: bytes | None = None  # version 3 only
    block: int | None = None  # version 3 only: items per block of the range-coded stream
    extra: bytes | None = None  # a plug-in layout's own header block


def _layout_of_code(code: int, dims: int, coded: bool = False) -> Layout:
    """The layout a header's modality byte names, refused if unknown, with other dimensions, or
    (``coded``) one that version 3 does not hold."""
    layout = _BY_CODE.get(code)
    if layout is None:
        raise VqdFormatError(f"invalid .vqd header: unknown modality code {code} (known: {_BUILT_IN_CODES})")
    if coded and not layout.coded:
        raise VqdFormatError(f"invalid .vqd header: version 3 (entropy-coded) files hold no {layout.name}")
    if dims != layout.dims:
        raise VqdFormatError(f"invalid .vqd header: {layout.name} data with {dims} dimensions "
                             f"(must be {layout.dims})")
    return layout


def read_header(data: bytes) -> VqdHeader:
    """Parse and check a ``.vqd`` header without reading the payload (rules 1-4 of docs/vqd-format.md).

    Checks magic, version, flags, ``K``, ``n`` and the image shape, and that the file is
    exactly as long as the header says, so later work is bounded by the file's real size.
    :class:`VqdFormatError` for any invalid input.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise VqdFormatError(f".vqd data must be bytes, got {type(data).__name__}")
    data = memoryview(data).cast("B")
    if not data:
        raise VqdFormatError("empty .vqd file (0 bytes)")
    head = bytes(data[: len(MAGIC)])
    if head != MAGIC:
        if MAGIC.startswith(head):
            raise VqdFormatError(f"truncated .vqd file: expected at least {header_size()} bytes, got {len(data)}")
        raise VqdFormatError(f"not a .vqd file (starts with {head.hex()}, expected {MAGIC.hex()} = {MAGIC!r})")
    version = data[len(MAGIC)] if len(data) > len(MAGIC) else 1
    if version not in VERSIONS:
        raise VqdFormatError(
            f"unsupported .vqd format version {version} (this vqdraw reads versions "
            f"{', '.join(map(str, VERSIONS))})"
        )
    if len(data) < header_size():
        raise VqdFormatError(f"truncated .vqd file: expected at least {header_size()} bytes, got {len(data)}")

    if version == 3:
        return _read_header3(data)
    modality, length, rate, extra = "image", None, None, None
    if version == 1:
        _, _, flags, fingerprint, C, H, W, K, n, count = _HEADER.unpack_from(data)
        shape = (C, H, W)
    else:
        _, _, flags, fingerprint, code, dims = _HEADER2.unpack_from(data)
        layout = _layout_of_code(code, dims)
        modality = layout.name
        fixed = _version2_size((1,) * dims, modality)
        if len(data) < fixed:
            raise VqdFormatError(f"truncated .vqd file: expected at least {fixed} bytes, got {len(data)}")
        shape = struct.unpack_from(f"<{dims}H", data, _HEADER2.size)
        K, n, count = _TAIL2.unpack_from(data, _HEADER2.size + 2 * dims)
        length, rate, extra = _unpack_fields(layout, data, _HEADER2.size + 2 * dims + _TAIL2.size, fixed, count,
                                             shape[-1])
    if flags != 0:
        raise VqdFormatError(f"unsupported .vqd flags 0x{flags:02x} (version {version} requires 0)")
    if K < 2:
        raise VqdFormatError(f"invalid .vqd header: K={K} (must be 2..{_U16_MAX})")
    if n < 1:
        raise VqdFormatError("invalid .vqd header: stage count 0 (must be at least 1)")
    if 0 in shape:
        raise VqdFormatError(f"invalid .vqd header: {modality} shape {tuple(shape)} has a zero dimension")
    fixed = header_size(shape, modality) if version == 1 else \
        _version2_size(tuple(shape), modality, len(extra) if extra is not None else 0)
    payload_len = payload_size(count, K, n)
    expected = fixed + payload_len
    if len(data) < expected:
        raise VqdFormatError(f"truncated .vqd file: expected {expected} bytes, got {len(data)}")
    if len(data) > expected:
        raise VqdFormatError(f"trailing garbage after .vqd data: expected {expected} bytes, got {len(data)}")
    return VqdHeader(fingerprint, tuple(shape), K, n, count, payload_len, modality, version, fixed, length, rate,
                     extra=extra)


def _read_header3(data: memoryview) -> VqdHeader:
    """Rules 1-4 for version 3 (the caller has checked magic and version)."""
    if len(data) < header_size((1,), coded=True):
        raise VqdFormatError(f"truncated .vqd file: expected at least {header_size((1,), coded=True)} bytes, "
                             f"got {len(data)}")
    _, _, flags, fingerprint, prior_fp, code, dims = _HEADER3.unpack_from(data)
    if flags != 0:
        raise VqdFormatError(f"unsupported .vqd flags 0x{flags:02x} (version 3 requires 0)")
    layout = _layout_of_code(code, dims, coded=True)
    modality = layout.name
    fixed = header_size((1,) * dims, modality, coded=True)
    if len(data) < fixed:
        raise VqdFormatError(f"truncated .vqd file: expected at least {fixed} bytes, got {len(data)}")
    shape = struct.unpack_from(f"<{dims}H", data, _HEADER3.size)
    K, n, count, block = _TAIL3.unpack_from(data, _HEADER3.size + 2 * dims)
    length, _, _ = _unpack_fields(layout, data, _HEADER3.size + 2 * dims + _TAIL3.size, fixed, count, shape[-1])
    if K < 2:
        raise VqdFormatError(f"invalid .vqd header: K={K} (must be 2..{_U16_MAX})")
    if n < 1:
        raise VqdFormatError("invalid .vqd header: stage count 0 (must be at least 1)")
    if 0 in shape:
        raise VqdFormatError(f"invalid .vqd header: {modality} shape {tuple(shape)} has a zero dimension")
    if block < 1 or block * K > MAX_BLOCK_CELLS:
        raise VqdFormatError(f"invalid .vqd header: block of {block} items with K={K} "
                             f"(must be 1..{MAX_BLOCK_CELLS // K})")
    payload_len = len(data) - fixed
    if payload_len % 4:
        raise VqdFormatError(f"corrupt .vqd file: the range-coded payload of {payload_len} bytes is not a "
                             "whole number of 32-bit words (truncated or trailing garbage)")
    if count == 0 and payload_len:
        raise VqdFormatError(f"corrupt .vqd file: {payload_len} bytes of range-coded payload for 0 items "
                             "(must be empty)")
    if not _coded_count_ok(count, n, payload_len):
        raise VqdFormatError(f"invalid .vqd header: {count} items of {n} codes cannot fit a range-coded "
                             f"payload of {payload_len} bytes (truncated?)")
    return VqdHeader(fingerprint, tuple(shape), K, n, count, payload_len, modality, 3, fixed, length,
                     prior_fingerprint=prior_fp, block=block)


def check_header(
    header: VqdHeader,
    expected_fingerprint: bytes | None = None,
    *,
    data_shape: tuple[int, ...] | None = None,
    K: int | None = None,
    max_stages: int | None = None,
    modality: str | None = None,
) -> None:
    """Refuse a header that does not fit the reading model (each check only when its argument is given):
    another modality (checked first: the clearest message), fingerprint, data shape or ``K``, or
    more than ``max_stages`` stages."""
    if modality is not None and header.modality != modality:
        shape = "x".join(map(str, header.data_shape))
        raise VqdFormatError(
            f".vqd file holds {header.modality} codes ({shape}); this model is {_a(modality)} {modality} model"
        )
    if expected_fingerprint is not None:
        if not isinstance(expected_fingerprint, (bytes, bytearray)) or len(expected_fingerprint) != FINGERPRINT_SIZE:
            raise InputError(f"expected fingerprint must be {FINGERPRINT_SIZE} bytes, got {expected_fingerprint!r}")
        if bytes(expected_fingerprint) != header.fingerprint:
            ours, theirs = bytes(expected_fingerprint).hex(), header.fingerprint.hex()
            shown = 12 if ours[:12] != theirs[:12] else len(ours)
            raise VqdFormatError(
                f".vqd file was made by a different model (file fingerprint {theirs[:shown]}, "
                f"this model {ours[:shown]})"
            )
    if data_shape is not None and tuple(header.data_shape) != tuple(data_shape):
        raise VqdFormatError(
            f".vqd file holds images of shape {header.data_shape}; this model makes {tuple(data_shape)}"
        )
    if K is not None and header.K != K:
        raise VqdFormatError(f".vqd file has K={header.K} options per stage; this model has K={K}")
    if max_stages is not None and header.stages > max_stages:
        raise VqdFormatError(f".vqd file has {header.stages} stages per image; this model has only {max_stages}")


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def check_vqd(data: bytes) -> VqdHeader:
    """Everything :func:`read_vqd` checks before unpacking (header, length, size limit, CRC), in
    time linear in ``len(data)``; the header. For refusing a broken file before loading a model."""
    header = read_header(data)
    _check_cost_and_crc(data, header)
    return header


def _check_cost_and_crc(data, header: VqdHeader) -> None:
    if header.version != 3 and not mixed_radix_limit_ok(header.K, header.stages):
        raise VqdFormatError(
            f".vqd images of {bits_per_image(header.K, header.stages)} bits with K={header.K} (not a power "
            f"of two) exceed the {MAX_MIXED_RADIX_BITS}-bit limit of this reader"
        )
    end = header.header_bytes - _CRC.size + header.payload_bytes
    (stored_crc,) = _CRC.unpack_from(data, end)
    actual_crc = zlib.crc32(memoryview(data).cast("B")[:end])
    if stored_crc != actual_crc:
        raise VqdFormatError(
            f"corrupt .vqd file: checksum mismatch (stored {stored_crc:08x}, computed {actual_crc:08x})"
        )


def read_vqd(
    data: bytes,
    expected_fingerprint: bytes | None = None,
    *,
    data_shape: tuple[int, ...] | None = None,
    K: int | None = None,
    max_stages: int | None = None,
    modality: str | None = None,
    coder=None,
) -> VqdFile:
    """Parse ``.vqd`` bytes; raises :class:`VqdFormatError` (and nothing else) for any invalid input.

    Order: the header (:func:`read_header`), then the reading model's expectations
    (:func:`check_header`: ``expected_fingerprint``, ``modality``, ``data_shape``, ``K``,
    ``max_stages``, each only when given), then (version 3) the prior: ``coder`` must be given and
    have the fingerprint the file records; then the size limit and the CRC, and only then the
    payload is unpacked (or range-decoded with ``coder``), once. So a file that does not fit the
    model or the prior costs nothing beyond its header.
    """
    header = read_header(data)
    check_header(header, expected_fingerprint, data_shape=data_shape, K=K, max_stages=max_stages,
                 modality=modality)
    if header.version == 3:
        check_prior(header, coder)
    _check_cost_and_crc(data, header)
    start = header.header_bytes - _CRC.size
    payload = bytes(memoryview(data).cast("B")[start : start + header.payload_bytes])
    if header.version == 3:
        codes = coder.decode_codes(payload, header.count, header.stages, header.block, VqdFormatError) \
            if header.count else np.zeros((0, header.stages), dtype=np.int64)
    else:
        codes = unpack_codes(payload, header.K, header.stages, header.count)
    return VqdFile(
        codes=codes,
        K=header.K,
        data_shape=header.data_shape,
        fingerprint=header.fingerprint,
        stages=header.stages,
        header_bytes=header.header_bytes,
        payload_bytes=header.payload_bytes,
        modality=header.modality,
        version=header.version,
        length=header.length,
        sample_rate=header.sample_rate,
        prior_fingerprint=header.prior_fingerprint,
        extra=header.extra,
    )


def check_prior(header: VqdHeader, coder) -> None:
    """Refuse (one line) to decode an entropy-coded file without its prior or with another one."""
    if header.version != 3:
        return
    wanted = header.prior_fingerprint
    if coder is None:
        raise VqdFormatError(f".vqd file is entropy-coded with a prior (fingerprint {wanted.hex()[:12]}) and "
                             "none was given; keep prior.json and prior.safetensors beside the model")
    ours = coder.fingerprint()
    if ours != wanted:
        raise VqdFormatError(f".vqd file was entropy-coded with a different prior (file prior "
                             f"{wanted.hex()[:12]}, this prior {ours.hex()[:12]})")
    if getattr(coder, "options", header.K) != header.K or getattr(coder, "stages", header.stages) < header.stages:
        raise VqdFormatError("the prior does not fit the .vqd file's K or stage count")
