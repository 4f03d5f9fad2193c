"""Large but valid jobs: decode, sample and encode work a batch at a time, show progress on stderr,
and write their outputs atomically (docs/robustness.md, "Large but valid jobs").

Each test makes the job span several batches with a small --batch (or a small chunk setting), so
that it runs in seconds and still goes through every batch boundary.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqdraw import VQDraw
from vqdraw.cli import main
from vqdraw.compress.codec import compress_codes

SRC = Path(__file__).resolve().parents[1] / "src"


def _model():
    torch.manual_seed(0)
    return VQDraw.from_preset("mnist", options=4, stages=2, segment=2).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny model and a .vqd of 7 items made by it."""
    root = tmp_path_factory.mktemp("large_jobs")
    model = _model()
    model.save(root / "model")
    codes = torch.randint(0, 4, (7, 2), generator=torch.Generator().manual_seed(1))
    (root / "seven.vqd").write_bytes(compress_codes(model, codes))
    return root, codes


def _png_bytes(image, path) -> bytes:
    from vqdraw.data.images import save_image

    save_image(image, path)
    return path.read_bytes()


def test_a_multi_batch_decode_gives_the_files_of_decoding_each_item_alone(saved, tmp_path, capsys):
    root, codes = saved
    out = tmp_path / "out"
    assert main(["decode", str(root / "model"), str(root / "seven.vqd"), "-o", str(out), "--batch", "3",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(7)]
    model = VQDraw.load(root / "model").eval()
    for i in range(7):
        alone = model.decode(codes[i: i + 1])[0]
        assert (out / f"{i:06d}.png").read_bytes() == _png_bytes(alone, tmp_path / "alone.png"), i
    assert capsys.readouterr().err == ""


def test_decode_writes_each_batch_before_decoding_the_next(saved, tmp_path, monkeypatch):
    """Streaming: the first file is written after one batch was decoded, not after all of them."""
    import vqdraw.data.images as images

    root, _ = saved
    decoded, seen = [], []
    original_decode, original_save = VQDraw.decode, images.save_image

    def decode(self, codes, stages=None):
        decoded.append(len(codes))
        return original_decode(self, codes, stages)

    def save(image, path):
        seen.append(len(decoded))
        original_save(image, path)

    monkeypatch.setattr(VQDraw, "decode", decode)
    monkeypatch.setattr(images, "save_image", save)
    assert main(["decode", str(root / "model"), str(root / "seven.vqd"), "-o", str(tmp_path / "out"),
                 "--batch", "2", "--no-progress"]) == 0
    assert decoded == [2, 2, 2, 1]  # never more than --batch items decoded at once
    assert seen == [1, 1, 2, 2, 3, 3, 4]  # item i written before batch i // 2 + 1 was decoded


def test_progress_is_on_stderr_for_a_multi_batch_job_and_not_with_no_progress(saved, tmp_path, capsys):
    root, _ = saved
    args = ["decode", str(root / "model"), str(root / "seven.vqd"), "-o", str(tmp_path / "a"), "--batch", "2"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "decode: 7/7 images" in captured.err and "decode:" not in captured.out
    assert main(args + ["--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert main(args[:-1] + ["8"]) == 0  # one batch: nothing to show
    assert capsys.readouterr().err == ""


def test_a_decode_that_fails_midway_leaves_the_output_folder_as_it_was(saved, tmp_path, monkeypatch, capsys):
    import errno

    import vqdraw.data.images as images

    root, _ = saved
    original = images.save_image
    calls = []

    def fail_on_the_fourth(image, path):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(image, path)

    monkeypatch.setattr(images, "save_image", fail_on_the_fourth)
    out = tmp_path / "out"
    assert main(["decode", str(root / "model"), str(root / "seven.vqd"), "-o", str(out), "--batch", "2",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]
    assert not out.exists() and os.listdir(tmp_path) == []  # no output, no temporary folder
    out.mkdir()
    (out / "000001.png").write_bytes(b"old")
    calls.clear()
    assert main(["decode", str(root / "model"), str(root / "seven.vqd"), "-o", str(out), "--batch", "2",
                 "--no-progress"]) == 2
    assert os.listdir(out) == ["000001.png"] and (out / "000001.png").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out"]


def test_a_killed_decode_leaves_no_output_and_the_next_decode_removes_its_debris(saved, tmp_path):
    root, _ = saved
    model = VQDraw.load(root / "model")
    big = tmp_path / "big.vqd"
    big.write_bytes(compress_codes(model, torch.zeros((20000, 2), dtype=torch.int64)))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vqdraw", "decode", str(root / "model"), str(big), "-o",
                             str(out), "--batch", "1", "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            tmp = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
            if tmp and any(tmp[0].iterdir()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the decode ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert tmp and tmp[0].is_dir() and any(tmp[0].iterdir())  # half-written, but only in the temporary folder
    assert not out.exists()
    assert main(["decode", str(root / "model"), str(root / "seven.vqd"), "-o", str(out), "--no-progress"]) == 0
    assert not tmp[0].exists()  # its process is gone: removed
    assert len(os.listdir(out)) == 7


# ------------------------------------------------------------------ sample
def test_sample_draws_a_few_rows_at_a_time_the_same_picture(saved, tmp_path, monkeypatch, capsys):
    import vqdraw.modalities.base as base
    from vqdraw.evaluate import plots

    root, _ = saved
    model = VQDraw.load(root / "model").eval()
    whole = plots.grid(model.sample(10, generator=torch.Generator().manual_seed(3)), scale=plots._scale(model))
    sizes = []
    original = VQDraw.decode

    def decode(self, codes, stages=None):
        sizes.append(len(codes))
        return original(self, codes, stages)

    monkeypatch.setattr(base, "SAMPLE_CHUNK", 4)  # 10 samples in a grid of 4 columns: one row at a time
    monkeypatch.setattr(VQDraw, "decode", decode)
    assert main(["sample", str(root / "model"), "-n", "10", "--seed", "3", "-o", str(tmp_path / "s.png")]) == 0
    assert sizes == [4, 4, 2]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png")), np.asarray(whole))
    assert "sample: 10/10 images" in capsys.readouterr().err
    assert main(["sample", str(root / "model"), "-n", "10", "-o", str(tmp_path / "t.png"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_the_streamed_png_is_pixel_for_pixel_the_grid(tmp_path):
    from vqdraw.evaluate import plots

    gen = torch.Generator().manual_seed(0)
    for count, shape, ncol, scale in [(1, (1, 5, 7), None, 2), (11, (3, 4, 6), None, 1), (9, (1, 3, 3), 4, 3),
                                      (0, (1, 4, 4), None, 1)]:
        x = torch.rand((count, *shape), generator=gen)
        x[:, :, :1] = 0.5
        path = tmp_path / f"g{count}.png"
        plots.save_grid_png(iter(x.split(2)), count, path, tile_shape=shape, ncol=ncol, scale=scale)
        want = plots.grid(x, ncol=ncol, scale=scale)
        got = Image.open(path)
        assert got.mode == want.mode and np.array_equal(np.asarray(got), np.asarray(want)), count


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(saved, tmp_path):
    root, _ = saved
    dead = tmp_path / ".s.png.999999999.abc.tmp"  # a pid that cannot exist
    dead.write_bytes(b"half a picture")
    live = tmp_path / f".s.png.{os.getpid()}.abc.tmp"  # a running writer's is left alone
    live.write_bytes(b"being written")
    assert main(["sample", str(root / "model"), "-n", "2", "-o", str(tmp_path / "s.png")]) == 0
    assert not dead.exists() and live.exists() and (tmp_path / "s.png").is_file()


# ------------------------------------------------------------------ encode
def test_text_is_encoded_a_batch_at_a_time_with_the_same_codes(tmp_path, capsys):
    from test_text import tiny_text_model

    from vqdraw.compress.text import compress_text, decompress_text, decompress_text_pieces

    model = tiny_text_model()
    text = "a few words, over and over. " * 20 + "end"  # 563 characters: 36 chunks of 16
    calls = []
    whole = compress_text(model, text, batch=1000)
    parts = compress_text(model, text, batch=5, progress=calls.append)
    assert parts == whole
    assert calls == [5] * 7 + [1]
    decoded = decompress_text(model, whole)
    assert len(decoded) == len(text)
    assert "".join(decompress_text_pieces(model, whole, batch=5)[1]) == decoded
    model.save(tmp_path / "model")
    (tmp_path / "t.txt").write_text(text)
    assert main(["encode", str(tmp_path / "model"), str(tmp_path / "t.txt"), "-o", str(tmp_path / "t.vqd"),
                 "--batch", "4"]) == 0
    assert "encode: 36/36 sequences" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "model"), str(tmp_path / "t.vqd"), "-o", str(tmp_path / "d.txt"),
                 "--batch", "5"]) == 0
    assert "decode: 36/36 sequences" in capsys.readouterr().err
    assert (tmp_path / "d.txt").read_text() == decompress_text(model, (tmp_path / "t.vqd").read_bytes())


def test_voxel_grids_are_encoded_a_batch_at_a_time_from_a_memory_mapped_file(tmp_path, capsys):
    from vqdraw.compress.codec import encode_images
    from vqdraw.data.voxels import load_voxel_files

    torch.manual_seed(0)
    model = VQDraw.from_preset("voxels32", data_shape=(1, 8, 8, 8), stages=2, segment=1, options=8).eval()
    grids = np.random.default_rng(0).random((9, 8, 8, 8)) < 0.3
    np.save(tmp_path / "g.npy", grids)
    loaded = load_voxel_files([tmp_path / "g.npy"], size=(8, 8, 8))
    assert isinstance(loaded, np.memmap) or isinstance(getattr(loaded, "base", None), np.memmap)
    model.save(tmp_path / "model")
    assert main(["encode", str(tmp_path / "model"), str(tmp_path / "g.npy"), "-o", str(tmp_path / "g.vqd"),
                 "--batch", "4"]) == 0
    assert "encode: 9/9 volumes" in capsys.readouterr().err
    whole = encode_images(model, torch.from_numpy(grids).float().unsqueeze(1))
    assert (tmp_path / "g.vqd").read_bytes() == compress_codes(model, whole)


def test_all_the_text_one_command_reads_is_capped_before_reading(tmp_path, monkeypatch, capsys):
    import vqdraw.data.capped as capped
    from vqdraw.data import text as text_data

    (tmp_path / "notes").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "notes" / name).write_text("x" * 600)
    monkeypatch.setattr(capped, "MAX_TEXT_BYTES", 1000)  # each file is under it, both are not
    read = []
    monkeypatch.setattr(text_data, "read_text_file", lambda p: read.append(p) or "")
    from test_text import tiny_text_model

    tiny_text_model().save(tmp_path / "model")
    for inputs in ([tmp_path / "notes"], [tmp_path / "notes" / "a.txt", tmp_path / "notes" / "b.txt"]):
        assert main(["encode", str(tmp_path / "model"), *map(str, inputs), "-o", str(tmp_path / "t.vqd")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "1,200 bytes of text in 2 files, more than the 1,000" in err[0]
    assert read == [] and not (tmp_path / "t.vqd").exists()


def test_a_wide_beam_reconstructs_a_chunk_at_a_time_with_progress(tmp_path, capsys, monkeypatch):
    """`reconstruct --beam 64` works 4 items at a time: progress on stderr, the same reconstructions
    as one call, none of it with --no-progress."""
    calls = []
    real = VQDraw.reconstruct

    def spy(self, x, **kw):
        out = real(self, x, **kw)
        calls.append((x, out))
        return out

    monkeypatch.setattr(VQDraw, "reconstruct", spy)
    assert main(["reconstruct", "pretrained:mnist", "--count", "6", "--beam", "64", "-o", str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err
    assert [len(x) for x, _ in calls] == [4, 2] and "reconstruct: 4/6" in err
    whole = real(VQDraw.from_pretrained("mnist"), torch.cat([x for x, _ in calls]), beam=64)
    assert torch.allclose(torch.cat([out for _, out in calls]), whole)
    assert main(["reconstruct", "pretrained:mnist", "--count", "6", "--beam", "64", "--no-progress",
                 "-o", str(tmp_path / "b.png")]) == 0
    assert "reconstruct:" not in capsys.readouterr().err
