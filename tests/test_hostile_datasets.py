"""Hostile dataset files: compressed data is read with an output cap (a bomb is one line, not a
MemoryError), and `datasets --verify` no longer passes unchecked stand-ins as "ok"."""

from __future__ import annotations

import argparse
import gzip
import io
import struct
import tarfile
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import vqdraw.data.cifar as cifar
from vqdraw.cli import datasets as datasets_cli
from vqdraw.data import download as dl
from vqdraw.data.base import DatasetError
from vqdraw.data.capped import MAX_IDX_BYTES, CappedReader
from vqdraw.data.celeba import load_celeba
from vqdraw.data.idx import read_idx
from vqdraw.data.svhn import read_svhn_mat
from vqdraw.errors import VQDrawError

MB = 1 << 20


def one_line(exc: BaseException) -> str:
    assert isinstance(exc, VQDrawError) and "\n" not in str(exc)
    return str(exc)


def gzip_of(parts, total_zeros: int, path) -> None:
    """Write ``parts`` then ``total_zeros`` zero bytes through gzip, a megabyte at a time."""
    chunk = bytes(MB)
    with gzip.open(path, "wb", compresslevel=1) as fh:
        for p in parts:
            fh.write(p)
        for _ in range(total_zeros // MB):
            fh.write(chunk)


def idx_header(magic: int, *dims: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)


# --- gzip bombs --------------------------------------------------------------------------------------


def test_idx_gzip_bomb_is_read_only_up_to_its_declared_size(tmp_path):
    """A genuine-looking MNIST header followed by 300 MiB of zeros: refused after 47 MB, in bounded memory."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_of([idx_header(2051, 60000, 28, 28)], 300 * MB, path)
    assert path.stat().st_size < 2 * MB
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DatasetError) as info:
            read_idx(path, 2051)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "trailing bytes" in one_line(info.value)
    assert time.perf_counter() - start < 5.0
    assert peak < 120 * MB  # the 47 MB it declares, not the 300 MiB it expands to


def test_idx_header_declaring_more_than_the_cap_is_refused_before_reading(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_of([idx_header(2051, 10**6, 512, 512)], 0, path)
    with pytest.raises(DatasetError) as info:
        read_idx(path, 2051)
    assert f"more than the {MAX_IDX_BYTES:,}" in one_line(info.value)


def test_uncompressed_idx_file_over_the_cap_is_refused_by_its_size(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    with open(path, "wb") as fh:
        fh.write(idx_header(2051, 1, 28, 28))
        fh.truncate(MAX_IDX_BYTES + 1)  # sparse: no disk space used
    with pytest.raises(DatasetError, match="more than the"):
        read_idx(path, 2051)


class _Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def _tar_gz(path, members: dict[str, int]) -> None:
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w:") as tar:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BufferedReader(_Zeros(size)))


def test_cifar_member_larger_than_a_batch_is_refused(tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    _tar_gz(folder / cifar.ARCHIVE, {"cifar-10-batches-py/test_batch": 80 * MB})
    with pytest.raises(DatasetError) as info:
        cifar.load_cifar10("test", tmp_path)
    assert "more than a CIFAR-10 batch can hold" in one_line(info.value)


def test_cifar_stream_is_capped_even_for_skipped_members(tmp_path, monkeypatch):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    _tar_gz(folder / cifar.ARCHIVE, {"padding": 3 * MB, "cifar-10-batches-py/test_batch": 10})
    monkeypatch.setattr(cifar, "MAX_TAR_BYTES", 1 * MB)
    with pytest.raises(DatasetError) as info:
        cifar.load_cifar10("test", tmp_path)
    assert "expands to more than 1,048,576 bytes" in one_line(info.value)


def test_capped_reader_counts_reads_and_seeks():
    raw = io.BytesIO(bytes(100))
    capped = CappedReader(raw, 50, "x")
    assert len(capped.read(50)) == 50
    with pytest.raises(DatasetError, match="expands to more than 50 bytes"):
        capped.read(1)
    with pytest.raises(DatasetError):
        CappedReader(io.BytesIO(bytes(100)), 50, "x").seek(51)
    with pytest.raises(DatasetError):
        CappedReader(io.BytesIO(bytes(100)), 50, "x").read()


def test_svhn_mat_declaring_gigabytes_is_refused_before_scipy_reads_it(tmp_path):
    """A MATLAB v5 file whose compressed variable X declares 32x32x3x10^6 uint8 (3 GB)."""
    dims = (32, 32, 3, 10**6)
    name = b"X" + bytes(7)
    matrix = (struct.pack("<II", 6, 8) + struct.pack("<II", 9, 0)  # array flags: uint8
              + struct.pack("<II", 5, 16) + struct.pack("<4i", *dims)
              + struct.pack("<II", 1, 1) + name)
    inner = struct.pack("<II", 14, len(matrix) + 3 * 10**9) + matrix
    packed = zlib.compress(inner)
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(header + struct.pack("<II", 15, len(packed)) + packed)
    start = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        read_svhn_mat(path)
    assert "declare 3,072,000,000 bytes" in one_line(info.value)
    assert time.perf_counter() - start < 1.0


def test_celeba_zip_member_larger_than_an_image_is_refused(tmp_path):
    folder = tmp_path / "celeba"
    folder.mkdir()
    (folder / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with zipfile.ZipFile(folder / "img_align_celeba.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("img_align_celeba/000001.jpg", "w", force_zip64=True) as fh:
            for _ in range(70):
                fh.write(bytes(MB))
    with pytest.raises(DatasetError) as info:
        load_celeba("train", tmp_path, progress=False)
    assert "more than a CelebA image can hold" in one_line(info.value)


# --- verify --------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    datasets_cli.register(parser.add_subparsers())
    args = parser.parse_args(["datasets", *argv])
    return args.func(args)


def test_garbage_uncompressed_mnist_is_unverified_and_fails_with_strict(tmp_path, capsys):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in dl.spec("mnist").files:
        (folder / f.also[0]).write_bytes(b"garbage")
    results = dl.verify("mnist", tmp_path)
    assert [ok for _, ok, _ in results] == [None] * 4
    assert all("unverified" in message for _, _, message in results)
    assert run_cli(["--data-dir", str(tmp_path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "?     train-images-idx3-ubyte: unverified" in out and "use --strict" in out
    assert run_cli(["--data-dir", str(tmp_path), "--verify", "--strict"]) == 1
    assert "failing because of --strict" in capsys.readouterr().out


def test_extracted_cifar_batches_are_checked_against_their_md5s(tmp_path, capsys):
    batches = tmp_path / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in cifar.TRAIN_BATCHES + cifar.TEST_BATCHES:
        (batches / name).write_bytes(b"garbage")
    [(file, ok, message)] = dl.verify("cifar10", tmp_path)
    assert file == "cifar-10-batches-py" and ok is False
    assert "data_batch_1: md5 " in message and "c99cafc152244af753f735de768cd75f" in message
    (batches / "test_batch").unlink()
    assert run_cli(["--data-dir", str(tmp_path), "--strict"]) == 1
    assert "FAIL  cifar-10-batches-py" in capsys.readouterr().out


def test_extracted_cifar_batches_with_matching_md5s_pass(tmp_path, monkeypatch):
    batches = tmp_path / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    sums = []
    for i, name in enumerate(cifar.TRAIN_BATCHES + cifar.TEST_BATCHES):
        (batches / name).write_bytes(bytes([i]) * 10)
        sums.append((f"cifar-10-batches-py/{name}", dl.md5sum(batches / name)))
    f = dl.spec("cifar10").files[0]
    patched = dl.RemoteFile(f.name, f.url, f.md5, f.also, tuple(sums))
    monkeypatch.setitem(dl.CATALOGUE, "cifar10", dl.DatasetSpec("cifar10", "CIFAR-10", (patched,)))
    [(_, ok, message)] = dl.verify("cifar10", tmp_path)
    assert ok is True and "md5 ok (6 files" in message


def test_published_cifar_batch_md5s_are_listed():
    f = dl.spec("cifar10").files[0]
    assert dict(f.also_md5)["cifar-10-batches-py/data_batch_1"] == "c99cafc152244af753f735de768cd75f"
    assert len(f.also_md5) == 6 and all(len(m) == 32 for _, m in f.also_md5)


def test_real_sized_idx_file_still_reads(tmp_path):
    data = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(2051, 3, 28, 28) + data.tobytes()))
    np.testing.assert_array_equal(read_idx(path, 2051), data)
