"""Tests for the .vqd bit packing and file format (vqdraw.compress.bitstream)."""

from __future__ import annotations

import math
import random
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqdraw.compress.bitstream import (
    MAGIC,
    VqdFile,
    VqdFormatError,
    bits_per_image,
    header_size,
    pack_codes,
    payload_size,
    read_header,
    read_vqd,
    unpack_codes,
    write_vqd,
)
from vqdraw.errors import InputError, VQDrawError

FP = bytes(range(16))
OTHER_FP = bytes(range(100, 116))
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_codes(seed: int, count: int, n: int, K: int, mode: str = "random") -> np.ndarray:
    if mode == "zeros":
        return np.zeros((count, n), dtype=np.int64)
    if mode == "max":
        return np.full((count, n), K - 1, dtype=np.int64)
    return np.random.default_rng(seed).integers(0, K, size=(count, n), dtype=np.int64)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def raw_file(*, K=4, n=3, count=1, shape=(1, 2, 3), version=1, flags=0, payload=b"\x6c", magic=MAGIC) -> bytes:
    """A file assembled by hand (valid CRC), so the reader can be fed headers the writer refuses to make."""
    header = struct.pack("<4sBB16sHHHHHI", magic, version, flags, FP, *shape, K, n, count)
    return with_crc(header + payload)


# --- bits_per_image ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("K", "n", "bits"),
    [(64, 10, 60), (2, 7, 7), (256, 3, 24), (3, 5, 8), (3, 6, 10), (10, 3, 10), (1, 50, 0), (5, 0, 0), (65535, 1, 16)],
)
def test_bits_per_image_known(K, n, bits):
    assert bits_per_image(K, n) == bits


@given(st.integers(1, 70000), st.integers(0, 300))
def test_bits_per_image_is_ceil_n_log2_k(K, n):
    bits = bits_per_image(K, n)
    assert 2**bits >= K**n  # enough room for every code sequence
    assert bits == 0 or 2 ** (bits - 1) < K**n  # and not one bit more
    if K & (K - 1) == 0:
        assert bits == n * (K.bit_length() - 1)
    else:
        assert abs(bits - n * math.log2(K)) < 1 + 1e-9


def test_non_power_of_two_is_exact():
    # 3**5 = 243 <= 256, so five ternary codes fit in one byte (naive packing would take 10 bits).
    assert bits_per_image(3, 5) == 8
    packed = pack_codes(np.full((4, 5), 2), 3)
    assert packed == bytes([242]) * 4
    assert (unpack_codes(packed, 3, 5, 4) == 2).all()


# --- packing ---------------------------------------------------------------------------------------


def test_pack_golden_bytes():
    # K=4: two bits per code, 1,2,3 -> 01 10 11 -> 011011|00 = 0x6C.
    assert pack_codes(np.array([[1, 2, 3]]), 4) == b"\x6c"
    # K=3, n=1: two bits per image, fields packed back to back: 01 10 | 0000 -> 0x60.
    assert pack_codes(np.array([[1], [2]]), 3) == b"\x60"
    # K=10, n=3: value 987 in 10 bits = 1111011011, then 1 = 0000000001; 20 bits -> 3 bytes.
    assert pack_codes(np.array([[9, 8, 7], [0, 0, 1]]), 10) == bytes([0b11110110, 0b11000000, 0b00010000])
    assert unpack_codes(b"\x6c", 4, 3, 1).tolist() == [[1, 2, 3]]


@FAST
@given(
    K=st.one_of(st.integers(2, 70000), st.sampled_from([2, 3, 255, 256, 257, 65535, 65536])),
    n=st.integers(0, 120),
    count=st.integers(0, 20),
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(["random", "random", "zeros", "max"]),
)
def test_pack_unpack_round_trip(K, n, count, seed, mode):
    codes = random_codes(seed, count, n, K, mode)
    packed = pack_codes(codes, K)
    assert len(packed) == math.ceil(count * bits_per_image(K, n) / 8) == payload_size(count, K, n)
    out = unpack_codes(packed, K, n, count)
    assert out.dtype == np.int64 and out.shape == (count, n)
    np.testing.assert_array_equal(out, codes)


def test_pack_accepts_other_integer_dtypes_and_lists():
    for dtype in (np.uint8, np.int32, np.uint64):
        assert pack_codes(np.array([[1, 2, 3]], dtype=dtype), 4) == b"\x6c"
    assert pack_codes([[1, 2, 3]], 4) == b"\x6c"


@pytest.mark.parametrize(
    "codes",
    [np.array([[0, 4, 1]]), np.array([[-1, 0, 0]]), np.array([[0.5, 1, 2]]), np.array([1, 2, 3])],
)
def test_pack_rejects_bad_codes(codes):
    with pytest.raises(InputError):
        pack_codes(codes, 4)


def test_unpack_rejects_wrong_length_padding_and_out_of_range():
    with pytest.raises(VqdFormatError, match="expected 1 bytes, got 2"):
        unpack_codes(b"\x6c\x00", 4, 3, 1)
    with pytest.raises(VqdFormatError, match="padding"):
        unpack_codes(b"\x6d", 4, 3, 1)
    # K=3, n=1 uses 2 bits per image; the pattern 11 = 3 is not a valid code.
    with pytest.raises(VqdFormatError, match="image 1 decodes to codes outside"):
        unpack_codes(bytes([0b01110000]), 3, 1, 2)


# --- files -----------------------------------------------------------------------------------------


def test_header_size():
    assert header_size() == 40


def test_file_golden_bytes():
    data = write_vqd(np.array([[1, 2, 3]]), 4, (1, 2, 3), FP)
    body = (
        b"VQDR\x01\x00" + FP + b"\x01\x00\x02\x00\x03\x00" + b"\x04\x00" + b"\x03\x00" + b"\x01\x00\x00\x00" + b"\x6c"
    )
    assert data == body + struct.pack("<I", zlib.crc32(body))
    assert data[-4:] == bytes.fromhex("17d0469c")  # pinned, as in docs/vqd-format.md


@FAST
@given(
    K=st.integers(2, 65535),
    n=st.integers(1, 64),
    count=st.integers(0, 12),
    shape=st.tuples(st.integers(1, 65535), st.integers(1, 65535), st.integers(1, 65535)),
    seed=st.integers(0, 2**32 - 1),
)
def test_file_round_trip_and_size(K, n, count, shape, seed):
    codes = random_codes(seed, count, n, K)
    data = write_vqd(codes, K, shape, FP)
    assert len(data) == header_size() + math.ceil(count * bits_per_image(K, n) / 8)
    f = read_vqd(data, expected_fingerprint=FP)
    assert isinstance(f, VqdFile)
    np.testing.assert_array_equal(f.codes, codes)
    assert f.codes.dtype == np.int64 and f.codes.shape == (count, n)
    assert (f.K, f.data_shape, f.fingerprint, f.stages, f.count) == (K, shape, FP, n, count)
    assert f.header_bytes == header_size() and f.header_bytes + f.payload_bytes == len(data)


def test_read_accepts_bytearray_and_memoryview():
    data = write_vqd(np.array([[1, 2, 3]]), 4, (1, 2, 3), FP)
    assert read_vqd(bytearray(data)).codes.tolist() == [[1, 2, 3]]
    assert read_vqd(memoryview(data)).codes.tolist() == [[1, 2, 3]]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.array([[1, 2]]), 1, (1, 2, 3), FP), "K must be"),
        ((np.array([[1, 2]]), 65536, (1, 2, 3), FP), "K must be"),
        ((np.zeros((2, 0), dtype=int), 4, (1, 2, 3), FP), "1..65535 stages"),
        ((np.array([[1, 2]]), 4, (0, 2, 3), FP), "image shape"),
        ((np.array([[1, 2]]), 4, (2,), FP), "image shape"),
        ((np.array([[1, 2]]), 4, (1, 2, 3), b"short"), "fingerprint"),
        ((np.array([[1, 4]]), 4, (1, 2, 3), FP), "out of range"),
    ],
)
def test_write_rejects_bad_arguments(args, match):
    with pytest.raises(InputError, match=match):
        write_vqd(*args)


# --- reader errors ---------------------------------------------------------------------------------

GOOD = raw_file()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty .vqd file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a .vqd file"),
        (b"VQ", "truncated .vqd file: expected at least 40 bytes, got 2"),
        (raw_file(version=4), "unsupported .vqd format version 4"),
        (raw_file(flags=1), "unsupported .vqd flags 0x01"),
        (GOOD[:30], "truncated .vqd file: expected at least 40 bytes, got 30"),
        (GOOD[:-1], "truncated .vqd file: expected 41 bytes, got 40"),
        (GOOD + b"\x00", "trailing garbage after .vqd data: expected 41 bytes, got 42"),
        (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "corrupt .vqd file: checksum mismatch"),
        (raw_file(K=1), r"invalid .vqd header: K=1 \(must be 2..65535\)"),
        (raw_file(K=0, payload=b""), "invalid .vqd header: K=0"),
        (raw_file(n=0, payload=b""), "invalid .vqd header: stage count 0"),
        (raw_file(shape=(1, 0, 3)), r"invalid .vqd header: image shape \(1, 0, 3\) has a zero dimension"),
        (raw_file(K=3, n=1, count=2, payload=bytes([0b01110000])), "image 1 decodes to codes outside"),
        (raw_file(payload=b"\x6d"), "non-zero padding bits"),
        ("VQDR", "must be bytes"),
    ],
)
def test_read_errors(data, match):
    with pytest.raises(VqdFormatError, match=match) as info:
        read_vqd(data)
    assert isinstance(info.value, VQDrawError)
    assert "\n" not in str(info.value)


def test_read_good_hand_made_file():
    assert read_vqd(GOOD).codes.tolist() == [[1, 2, 3]]


def test_fingerprint_mismatch():
    with pytest.raises(VqdFormatError, match="made by a different model") as info:
        read_vqd(GOOD, expected_fingerprint=OTHER_FP)
    assert FP.hex()[:12] in str(info.value) and OTHER_FP.hex()[:12] in str(info.value)
    # Fingerprints that agree at the start are shown in full so they can be told apart.
    near = FP[:-1] + b"\xff"
    with pytest.raises(VqdFormatError, match=near.hex()):
        read_vqd(GOOD, expected_fingerprint=near)
    assert read_vqd(GOOD, expected_fingerprint=FP).fingerprint == FP
    assert read_vqd(GOOD).fingerprint == FP  # no check without an expected fingerprint


# --- fuzzing ---------------------------------------------------------------------------------------

SAMPLES = [
    write_vqd(random_codes(1, 3, 5, 3), 3, (1, 28, 28), FP),
    write_vqd(random_codes(2, 2, 10, 64), 64, (3, 32, 32), FP),
    write_vqd(random_codes(3, 4, 7, 1000), 1000, (1, 8, 8), FP),
    write_vqd(random_codes(4, 0, 4, 5), 5, (1, 1, 1), FP),
]


def read_or_format_error(data: bytes) -> None:
    try:
        f = read_vqd(data)
    except VqdFormatError as e:
        assert "\n" not in str(e)
    else:
        assert f.codes.shape == (f.count, f.stages)
        assert f.codes.size == 0 or (0 <= f.codes.min() and f.codes.max() < f.K)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=120), st.binary(max_size=120).map(lambda b: MAGIC + b"\x01" + b)))
def test_fuzz_random_bytes(data):
    read_or_format_error(data)


@st.composite
def mutated_files(draw):
    """A sample file with 1-3 random edits; positions come from a seeded RNG so they spread over the file."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "flip", "set", "truncate", "insert", "delete"]))
        pos = rng.randrange(len(data)) if data else 0
        if kind == "flip" and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif kind == "set" and data:
            data[pos] = rng.randrange(256)
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif kind == "delete":
            del data[pos : pos + rng.randint(1, 8)]
    if draw(st.booleans()) and len(data) >= 4:  # fix the CRC so the mutation reaches the deeper checks
        data = bytearray(with_crc(bytes(data[:-4])))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(mutated_files())
def test_fuzz_mutated_files(data):
    read_or_format_error(data)


@settings(max_examples=150, deadline=None)
@given(
    sample=st.sampled_from(
        [write_vqd(random_codes(5, 3, 1, 3), 3, (1, 1, 1), FP), write_vqd(random_codes(3, 4, 7, 1000), 1000, (1, 8, 8), FP)]
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_fuzz_payload_flips_with_valid_crc(sample, seed):
    # Payload damage that the CRC misses must still be caught or decode to in-range codes.
    rng = random.Random(seed)
    data = bytearray(sample[:-4])
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(header_size() - 4, len(data))] ^= 1 << rng.randrange(8)
    try:
        f = read_vqd(with_crc(bytes(data)))
    except VqdFormatError as e:
        assert "outside [0," in str(e) or "padding" in str(e)
    else:
        assert 0 <= f.codes.min() and f.codes.max() < f.K


def test_a_version_2_image_file_reads_as_the_format_says():
    """vqdraw writes images as version 1, but a version-2 image file (36 + 2r bytes of overhead, as
    docs/vqd-format.md specifies) is valid and reads to the same codes."""
    import struct
    import zlib

    import numpy as np

    from vqdraw.compress.bitstream import read_vqd, write_vqd

    codes = np.arange(12, dtype=np.int64).reshape(3, 4) % 64
    v1 = write_vqd(codes, 64, (1, 28, 28), b"\x07" * 16)
    payload = v1[36:-4]
    body = (b"VQDR" + bytes([2, 0]) + b"\x07" * 16 + bytes([1, 3]) + struct.pack("<3H", 1, 28, 28)
            + struct.pack("<HHI", 64, 4, 3) + payload)
    v2 = body + struct.pack("<I", zlib.crc32(body))
    assert len(v2) == 36 + 2 * 3 + len(payload)
    got = read_vqd(v2)
    assert got.version == 2 and got.modality == "image" and got.data_shape == (1, 28, 28)
    assert np.array_equal(got.codes, codes)


@pytest.mark.parametrize("code,name,shape", [(5, "audio", (1, 1024)), (6, "speech", (1, 40, 16))])
def test_version_3_headers_of_audio_and_speech_are_refused(code, name, shape):
    """Entropy-coded files hold neither (the writer refuses them); a header that declares one is refused
    in one line, before any size arithmetic."""
    body = (struct.pack("<4sBB16s16sBB", MAGIC, 3, 0, bytes(16), bytes(16), code, len(shape))
            + struct.pack(f"<{len(shape)}H", *shape) + struct.pack("<HHIH", 64, 20, 0, 1))
    with pytest.raises(VqdFormatError, match=f"version 3 \\(entropy-coded\\) files hold no {name}"):
        from vqdraw.compress.bitstream import read_header

        read_header(with_crc(body))


def test_every_modality_has_one_layout_row_and_a_registered_layout_is_read_by_the_same_code():
    from vqdraw.compress.bitstream import LAYOUTS, MODALITY_CODES, Layout, register_layout
    from vqdraw.core.modality import MODALITIES

    assert set(MODALITIES) <= set(LAYOUTS)
    assert len({layout.code for layout in LAYOUTS.values()}) == len(LAYOUTS)  # one byte per modality
    assert {name: layout.code for name, layout in LAYOUTS.items()} == MODALITY_CODES
    register_layout("layout_row_test", 231, 3)
    row = LAYOUTS["layout_row_test"]
    assert row == Layout("layout_row_test", 231, 3, coded=False, own_block=True)
    fp = bytes(range(16))
    data = write_vqd(np.zeros((2, 3), np.int64), 4, (1, 8, 8), fp, modality="layout_row_test", extra=b"abc")
    f = read_vqd(data)
    assert (f.modality, f.extra, f.header_bytes) == ("layout_row_test", b"abc", header_size((1, 8, 8), "layout_row_test", extra=b"abc"))


def test_an_audio_header_with_rate_0_is_refused_for_the_rate_first():
    fp = bytes(range(16))
    data = bytearray(write_vqd(np.zeros((2, 3), np.int64), 4, (1, 16), fp, modality="audio", length=20,
                               sample_rate=8000))
    at = 24 + 2 * 2 + 8  # version-2 header, the shape (1, 16), K, n and count: then length u64, rate u32
    assert struct.unpack_from("<QI", data, at) == (20, 8000)
    struct.pack_into("<I", data, at + 8, 0)
    with pytest.raises(VqdFormatError, match="invalid .vqd header: audio sample rate 0$"):
        read_header(bytes(data))
    struct.pack_into("<Q", data, at, 10**6)  # a length that fits no count as well: still the rate first
    with pytest.raises(VqdFormatError, match="audio sample rate 0$"):
        read_header(bytes(data))
    struct.pack_into("<IQ", data, at - 4, 2, 20)  # count 2 and a fitting length again, rate still 0
    with pytest.raises(VqdFormatError, match="audio sample rate 0$"):
        read_header(bytes(data))


def test_write_vqd_asks_for_a_length_and_rate_where_the_layout_has_them():
    fp, codes = bytes(range(16)), np.zeros((1, 3), np.int64)
    with pytest.raises(InputError, match="needs the data's length"):
        write_vqd(codes, 4, (1, 16), fp, modality="text")
    with pytest.raises(InputError, match="needs the sample rate"):
        write_vqd(codes, 4, (1, 16), fp, modality="audio", length=10)
    with pytest.raises(InputError, match=r"speech length -1 does not fit .* \(must be 0\.\.-1\)"):
        write_vqd(codes, 4, (1, 40, 16), fp, modality="speech", length=-1, sample_rate=8000)
    assert header_size((1, 16), "audio", coded=True) == header_size((1, 16), "sequence", coded=True)
    assert header_size((1, 16), "text", coded=True) == header_size((1, 16), "sequence", coded=True) + 8
