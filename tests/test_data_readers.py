"""Readers of the official dataset formats, on tiny files written here in those exact formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqdraw.data import LOADERS, DatasetError, load_dataset
from vqdraw.data.celeba import crop_and_resize, load_celeba
from vqdraw.data.cifar import load_cifar10, read_batch
from vqdraw.data.folder import load_image_folder
from vqdraw.data.idx import read_idx
from vqdraw.data.svhn import load_svhn

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) \
        + arr.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train=5, n_test=3, gz=True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, n, dtype=np.uint8)
        for stem, arr, magic in ((f"{prefix}-images-idx3-ubyte", images, 2051),
                                 (f"{prefix}-labels-idx1-ubyte", labels, 2049)):
            data = idx_bytes(arr, magic)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / stem).write_bytes(data)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_both_splits_exactly(tmp_path, gz):
    ref = write_idx_set(tmp_path / "mnist", gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset("mnist", split, tmp_path)
        assert ds.data.shape == (len(ref[prefix][0]), 28, 28, 1)
        assert ds.data.dtype == np.uint8 and ds.labels.dtype == np.int64
        np.testing.assert_array_equal(ds.data[..., 0], ref[prefix][0])
        np.testing.assert_array_equal(ds.labels, ref[prefix][1])


def test_fashion_mnist_uses_its_own_folder(tmp_path):
    ref = write_idx_set(tmp_path / "fashion-mnist", n_train=4)
    ds = LOADERS["fashion-mnist"]("train", tmp_path)
    assert ds.name == "fashion-mnist" and len(ds) == 4
    np.testing.assert_array_equal(ds.labels, ref["train"][1])


def test_idx_bad_magic_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((2, 28, 28)), 2049 + (1 << 24)))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte: bad magic"):
        read_idx(path, 2051)
    path.write_bytes(idx_bytes(np.zeros((2, 28, 28)), 0x0D03))  # float elements
    with pytest.raises(DatasetError, match="0x0d"):
        read_idx(path, 2051)
    path.write_bytes(idx_bytes(np.zeros((2,)), 2049))  # a labels file where images belong
    with pytest.raises(DatasetError, match="expected 2051"):
        read_idx(path, 2051)


def test_idx_truncated_raw_and_gz(tmp_path):
    data = idx_bytes(np.zeros((3, 28, 28)), 2051)
    raw = tmp_path / "t10k-images-idx3-ubyte"
    raw.write_bytes(data[:-10])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte: truncated.*2352 bytes"):
        read_idx(raw, 2051)
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    blob = gzip.compress(data)
    gz.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz"):
        read_idx(gz, 2051)


def test_idx_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_set(folder, n_train=5)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(4), 2049)))
    with pytest.raises(DatasetError, match="5 images but train-labels-idx1-ubyte.gz holds 4"):
        load_dataset("mnist", "train", tmp_path)


def test_missing_files_say_what_where_and_from_where(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", "test", tmp_path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path / "mnist") in msg and "https://ossci-datasets.s3.amazonaws.com/mnist/" in msg
    assert "\n" not in msg
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz.*toronto"):
        load_dataset("cifar10", "train", tmp_path)
    with pytest.raises(DatasetError, match="test_32x32.mat.*ufldl"):
        load_dataset("svhn", "test", tmp_path)
    with pytest.raises(DatasetError, match="list_eval_partition.txt.*Google Drive"):
        load_dataset("celeba", "train", tmp_path)


def test_unknown_split_and_name(tmp_path):
    with pytest.raises(DatasetError, match="unknown split 'valid'"):
        load_dataset("mnist", "valid", tmp_path)
    with pytest.raises(DatasetError, match="folder:PATH"):
        load_dataset("imagenet", "train", tmp_path)


# ---------------------------------------------------------------- CIFAR-10

def cifar_batch(n: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    data = np.concatenate([rgb[..., c].reshape(n, 1024) for c in range(3)], axis=1)  # R, G, B
    batch = {b"batch_label": b"training batch", b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    return batch, rgb, np.array(labels)


def write_cifar(folder: Path, as_tar: bool) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    ref, blobs = {}, {}
    for seed, name in enumerate(names):
        batch, rgb, labels = cifar_batch(3 if name != "test_batch" else 4, seed)
        blobs[name] = pickle.dumps(batch, protocol=2)
        ref[name] = (rgb, labels)
    if as_tar:
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name in ["batches.meta", "readme.html"] + names:
                blob = blobs.get(name, b"meta")
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        (folder / "cifar-10-batches-py").mkdir()
        for name, blob in blobs.items():
            (folder / "cifar-10-batches-py" / name).write_bytes(blob)
    return ref


@pytest.mark.parametrize("as_tar", [True, False])
def test_cifar10_planes_labels_and_splits(tmp_path, as_tar):
    ref = write_cifar(tmp_path / "cifar10", as_tar)
    train = load_cifar10("train", tmp_path)
    assert train.data.shape == (15, 32, 32, 3) and train.data.dtype == np.uint8
    want = np.concatenate([ref[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(train.data, want)
    np.testing.assert_array_equal(train.labels, np.concatenate(
        [ref[f"data_batch_{i}"][1] for i in range(1, 6)]))
    assert train.data.flags.c_contiguous
    test = load_dataset("cifar10", "test", tmp_path)
    np.testing.assert_array_equal(test.data, ref["test_batch"][0])
    assert test.labels.dtype == np.int64 and len(test) == 4


def test_cifar10_pixel_layout_is_rgb_planes():
    batch, _, _ = cifar_batch(1, 0)
    data = np.zeros((1, 3072), np.uint8)
    data[0, 0] = 10        # R at (0, 0)
    data[0, 1024 + 1] = 20  # G at (0, 1)
    data[0, 2048 + 32] = 30  # B at (1, 0)
    batch[b"data"] = data
    images, _ = read_batch(pickle.dumps(batch, protocol=2), "x")
    assert images[0, 0, 0].tolist() == [10, 0, 0]
    assert images[0, 0, 1].tolist() == [0, 20, 0]
    assert images[0, 1, 0].tolist() == [0, 0, 30]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    write_cifar(tmp_path / "other", as_tar=False)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes((tmp_path / "other" / "cifar-10-batches-py" / name).read_bytes())
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_3.*refusing to load global (posix|nt)\.system"):
        load_cifar10("train", tmp_path)


def test_cifar10_damaged_archive_and_missing_member(tmp_path):
    folder = tmp_path / "cifar10"
    write_cifar(folder, as_tar=True)
    archive = folder / "cifar-10-python.tar.gz"
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        load_cifar10("test", tmp_path)
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DatasetError, match="lacks cifar-10-batches-py/test_batch"):
        load_cifar10("test", tmp_path)


# ---------------------------------------------------------------- SVHN

def write_svhn(folder: Path, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = np.array([10, 1, 5, 10, 9, 2][:n], dtype=np.uint8).reshape(n, 1)
    savemat(folder / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": y})
    return images, y[:, 0]


def test_svhn_layout_and_label_ten_is_zero(tmp_path):
    images, y = write_svhn(tmp_path / "svhn", "train", 6)
    write_svhn(tmp_path / "svhn", "test", 2)
    ds = load_svhn("train", tmp_path)
    assert ds.data.shape == (6, 32, 32, 3) and ds.data.dtype == np.uint8
    np.testing.assert_array_equal(ds.data, images)
    assert ds.labels.tolist() == [0, 1, 5, 0, 9, 2] and ds.labels.dtype == np.int64
    assert len(load_dataset("svhn", "test", tmp_path)) == 2


def test_svhn_damaged_file(tmp_path):
    write_svhn(tmp_path / "svhn", "test", 3)
    path = tmp_path / "svhn" / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DatasetError, match="test_32x32.mat"):
        load_svhn("test", tmp_path)
    path.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DatasetError, match="test_32x32.mat"):
        load_svhn("test", tmp_path)


# ---------------------------------------------------------------- CelebA

RED, BLUE = (220, 20, 20), (20, 20, 220)


def face() -> Image.Image:
    """178x218, red outside the centred 140x140 box (19, 39, 159, 179), blue inside."""
    img = Image.new("RGB", (178, 218), RED)
    img.paste(Image.new("RGB", (140, 140), BLUE), (19, 39))
    return img


def write_celeba(folder: Path, zipped: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    codes = [0, 0, 1, 2, 0, 2, 0]
    names = [f"{i + 1:06d}.jpg" for i in range(len(codes))]
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{n} {c}\n" for n, c in zip(names, codes)))
    blobs = []
    for n in names:
        buf = io.BytesIO()
        face().save(buf, "JPEG", quality=95)
        blobs.append((n, buf.getvalue()))
    if zipped:
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as zf:
            for n, blob in blobs:
                zf.writestr(f"img_align_celeba/{n}", blob)
    else:
        (folder / "img_align_celeba").mkdir()
        for n, blob in blobs:
            (folder / "img_align_celeba" / n).write_bytes(blob)


def test_celeba_crop_split_and_cache(tmp_path):
    folder = tmp_path / "celeba"
    write_celeba(folder)
    train = load_celeba("train", tmp_path, progress=False)
    assert train.data.shape == (4, 64, 64, 3) and train.data.dtype == np.uint8
    assert train.labels is None
    # the author's crop keeps the whole width: the red side borders (19 of 178 columns) show
    px = train.data.astype(int)
    assert px[:, 32, :4, 0].min() > 180 and px[:, 32, -4:, 0].min() > 180
    assert np.abs(px[:, 24:40, 24:40] - np.array(BLUE)).max() < 24
    assert (folder / "celeba_64_author_train.npy").is_file()
    # the tight crop (dataset celeba-tight) keeps only the blue centre: the red border is gone
    # (JPEG smears a little colour across the box edge, hence the tolerance)
    tight = load_dataset("celeba-tight", "train", tmp_path).data.astype(int)
    assert np.abs(tight[:, 2:-2, 2:-2] - np.array(BLUE)).max() < 24
    assert tight[..., 0].mean() < 40 and tight[..., 2].mean() > 180
    assert (folder / "celeba_64_train.npy").is_file()  # the name its cache always had
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    test = load_dataset("celeba", "test", tmp_path)
    assert len(test) == 2
    # later loads memory-map the cache, even once the JPEGs are gone
    for p in (folder / "img_align_celeba").iterdir():
        p.unlink()
    again = load_celeba("train", tmp_path, progress=False)
    assert isinstance(again.data, np.memmap)
    np.testing.assert_array_equal(again.data, train.data)
    with pytest.raises(DatasetError, match="crop"):
        load_celeba("train", tmp_path, progress=False, crop="wide")


def test_celeba_authors_crop_is_resize_64_then_centre_64():
    """Resize(64): 178x218 -> 64x78 (bilinear); CenterCrop(64): rows 7..70 of that, i.e. the
    source rows ~19.6..198.4: red above row 19 and below row 199 is cut, rows inside kept."""
    band = Image.new("RGB", (178, 218), RED)
    band.paste(Image.new("RGB", (178, 218 - 2 * 19), BLUE), (0, 19))  # blue rows 19..198
    out = crop_and_resize(band).astype(int)
    assert out.shape == (64, 64, 3)
    assert np.abs(out[1:-1] - np.array(BLUE)).max() <= 2  # no red left inside
    wider = Image.new("RGB", (178, 218), RED)
    wider.paste(Image.new("RGB", (178, 218 - 2 * 30), BLUE), (0, 30))  # red rows 0..29: 11 too many
    assert crop_and_resize(wider)[1, :, 0].min() > 100  # row 1 of the crop is source row ~23: red
    landscape = crop_and_resize(Image.new("RGB", (100, 50), BLUE))  # the shorter side is the height
    assert landscape.shape == (64, 64, 3) and (landscape == np.array(BLUE)).all()


def test_celeba_tight_crop_is_the_centred_box_exactly():
    out = crop_and_resize(face(), "tight")  # lossless: every output pixel is exactly the centre colour
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out.reshape(-1, 3) == np.array(BLUE)).all()
    shifted = Image.new("RGB", (178, 218), RED)
    shifted.paste(Image.new("RGB", (140, 140), BLUE), (19, 40))  # one row too low
    assert (crop_and_resize(shifted, "tight")[0] != np.array(BLUE)).any()


def test_celeba_reads_the_zip_and_rebuilds_a_stale_cache(tmp_path):
    folder = tmp_path / "celeba"
    write_celeba(folder, zipped=True)
    np.save(folder / "celeba_64_author_test.npy", np.zeros((5, 64, 64, 3), np.uint8))  # wrong count
    test = load_celeba("test", tmp_path, progress=False)
    assert test.data.shape == (2, 64, 64, 3) and test.data.min() < 60


def test_celeba_bad_partition_and_missing_image(tmp_path):
    folder = tmp_path / "celeba"
    write_celeba(folder)
    (folder / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(DatasetError, match="000004.jpg: listed in list_eval_partition.txt"):
        load_celeba("test", tmp_path, progress=False)
    assert not list(folder.glob("*.npy")) and not list(folder.glob(".*tmp"))
    (folder / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(DatasetError, match="list_eval_partition.txt: line 2"):
        load_celeba("train", tmp_path, progress=False)


# ---------------------------------------------------------------- folder of images

def write_pngs(root: Path, n: int, size=(12, 10)) -> list[np.ndarray]:
    arrays = []
    for i in range(n):
        arr = RNG.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(sub / f"{i:03d}.png")
        arrays.append(arr)
    return arrays


def test_folder_split_is_every_tenth_sorted_file(tmp_path):
    arrays = write_pngs(tmp_path / "imgs", 12)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    files = sorted((p.relative_to(tmp_path / "imgs").as_posix(), i)
                   for i, p in enumerate([tmp_path / "imgs" / ("a" if i % 2 else "b") / f"{i:03d}.png"
                                          for i in range(12)]))
    order = [i for _, i in files]
    train = load_image_folder(tmp_path / "imgs", split="train", progress=False)
    test = load_dataset(f"folder:{tmp_path / 'imgs'}", "test")
    assert train.data.shape == (11, 12, 10, 3) and train.labels is None
    assert test.data.shape == (1, 12, 10, 3)
    np.testing.assert_array_equal(test.data[0], arrays[order[9]])
    np.testing.assert_array_equal(train.data, np.stack([arrays[i] for i in order[:9] + order[10:]]))


def test_folder_sizes_and_channels(tmp_path):
    root = tmp_path / "imgs"
    write_pngs(root, 10, size=(12, 10))
    odd = root / "b" / "zzz.png"
    Image.new("L", (30, 16), 77).save(odd)
    with pytest.raises(DatasetError, match=r"zzz.png: 30x16 pixels .* expected 10x12"):
        load_image_folder(root, resize=False, progress=False)
    ds = load_image_folder(root, size=(8, 8), channels=1, progress=False)
    assert ds.data.shape == (10, 8, 8, 1)
    gray = load_image_folder(root, size=(12, 10), channels=3, split="test", progress=False)
    assert gray.data.shape == (1, 12, 10, 3)


def test_folder_without_images_or_missing(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="no PNG or JPEG images"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match="nowhere: no such folder"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="x.png: cannot decode"):
        load_image_folder(tmp_path / "bad")
