"""Hostile .vqd files: the header is checked against the model before the payload, unpacking is
linear and bounded by the file's real size, and every failure is one line, fast."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import torch

import vqdraw.compress.bitstream as bitstream
from vqdraw import RefinerConfig, VQDraw
from vqdraw.compress.bitstream import (
    MAX_MIXED_RADIX_BITS,
    VqdFormatError,
    bits_per_image,
    check_vqd,
    payload_size,
    read_header,
    read_vqd,
    write_vqd,
)
from vqdraw.cli import main
from vqdraw.compress.codec import decompress, read_file
from vqdraw.errors import InputError

MB = 1 << 20


def forged(K: int, n: int, count: int, fingerprint: bytes = bytes(16), shape=(1, 28, 28), payload=None) -> bytes:
    """A CRC-valid file declaring K, n and count, with a zero (or given) payload of the right length."""
    body = struct.pack("<4sBB16sHHHHHI", b"VQDR", 1, 0, fingerprint, *shape, K, n, count)
    body += bytes(payload_size(count, K, n)) if payload is None else payload
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture(scope="module")
def model() -> VQDraw:
    torch.manual_seed(0)
    small = RefinerConfig(down=(8, 8), body=(16,), up=(8, 8))
    return VQDraw.from_preset("mnist", stages=3, options=64, refiner=small).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("hostile_vqd")
    model.save(root / "model")
    return root / "model"


@pytest.fixture
def no_unpacking(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the payload was unpacked")

    monkeypatch.setattr(bitstream, "unpack_codes", refuse)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


# --- the two reproducers ---------------------------------------------------------------------------


def test_1mb_file_declaring_k_and_n_65535_fails_fast():
    data = forged(65535, 65535, 8)
    assert MB <= len(data) < MB + 100
    start = time.perf_counter()
    with pytest.raises(VqdFormatError) as info:
        read_vqd(data)
    assert time.perf_counter() - start < 1.0
    assert "16384-bit limit" in one_line(info.value)


def test_1mb_file_declaring_k_and_n_65535_fails_fast_with_the_model(model, no_unpacking):
    data = forged(65535, 65535, 8, model.fingerprint())
    start = time.perf_counter()
    with pytest.raises(VqdFormatError, match="K=65535 options per stage; this model has K=64"):
        decompress(model, data)
    assert time.perf_counter() - start < 1.0


def test_cli_decode_of_the_65535_file_is_one_line_and_fast(saved, model, tmp_path, capsys):
    for K in (65535, 32768):  # 32768: a power of two passes the cost limit; the model's K stops it
        src = tmp_path / f"k{K}.vqd"
        src.write_bytes(forged(K, 65535, 8, model.fingerprint()))
        assert src.stat().st_size >= 900_000
        start = time.perf_counter()
        rc = main(["decode", "--model", str(saved), str(src), "-o", str(tmp_path / "out")])
        assert time.perf_counter() - start < 5.0
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err and ("limit" in err or "K=32768" in err), err
        assert not (tmp_path / "out").exists()


def test_1mb_file_of_one_bit_images_is_linear_in_time_and_memory():
    count = 8 * MB  # K=2, n=1: one bit per image, 1 MiB of payload
    payload = np.random.default_rng(0).integers(0, 256, MB, dtype=np.uint8).tobytes()
    data = forged(2, 1, count, payload=payload)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        f = read_vqd(data)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f.codes.shape == (count, 1)
    assert np.array_equal(f.codes[:, 0], np.unpackbits(np.frombuffer(payload, np.uint8)))
    assert seconds < 5.0
    assert peak < 200 * MB  # the int64 codes are 64 MiB; no Python int per image
    assert f.codes.nbytes == 64 * MB


# --- header before payload -------------------------------------------------------------------------


def test_header_is_checked_against_the_model_before_the_crc_and_payload(model, no_unpacking):
    fp = model.fingerprint()
    cases = {
        "different model": forged(64, 3, 2, bytes(16)),
        "shape": forged(64, 3, 2, fp, shape=(1, 14, 28)),
        "K=5 options": forged(5, 3, 2, fp),
        "4 stages per image": forged(64, 4, 2, fp),
    }
    for match, data in cases.items():
        broken = data[:-1] + bytes([data[-1] ^ 0xFF])  # a wrong CRC too: the model check comes first
        with pytest.raises(VqdFormatError, match=match):
            read_file(model, broken)


def test_check_vqd_checks_everything_but_the_payload(no_unpacking):
    data = write_vqd(np.zeros((3, 4), dtype=np.int64), 64, (1, 28, 28), bytes(16))
    header = check_vqd(data)
    assert (header.K, header.stages, header.count, header.payload_bytes) == (64, 4, 3, 9)
    with pytest.raises(VqdFormatError, match="checksum"):
        check_vqd(data[:-1] + bytes([data[-1] ^ 1]))


def test_read_header_bounds_counts_by_the_real_length():
    # A header declaring 2**32-1 images of 60 bits, in a 100-byte file: refused by length alone.
    data = forged(64, 10, 1, payload=bytes(60))[:-4]
    data = data[:32] + struct.pack("<I", 2**32 - 1) + data[36:]
    data += struct.pack("<I", zlib.crc32(data))
    start = time.perf_counter()
    declared = 40 + payload_size(2**32 - 1, 64, 10)
    with pytest.raises(VqdFormatError, match=f"truncated .vqd file: expected {declared} bytes, got 100"):
        read_header(data)
    assert time.perf_counter() - start < 0.1


# --- linear unpacking, the mixed-radix cap ---------------------------------------------------------


@pytest.mark.parametrize(("K", "n"), [(64, 100), (2**16 - 1, 3), (3, 39), (1000, 6), (3, 10337), (65521, 1024)])
def test_1mb_of_any_layout_unpacks_in_seconds(K, n):
    count = max(1, 8 * MB // bits_per_image(K, n))
    codes = np.random.default_rng(K).integers(0, K, (count, n))
    data = write_vqd(codes, K, (1, 1, 1), bytes(16))
    start = time.perf_counter()
    f = read_vqd(data)
    assert time.perf_counter() - start < 5.0
    assert np.array_equal(f.codes, codes)


def test_mixed_radix_images_over_the_cap_are_refused_both_ways():
    n = MAX_MIXED_RADIX_BITS // 2 + 1  # K=5 (not a power of two): over 2.3 bits per code
    assert bits_per_image(5, n) > MAX_MIXED_RADIX_BITS
    with pytest.raises(InputError, match="at most 16384"):
        write_vqd(np.zeros((1, n), dtype=np.int64), 5, (1, 1, 1), bytes(16))
    with pytest.raises(VqdFormatError, match="16384-bit limit"):
        read_vqd(forged(5, n, 1))
    # a power of two has no cap: 65535 codes of K=32768 round-trip
    codes = np.random.default_rng(1).integers(0, 32768, (2, 65535))
    assert np.array_equal(read_vqd(write_vqd(codes, 32768, (1, 1, 1), bytes(16))).codes, codes)


def test_out_of_range_codes_are_reported_by_image():
    # K=3, n=2: 4 bits per image; 1001 = 9 is a valid image, 1111 = 15 >= 9 is not.
    data = forged(3, 2, 2, payload=bytes([0b1000_1111]))
    with pytest.raises(VqdFormatError, match="image 1 decodes to codes outside"):
        read_vqd(data)
    assert read_vqd(forged(3, 2, 1, payload=bytes([0b1000_0000]))).codes.tolist() == [[2, 2]]


# --- version 3: the range decoder consumes exactly the payload -------------------------------------


@pytest.fixture(scope="module")
def v3_prior():
    """An untrained prior (near-uniform frequencies, K=16, N=5): the decoder's checks do not depend on
    what it learnt."""
    from vqdraw.prior import Prior, PriorConfig, PriorNet

    torch.manual_seed(3)
    return Prior(PriorNet(PriorConfig(16, 5, embed=8, hidden=16)))


def v3(prior, count: int = 20, seed: int = 0, block: int = 7) -> bytes:
    codes = np.random.default_rng(seed).integers(0, 16, (count, 5))
    return write_vqd(codes, 16, (1, 4, 4), bytes(16), coder=prior, block=block)


def reframed(data: bytes, payload: bytes | None = None, count: int | None = None) -> bytes:
    """``data`` (a version 3 image file) with another payload and/or count, its CRC recomputed."""
    header = read_header(data)
    start = header.header_bytes - 4
    body = bytearray(data[:start])
    if count is not None:
        struct.pack_into("<I", body, start - 6, count)  # count, then the u16 block, end the header
    body += data[start:-4] if payload is None else payload
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def payload_of(data: bytes) -> bytes:
    return data[read_header(data).header_bytes - 4 : -4]


V3_CASES = {
    # name: (make the file from a good one, what the one-line message says)
    "an all-zero payload declaring items it cannot hold": (
        lambda good: reframed(good, bytes(4096), count=9849), "ran past the end"),
    "one word missing at the end": (lambda good: reframed(good, payload_of(good)[:-4]), "ran past the end|failed"),
    "one more item declared": (lambda good: reframed(good, count=21), "ran past the end|failed"),
    "one item fewer declared": (lambda good: reframed(good, count=19), "left over|not the ones"),
    "a zero word appended": (lambda good: reframed(good, payload_of(good) + bytes(4)), "left over|not the ones"),
    "a 0xff word appended": (lambda good: reframed(good, payload_of(good) + b"\xff" * 4), "left over|not the ones"),
    "64 bytes appended": (lambda good: reframed(good, payload_of(good) + bytes(range(64))), "left over|not the ones"),
    "count 0 with 64 bytes of payload": (lambda good: reframed(good, bytes(64), count=0), "for 0 items"),
}


@pytest.mark.parametrize("name", list(V3_CASES))
def test_hostile_version_3_payloads_are_refused_in_one_line(v3_prior, name):
    make, match = V3_CASES[name]
    good = v3(v3_prior)
    assert read_vqd(good, coder=v3_prior).codes.shape == (20, 5)
    start = time.perf_counter()
    with pytest.raises(VqdFormatError, match=match) as info:
        read_vqd(make(good), coder=v3_prior)
    one_line(info.value)
    assert time.perf_counter() - start < 5.0


def test_v3_decoding_stops_at_the_payloads_end_whatever_count_declares(v3_prior, monkeypatch):
    """The issue's file: 4 KiB of zero words declaring as many items as the header's bound allows.
    The decoder must stop after about 4 KiB worth of codes, not decode the declared count."""
    import vqdraw.compress.fixedpoint as fixedpoint

    count = bitstream.SYMBOLS_PER_BIT * (8 * 4096 + bitstream.SLACK_BITS) // 5
    data = reframed(v3(v3_prior), bytes(4096), count=count)
    calls = []
    real = fixedpoint.frequencies
    monkeypatch.setattr(fixedpoint, "frequencies", lambda logits: calls.append(logits.shape[0]) or real(logits))
    with pytest.raises(VqdFormatError, match="ran past the end"):
        read_vqd(data, coder=v3_prior)
    # a near-uniform prior spends 4 bits a code: 4096 bytes hold about 8192 codes, i.e. 1640 items
    # (the decoder stops within one block of 1024 items after that)
    assert sum(calls) < 5 * (1640 + 1024 + 10)


def test_every_appended_or_altered_word_is_refused(v3_prior):
    """Seeded: appending 1..3 random words to, or dropping the last word of, valid files is always
    refused (the payload must be exactly the coder's words)."""
    rng = np.random.default_rng(35)
    for trial in range(60):
        good = v3(v3_prior, count=int(rng.integers(1, 30)), seed=trial, block=int(rng.integers(1, 9)))
        assert read_vqd(good, coder=v3_prior).codes.shape[1] == 5
        extra = rng.integers(0, 2**32, int(rng.integers(1, 4)), dtype=np.uint64).astype("<u4").tobytes()
        for bad in (reframed(good, payload_of(good) + extra), reframed(good, payload_of(good)[:-4])):
            with pytest.raises(VqdFormatError):
                read_vqd(bad, coder=v3_prior)


def test_cli_decode_of_a_v3_file_with_appended_words_is_one_line(tmp_path, capsys):
    from vqdraw.prior import Prior, PriorConfig, PriorNet

    torch.manual_seed(0)
    small = RefinerConfig(down=(8, 8), body=(16,), up=(8, 8))
    m = VQDraw.from_preset("mnist", stages=3, options=16, refiner=small).eval()
    m.save(tmp_path / "model")
    prior = Prior(PriorNet(PriorConfig(16, 3, embed=8, hidden=16)), m.fingerprint())
    prior.save(tmp_path / "model")
    codes = np.random.default_rng(0).integers(0, 16, (4, 3))
    good = write_vqd(codes, 16, (1, 28, 28), m.fingerprint(), coder=prior)
    for name, data in (("zero", reframed(good, bytes(4096), count=2000)),
                       ("appended", reframed(good, payload_of(good) + bytes(8)))):
        src = tmp_path / f"{name}.vqd"
        src.write_bytes(data)
        rc = main(["decode", "--model", str(tmp_path / "model"), str(src), "-o", str(tmp_path / name)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err and "corrupt .vqd" in err, err
        assert not (tmp_path / name).exists()


def test_a_64kb_all_zero_payload_is_refused_within_5_seconds():
    """The issue's 64 KB file (286 s of range decoding before): zero words declaring as many items as
    the header's bound allows, under a prior of the issue's size (K=64, N=10, GRU width 128)."""
    from vqdraw.prior import Prior, PriorConfig, PriorNet

    torch.manual_seed(0)
    prior = Prior(PriorNet(PriorConfig(64, 10, hidden=128)))
    good = write_vqd(np.random.default_rng(0).integers(0, 64, (20, 10)), 64, (1, 28, 28), bytes(16), coder=prior)
    payload = 65536
    count = bitstream.SYMBOLS_PER_BIT * (8 * payload + bitstream.SLACK_BITS) // 10
    start = time.perf_counter()
    with pytest.raises(VqdFormatError, match="ran past the end") as info:
        read_vqd(reframed(good, bytes(payload), count=count), coder=prior)
    one_line(info.value)
    assert time.perf_counter() - start < 5.0
