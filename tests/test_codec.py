"""Tests for compress/decompress (vqdraw.compress.codec) and the `vqdraw encode` / `vqdraw decode` verbs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqdraw import RefinerConfig, VQDraw
from vqdraw.compress.bitstream import VqdFormatError, bits_per_image, header_size, payload_size, read_vqd, write_vqd
from vqdraw.cli import main
from vqdraw.compress.codec import (
    compress,
    compress_codes,
    decompress,
    read_input_bytes,
)
from vqdraw.errors import InputError, VQDrawError
from vqdraw.data.images import save_image

STAGES, K = 3, 5


def tiny(seed: int = 0) -> VQDraw:
    torch.manual_seed(seed)
    small = RefinerConfig(down=(8, 8), body=(16,), up=(8, 8))  # fast on a busy CPU
    return VQDraw.from_preset("mnist", stages=STAGES, options=K, refiner=small).eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run far faster on one thread, above all on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> VQDraw:
    return tiny(0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from vqdraw.data import load_dataset

    return load_dataset("mnist-embedded", "test").batch(range(7))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model, images):
    """A saved model folder, another model's folder, and a folder of PNG digits."""
    root = tmp_path_factory.mktemp("codec")
    model.save(root / "model")
    tiny(1).save(root / "other")
    (root / "pngs").mkdir()
    for i, img in enumerate(images[:5]):
        save_image(img, root / "pngs" / f"digit{i}.png")
    return root


# ---------------------------------------------------------------------------------------------
# Library


def test_round_trip_is_bit_exact(model, images):
    codes = model.encode(images)
    data = compress(model, images)
    out, vqd = decompress(model, data)
    assert np.array_equal(vqd.codes, codes.numpy())
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert torch.equal(out, model.decode(codes))
    assert compress(model, images) == data  # deterministic: the same image, the same bytes
    assert compress(model, images[2:3]) == compress(model, images[2:3])


def test_file_size_is_header_plus_payload(model, images):
    data = compress(model, images)
    bits = bits_per_image(K, STAGES)
    assert bits == 7  # ceil(3 * log2 5) = ceil(6.97)
    assert header_size() == 40
    assert len(data) == header_size() + payload_size(len(images), K, STAGES) == 40 + (7 * len(images) + 7) // 8
    assert len(compress(model, images[:1])) == 41


def test_prefix_stages(model, images):
    full = model.encode(images)
    for n in range(1, STAGES + 1):
        data = compress(model, images, stages=n)
        out, vqd = decompress(model, data)
        assert vqd.stages == n and vqd.count == len(images)
        assert np.array_equal(vqd.codes, full[:, :n].numpy())  # greedy codes: prefixes of the full code
        assert torch.equal(out, model.decode(full[:, :n]))
        assert len(data) == header_size() + payload_size(len(images), K, n)
    # decoding a prefix of a full file
    out, _ = decompress(model, compress(model, images), stages=1)
    assert torch.equal(out, model.decode(full[:, :1]))
    with pytest.raises(InputError):
        decompress(model, compress(model, images, stages=2), stages=3)


@pytest.mark.parametrize("stages", [0, STAGES + 1, -1])
def test_bad_stage_count(model, images, stages):
    with pytest.raises(InputError, match="stages"):
        compress(model, images, stages=stages)


def test_bad_images(model, images):
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        compress(model, images * 2)
    with pytest.raises(InputError, match="finite"):  # the library's one check of data (core/inputs.py)
        compress(model, torch.full_like(images, float("nan")))
    with pytest.raises(InputError, match="shape"):
        compress(model, images[:, :, :20])
    with pytest.raises(InputError):
        compress(model, (images * 255).to(torch.uint8))
    with pytest.raises(InputError, match="beam"):
        compress(model, images, beam=0)


def test_batched_decompress_matches(model, images):
    data = compress(model, images)
    whole, _ = decompress(model, data)
    parts, _ = decompress(model, data, batch_size=3)
    assert parts.shape == whole.shape
    assert torch.allclose(parts, whole, atol=1e-6)


def test_file_of_another_model_is_refused(model, images):
    data = compress(tiny(1), images)
    with pytest.raises(VqdFormatError, match="made by a different model"):
        decompress(model, data)


def test_file_that_does_not_fit_the_model_is_refused(model):
    fp = model.fingerprint()
    codes = np.zeros((2, STAGES), dtype=np.int64)
    with pytest.raises(VqdFormatError, match="shape"):
        decompress(model, write_vqd(codes, K, (1, 27, 28), fp))
    with pytest.raises(VqdFormatError, match="K=6"):
        decompress(model, write_vqd(codes, K + 1, (1, 28, 28), fp))
    with pytest.raises(VqdFormatError, match="stages"):
        decompress(model, write_vqd(np.zeros((2, STAGES + 1), dtype=np.int64), K, (1, 28, 28), fp))
    with pytest.raises(InputError):
        compress_codes(model, np.zeros((2, STAGES + 1), dtype=np.int64))


def test_empty_batch(model, images):
    data = compress(model, images[:0])
    assert len(data) == header_size()
    out, vqd = decompress(model, data)
    assert vqd.count == 0 and out.shape == (0, 1, 28, 28)


def test_fingerprint(model):
    fp = model.fingerprint()
    assert isinstance(fp, bytes) and len(fp) == 16
    assert tiny(0).fingerprint() == fp  # same config and weights
    assert tiny(1).fingerprint() != fp


def test_beam_search(model, images):
    data = compress(model, images[:3], beam=3)
    out, vqd = decompress(model, data)
    assert vqd.count == 3 and len(data) == header_size() + payload_size(3, K, STAGES)
    assert torch.equal(out, model.decode(torch.from_numpy(vqd.codes)))


def test_read_input_bytes(tmp_path):
    with pytest.raises(InputError, match="no such"):
        read_input_bytes(tmp_path / "missing.vqd")
    with pytest.raises(InputError, match="is a folder"):
        read_input_bytes(tmp_path)
    (tmp_path / "x.vqd").write_bytes(b"abc")
    assert read_input_bytes(tmp_path / "x.vqd") == b"abc"


# ---------------------------------------------------------------------------------------------
# CLI


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_cli_encode_decode_round_trip(saved, model, tmp_path, capsys):
    out = tmp_path / "digits.vqd"
    assert main(["encode", "--model", str(saved / "model"), str(saved / "pngs"), "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "5 images" in summary and "7 bits per image payload" in summary and "40 header bytes" in summary
    assert f"{40 + 5} bytes in all" in summary and "9.00 bytes" in summary
    data = out.read_bytes()
    assert len(data) == header_size() + payload_size(5, K, STAGES)

    # the codes are those of the PNGs as the library loads them
    from vqdraw.data.images import expand_image_paths, load_images

    x = load_images(expand_image_paths([saved / "pngs"]), (1, 28, 28))
    codes = model.encode(x)
    assert np.array_equal(read_vqd(data).codes, codes.numpy())

    dec = tmp_path / "decoded"
    assert main(["decode", "--model", str(saved / "model"), str(out), "-o", str(dec)]) == 0
    assert "5 PNG images" in capsys.readouterr().out
    names = sorted(p.name for p in dec.iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    expected = model.decode(codes).mul(255).round().to(torch.uint8)[:, 0].numpy()
    for i, name in enumerate(names):
        assert np.array_equal(_png(dec / name), expected[i])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left

    # into an existing folder: files replaced, other files kept; --stages decodes a prefix
    (dec / "keep.txt").write_text("x")
    assert main(["decode", "--model", str(saved / "model"), str(out), "-o", str(dec), "--stages", "1"]) == 0
    coarse = model.decode(codes[:, :1]).mul(255).round().to(torch.uint8)[:, 0].numpy()
    assert np.array_equal(_png(dec / "000003.png"), coarse[3])
    assert (dec / "keep.txt").read_text() == "x"


def test_cli_encode_options(saved, tmp_path, capsys):
    out = tmp_path / "p.vqd"
    pngs = sorted((saved / "pngs").iterdir())
    args = ["encode", "--model", str(saved / "model"), str(pngs[0]), str(pngs[1]), "-o", str(out)]
    assert main(args + ["--stages", "2", "--batch", "1"]) == 0
    vqd = read_vqd(out.read_bytes())
    assert vqd.stages == 2 and vqd.count == 2
    assert "1 image," not in capsys.readouterr().out


def _write(path: Path, size=(28, 28), mode="L") -> Path:
    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: _write(d / "big.png", size=(30, 28)), "--fit"),
        (lambda d: _write(d / "rgb.png", mode="RGB"), "colour"),
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: (d / "notimage.png").write_bytes(b"not an image") and d / "notimage.png", "not a readable image"),
    ],
)
def test_cli_encode_rejects_bad_images(saved, tmp_path, capsys, make, message):
    src = tmp_path / "src"
    src.mkdir()
    bad = make(src)
    out = tmp_path / "out" / "x.vqd"
    rc = main(["encode", "--model", str(saved / "model"), str(saved / "pngs"), str(bad), "-o", str(out)])
    assert rc == 2
    line = _one_line_error(capsys)
    assert line.startswith("vqdraw encode: error:") and message in line
    assert not out.exists()


def test_cli_encode_resize_converts(saved, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "big.png", size=(40, 30))
    _write(src / "rgb.png", mode="RGB")
    out = tmp_path / "x.vqd"
    assert main(["encode", "--model", str(saved / "model"), str(src), "-o", str(out), "--resize"]) == 0
    assert read_vqd(out.read_bytes()).count == 2


def test_cli_encode_output_is_a_folder(saved, tmp_path, capsys):
    rc = main(["encode", "--model", str(saved / "model"), str(saved / "pngs"), "-o", str(tmp_path)])
    assert rc == 2 and "is a folder" in _one_line_error(capsys)


def test_cli_encode_beam_works(saved, model, tmp_path, capsys):
    out = tmp_path / "b.vqd"
    rc = main(["encode", "--model", str(saved / "model"), str(saved / "pngs"), "-o", str(out), "--beam", "2"])
    assert rc == 0 and read_vqd(out.read_bytes()).count == 5


def _good_file(model, images) -> bytes:
    return compress(model, images[:4])


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x10
    return bytes(b)


BAD_FILES = {
    "wrong magic": (lambda good: b"PK\x03\x04" + good[4:], "not a .vqd file"),
    "unsupported version": (lambda good: good[:4] + b"\x07" + good[5:], "unsupported .vqd format version 7"),
    "truncated": (lambda good: good[:-3], "truncated"),
    "truncated header": (lambda good: good[:20], "truncated"),
    "flipped bit": (lambda good: _flip(good, header_size() - 4 + 1), "checksum"),
    "empty": (lambda good: b"", "empty"),
    "trailing garbage": (lambda good: good + b"\x00", "trailing"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_cli_decode_rejects_bad_files(saved, model, images, tmp_path, capsys, case):
    make, message = BAD_FILES[case]
    src = tmp_path / "in.vqd"
    src.write_bytes(make(_good_file(model, images)))
    _assert_decode_fails(saved / "model", src, tmp_path, capsys, message)


def test_cli_decode_rejects_other_model(saved, model, images, tmp_path, capsys):
    src = tmp_path / "in.vqd"
    src.write_bytes(_good_file(model, images))
    _assert_decode_fails(saved / "other", src, tmp_path, capsys, "made by a different model")


def test_cli_decode_rejects_forged_shape(saved, model, tmp_path, capsys):
    """A file whose CRC and fingerprint are right but whose shape is not the model's."""
    body = bytearray(write_vqd(np.zeros((1, STAGES), dtype=np.int64), K, (1, 28, 28), model.fingerprint()))
    struct.pack_into("<H", body, 24, 14)  # height 14
    body = bytes(body[:-4]) + struct.pack("<I", zlib.crc32(bytes(body[:-4])))
    src = tmp_path / "in.vqd"
    src.write_bytes(body)
    _assert_decode_fails(saved / "model", src, tmp_path, capsys, "shape")


def test_cli_decode_rejects_missing_and_folder(saved, tmp_path, capsys):
    _assert_decode_fails(saved / "model", tmp_path / "missing.vqd", tmp_path, capsys, "no such .vqd file")
    folder = tmp_path / "adir.vqd"
    folder.mkdir()
    _assert_decode_fails(saved / "model", folder, tmp_path, capsys, "is a folder")


def test_cli_decode_leaves_existing_folder_alone(saved, model, images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "000000.png").write_bytes(b"old")
    src = tmp_path / "in.vqd"
    src.write_bytes(_good_file(model, images)[:-1])
    assert main(["decode", "--model", str(saved / "model"), str(src), "-o", str(out)]) == 2
    _one_line_error(capsys)
    assert [p.name for p in out.iterdir()] == ["000000.png"] and (out / "000000.png").read_bytes() == b"old"


def test_cli_decode_output_is_a_file(saved, model, images, tmp_path, capsys):
    src = tmp_path / "in.vqd"
    src.write_bytes(_good_file(model, images))
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["decode", "--model", str(saved / "model"), str(src), "-o", str(target)]) == 2
    assert "not a folder" in _one_line_error(capsys)
    assert target.read_text() == "x"


def _assert_decode_fails(model_dir, src, tmp_path, capsys, message) -> None:
    out = tmp_path / "decoded"
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["decode", "--model", str(model_dir), str(src), "-o", str(out)])
    assert rc == 2
    line = _one_line_error(capsys)
    assert line.startswith("vqdraw decode: error:")
    assert message in line, line
    assert not out.exists()  # nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # and no temporary folder left


def test_errors_are_vqdraw_errors():
    assert issubclass(VqdFormatError, VQDrawError) and issubclass(InputError, VQDrawError)


def test_decode_names_the_checkpoint_that_made_the_file(tmp_path, fast_embedded_mnist, capsys):
    """After --resume, a .vqd file of an earlier checkpoint is refused with the checkpoint's name."""
    from vqdraw import TrainConfig, VQDraw, fit
    from vqdraw.cli import main
    from vqdraw.compress.codec import compress
    from vqdraw.data import load_dataset

    train, test = load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")
    cfg = TrainConfig(steps=2, batch=4, save_every=1, eval_every=2, eval_size=8, dataset="mnist-embedded")

    def fresh():
        torch.manual_seed(0)
        return VQDraw.from_preset("mnist", options=8, stages=2, segment=2)

    run = tmp_path / "run"
    fit(fresh(), train, test, cfg, run, progress=False, pictures=False, stop_after=1)
    (tmp_path / "old.vqd").write_bytes(compress(VQDraw.load(run), test.batch(range(3))))
    fit(fresh(), train, test, cfg, run, resume=True, progress=False, pictures=False)
    capsys.readouterr()
    assert main(["decode", str(run), str(tmp_path / "old.vqd"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ckpt-00000001" in err and "ckpt-00000002" in err
    assert main(["decode", str(run / "ckpt-00000001"), str(tmp_path / "old.vqd"), "-o", str(tmp_path / "out")]) == 0
