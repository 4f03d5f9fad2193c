"""3-D volumes: voxel readers (.npy folder, .binvox), presets, .vqd version 2, the CLI's volume
branches and modality checks. Grids are tiny (16^3) so everything runs in seconds."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from vqdraw.compress.bitstream import MODALITY_CODES, VqdFormatError, header_size, read_header, read_vqd, write_vqd
from vqdraw.cli import main
from vqdraw.core.config import get_preset
from vqdraw.data import DatasetError, dataset_modality, load_dataset
from vqdraw.data.voxels import binvox_bytes, load_voxel_folder, read_binvox, read_grids
from vqdraw.errors import InputError
from vqdraw.core.modality import modality_of
from vqdraw.modalities import check_modality
from vqdraw.core.model import VQDraw

FP = bytes(range(16))


def solids(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """n boxes at random places and sizes, bool (n, size, size, size)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, size), dtype=bool)
    for i in range(n):
        lo = rng.integers(0, size // 2, size=3)
        hi = lo + rng.integers(2, size // 2, size=3)
        out[i, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return out


# ------------------------------------------------------------------------------------- binvox
def test_binvox_reads_a_file_written_by_hand():
    # 2x3x4 grid (x, y, z), one voxel at (x=1, y=2, z=0). In the file the order is x, z, y with y
    # fastest: index = x*(4*3) + z*3 + y = 12 + 0 + 2 = 14 of 24.
    head = b"#binvox 1\ndim 2 3 4\ntranslate 0.5 -1 0\nscale 2.5\ndata\n"
    runs = bytes([0, 14, 1, 1, 0, 9])
    grid = read_binvox(head + runs)
    assert grid.shape == (2, 3, 4) and grid.dtype == bool
    assert grid.sum() == 1 and grid[1, 2, 0]


def test_binvox_round_trip_with_long_runs():
    rng = np.random.default_rng(1)
    grid = np.zeros((20, 17, 9), dtype=bool)  # long empty runs: more than 255 voxels each
    grid[3:9, 2:15, 1:8] = rng.random((6, 13, 7)) > 0.3
    data = binvox_bytes(grid)
    assert data.startswith(b"#binvox 1\ndim 20 17 9\n")
    body = np.frombuffer(data[data.index(b"data\n") + 5:], dtype=np.uint8)
    assert body[1::2].max() <= 255 and body[1::2].min() >= 1 and body[1::2].astype(int).sum() == grid.size
    np.testing.assert_array_equal(read_binvox(data), grid)


@pytest.mark.parametrize(("data", "match"), [
    (b"#binvox 1\ndim 2 2 2\ndata\n" + bytes([0, 7]), "cover 7 voxels"),
    (b"#binvox 1\ndim 2 2 2\ndata\n" + bytes([2, 8]), "run value 2"),
    (b"#binvox 1\ndim 2 2 2\ndata\n" + bytes([0, 8, 1]), "odd number"),
    (b"#binvox 2\ndim 2 2 2\ndata\n" + bytes([0, 8]), "version"),
    (b"PK\x03\x04 not binvox\n", "not a binvox file"),
    (b"#binvox 1\ndim 2 2\ndata\n", "three sizes"),
    (b"#binvox 1\ndim 2 2 2\n", "truncated"),
])
def test_binvox_refuses_bad_files(data, match):
    with pytest.raises(DatasetError, match=match):
        read_binvox(data, "x.binvox")


# ------------------------------------------------------------------------------------- npy folder
def test_voxel_folder_reader_split_dtypes_and_sizes(tmp_path):
    grids = solids(25, 16)
    np.save(tmp_path / "a_stack.npy", grids[:20].astype(np.uint8))  # (N, D, H, W) uint8
    for i in range(20, 24):
        np.save(tmp_path / f"b_{i}.npy", grids[i].astype(np.float32))  # one (D, H, W) float grid
    (tmp_path / "c.binvox").write_bytes(binvox_bytes(grids[24]))
    train = load_voxel_folder(tmp_path, "train")
    test = load_voxel_folder(tmp_path, "test")
    assert len(train) == 23 and len(test) == 2  # items 9 and 19 are the test split
    assert train.data_shape == (1, 16, 16, 16) and set(np.unique(train.data)) <= {0, 255}
    np.testing.assert_array_equal(test.data[..., 0] == 255, grids[[9, 19]])
    np.testing.assert_array_equal(train.data[-1, ..., 0] == 255, grids[24])  # the binvox file
    batch = train.batch([0, 1])
    assert batch.shape == (2, 1, 16, 16, 16) and batch.dtype == torch.float32
    np.testing.assert_array_equal(batch[:, 0].numpy() == 1.0, grids[:2])
    # the same folder through the dataset name, and reduced to 8^3 by block maximum
    assert len(load_dataset(f"voxels:{tmp_path}", "test")) == 2
    small = load_voxel_folder(tmp_path, "train", size=(8, 8, 8))
    expect = grids[0].reshape(8, 2, 8, 2, 8, 2).any(axis=(1, 3, 5))
    np.testing.assert_array_equal(small.data[0, ..., 0] == 255, expect)
    with pytest.raises(DatasetError, match="whole-multiple"):
        load_voxel_folder(tmp_path, "train", size=(6, 6, 6))


def test_voxel_reader_refuses_non_binary_and_pickles(tmp_path):
    np.save(tmp_path / "half.npy", np.full((4, 4, 4), 0.5))
    with pytest.raises(DatasetError, match="only 0 and 1"):
        read_grids(tmp_path / "half.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="cannot read"):
        read_grids(tmp_path / "obj.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(DatasetError, match="expected a grid"):
        read_grids(tmp_path / "flat.npy")


# ------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", ["voxels32", "voxels64"])
def test_voxel_presets_build(name):
    preset = get_preset(name)
    model = VQDraw(preset.model)
    side = int(name[-2:])
    assert preset.model.data_shape == (1, side, side, side) and preset.model.likelihood == "bernoulli"
    assert modality_of(preset.model) == "volume"
    assert any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
    assert preset.model.stages == 20 and preset.model.segment == 5  # SVHN's segments / the author's run


def test_tiny_voxel_model_trains_a_step():
    torch.manual_seed(0)
    model = VQDraw.from_preset("voxels32", data_shape=(1, 16, 16, 16), stages=2, segment=1, options=8)
    x = torch.from_numpy(solids(4)).float().unsqueeze(1)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    terms = model.loss(x)
    terms["loss"].backward()
    opt.step()
    assert torch.isfinite(terms["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ------------------------------------------------------------------------------------- .vqd v2
def test_vqd_version_2_layout_for_volumes():
    codes = np.array([[1, 2, 3]])
    data = write_vqd(codes, 4, (1, 2, 3, 5), FP)
    expected_head = (b"VQDR" + bytes([2, 0]) + FP + bytes([MODALITY_CODES["volume"], 4])
                     + struct.pack("<4H", 1, 2, 3, 5) + struct.pack("<HHI", 4, 3, 1))
    assert data[:len(expected_head)] == expected_head
    assert data[len(expected_head)] == 0x6C  # the payload is packed as in version 1
    assert len(data) == header_size((1, 2, 3, 5), "volume") + 1 == 44 + 1
    f = read_vqd(data)
    assert (f.modality, f.version, f.data_shape, f.codes.tolist()) == ("volume", 2, (1, 2, 3, 5), [[1, 2, 3]])
    # images are still version 1, byte for byte
    assert write_vqd(codes, 4, (1, 2, 3), FP)[4] == 1 and read_header(write_vqd(codes, 4, (1, 2, 3), FP)).modality == "image"
    with pytest.raises(VqdFormatError, match="holds volume codes"):
        read_vqd(data, modality="image")
    bad = bytearray(data)
    bad[22] = 9  # an unknown modality code
    with pytest.raises(VqdFormatError, match="unknown modality code 9"):
        read_vqd(bytes(bad))
    bad[22], bad[23] = MODALITY_CODES["volume"], 3  # a volume with 3 dimensions
    with pytest.raises(VqdFormatError, match="volume data with 3 dimensions"):
        read_vqd(bytes(bad))


def test_modality_checks():
    image_cfg = get_preset("mnist").model
    with pytest.raises(InputError, match="holds volume data, but this model is an image model"):
        check_modality(image_cfg, "volume", "voxels:x")
    check_modality(get_preset("voxels32").model, "volume", "voxels:x")
    assert dataset_modality("voxels:/a") == "volume" and dataset_modality("folder:/a") == "image"
    assert dataset_modality("mnist-embedded") == "image"


# ------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def voxel_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vox")
    run = root / "run"
    root = root / "grids"  # a folder holding only voxel files
    root.mkdir()
    np.save(root / "grids.npy", solids(30))
    code = main(["train", "--preset", "voxels32", "--dataset", f"voxels:{root / 'grids.npy'}",
                 "--data-shape", "1", "16", "16", "16", "--stages", "3", "--segment", "3", "--options", "8",
                 "--steps", "2", "--batch", "4", "--micro-batch", "4", "--eval-every", "2", "--eval-size", "3",
                 "--save-every", "2", "--run", str(run), "--no-progress"])
    assert code == 0
    return root, run


def test_voxel_cli_train_pictures_and_round_trip(voxel_run, tmp_path):
    root, run = voxel_run
    for name in ("samples.png", "reconstructions.png", "stages.png"):
        assert (run / name).stat().st_size > 0
    grids = solids(5, seed=3)
    np.save(tmp_path / "in.npy", grids)
    vqd = tmp_path / "x.vqd"
    assert main(["encode", "-m", str(run), str(tmp_path / "in.npy"), "-o", str(vqd)]) == 0
    data = vqd.read_bytes()
    header = read_header(data)
    assert (header.version, header.modality, header.data_shape, header.count) == (2, "volume", (1, 16, 16, 16), 5)
    out = tmp_path / "out"
    assert main(["decode", "-m", str(run), str(vqd), "-o", str(out)]) == 0
    decoded = np.stack([np.load(out / f"{i:06d}.npy", allow_pickle=False) for i in range(5)])
    model = VQDraw.load(run)
    model.eval()
    codes = torch.from_numpy(read_vqd(data).codes)
    with torch.no_grad():
        expect = (model.decode(codes) > 0.5).numpy()[:, 0]
        direct = model.encode(torch.from_numpy(grids).float().unsqueeze(1))
    assert torch.equal(codes, direct.codes if hasattr(direct, "codes") else direct)
    assert decoded.dtype == bool and np.array_equal(decoded, expect)
    for verb in ("sample", "reconstruct", "stages"):
        args = [verb, "-m", str(run), "-o", str(tmp_path / f"{verb}.png")]
        args += ["-n", "4"] if verb == "sample" else ["--count", "3"]
        assert main(args) == 0 and (tmp_path / f"{verb}.png").stat().st_size > 0


def test_modality_mismatch_is_one_line_exit_2(voxel_run, tmp_path, capsys):
    root, run = voxel_run
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.fromarray(np.full((16, 16), i * 20, dtype=np.uint8)).save(images / f"{i}.png")
    # an image folder given to a voxel model, for training and for encoding
    assert main(["train", "--preset", "voxels32", "--dataset", f"folder:{images}", "--run",
                 str(tmp_path / "r"), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds image data, but this model is a volume model" in err[0]
    assert main(["encode", "-m", str(run), str(images), "-o", str(tmp_path / "a.vqd")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds image data" in err[0]
    # a voxel folder and a voxel .vqd given to an image model
    image_model = tmp_path / "mnist"
    VQDraw.from_preset("mnist", stages=2).save(image_model)
    assert main(["encode", "-m", str(image_model), str(root), "-o", str(tmp_path / "b.vqd")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds volume data, but this model is an image model" in err[0]
    vqd = tmp_path / "v.vqd"
    np.save(tmp_path / "one.npy", solids(1)[0])
    assert main(["encode", "-m", str(run), str(tmp_path / "one.npy"), "-o", str(vqd)]) == 0
    capsys.readouterr()
    assert main(["decode", "-m", str(image_model), str(vqd), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds volume codes" in err[0]
    assert main(["reconstruct", "-m", str(image_model), "--dataset", f"voxels:{root}", "-o",
                 str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds volume data" in err[0]


def test_reconstruct_and_stages_reduce_a_larger_dataset_like_training(voxel_run, tmp_path):
    """A 16^3 model given a dataset of 32^3 grids (a whole multiple): reconstruct and stages reduce
    it by block maximum, as training does, instead of refusing it."""
    _, run = voxel_run
    big = np.repeat(np.repeat(np.repeat(solids(20), 2, axis=1), 2, axis=2), 2, axis=3)  # 32^3
    assert big.shape[1:] == (32, 32, 32)
    np.save(tmp_path / "big.npy", big)
    for verb in ("reconstruct", "stages"):
        out = tmp_path / f"{verb}.png"
        assert main([verb, "-m", str(run), "--dataset", f"voxels:{tmp_path / 'big.npy'}", "--count", "2",
                     "-o", str(out)]) == 0
        assert out.stat().st_size > 0
