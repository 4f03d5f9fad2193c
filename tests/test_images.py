"""Image inputs (vqdraw.data.images): one fit path, transparency, 16-bit, arrays, polarity; balanced subsets."""

from __future__ import annotations

import argparse
import types
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vqdraw.data import balanced_subset, load_dataset
from vqdraw.data.folder import load_image_folder
from vqdraw.errors import InputError
from vqdraw.data.images import fit_image, load_image, polarity_warning, to_tensor

MNIST_MEAN = (0.1307,)


def _rgba(size=(8, 6), rgb=(0, 0, 0), alpha=0) -> Image.Image:
    return Image.new("RGBA", size, (*rgb, alpha))


def test_transparency_is_composited_onto_white_not_dropped(tmp_path):
    # a fully transparent black image: dropping alpha (as before) gave black, the page shows white
    path = tmp_path / "t.png"
    _rgba(alpha=0).save(path)
    x = load_image(path, (3, 6, 8))
    assert torch.all(x == 1.0)
    half = to_tensor(_rgba(rgb=(0, 0, 0), alpha=128), (1, 6, 8))
    assert half.mean().item() == pytest.approx(127 / 255, abs=1.5 / 255)  # 50% black over white
    assert torch.all(to_tensor(_rgba(alpha=0), (1, 6, 8), background="black") == 0.0)
    assert torch.all(to_tensor(_rgba(alpha=0), (1, 6, 8), background=0.5) == 128 / 255)
    la = Image.new("LA", (5, 5), (0, 0))
    assert torch.all(to_tensor(la) == 1.0) and to_tensor(la).shape == (1, 5, 5)
    opaque = _rgba(rgb=(10, 20, 30), alpha=255)
    assert to_tensor(opaque)[:, 0, 0].mul(255).round().tolist() == [10, 20, 30]
    with pytest.raises(InputError):
        to_tensor(opaque, background="purple")


def test_palette_with_transparent_entry(tmp_path):
    p = Image.new("P", (6, 6), 0)
    p.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    p.info["transparency"] = 0  # palette entry 0 (black) is transparent
    path = tmp_path / "p.png"
    p.save(path, transparency=0)
    assert torch.all(load_image(path, (1, 6, 6)) == 1.0)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 0, 1, 128, 255 in 8 bits
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # Pillow keeps the 16 bits
    x = load_image(path, (1, 1, 4))
    assert x.mul(255).round().flatten().tolist() == [0, 1, 128, 255]
    assert to_tensor(values).mul(255).round().flatten().tolist() == [0, 1, 128, 255]
    wide = Image.fromarray(values.astype(np.int32), mode="I")  # 16-bit data in a 32-bit container
    assert to_tensor(wide).mul(255).round().flatten().tolist() == [0, 1, 128, 255]


def test_to_tensor_takes_paths_pil_images_and_arrays(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    expected = torch.from_numpy(grey).float()[None] / 255
    for source in (tmp_path / "g.png", str(tmp_path / "g.png"), Image.fromarray(grey), grey, grey[..., None],
                   grey / 255.0):
        x = to_tensor(source)
        assert x.dtype == torch.float32 and x.shape == (1, 12, 10)
        assert torch.allclose(x, expected, atol=1e-6)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    assert to_tensor(rgb).shape == (3, 12, 10)
    assert to_tensor(rgb, (1, 6, 5)).shape == (1, 6, 5)  # fitted: converted and resized
    assert to_tensor(grey, (3, 12, 10)).shape == (3, 12, 10)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        to_tensor(grey.astype(np.float32))  # 0..255 floats are refused, not clipped
    with pytest.raises(InputError):
        to_tensor(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(InputError):
        to_tensor([[0, 1]])


def test_cli_fit_and_folder_datasets_see_the_same_pixels(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(10):
        arr = rng.integers(0, 256, (30, 41, 4), dtype=np.uint8)  # RGBA, another size and aspect
        Image.fromarray(arr, "RGBA").save(root / f"{i:02d}.png")
    test = load_image_folder(root, size=(28, 28), channels=1, split="test", progress=False)
    assert len(test) == 1
    via_cli = load_image(root / "09.png", (1, 28, 28), fit=True)
    assert torch.equal(test.batch([0])[0], via_cli)
    with Image.open(root / "09.png") as im:
        assert np.array_equal(fit_image(im, (1, 28, 28)), test.data[0])
        assert torch.equal(to_tensor(im, (1, 28, 28)), via_cli)
    with pytest.raises(InputError, match="--fit"):
        load_image(root / "09.png", (1, 28, 28))


def test_polarity_warning():
    digits = load_dataset("mnist-embedded", "test").batch(range(8))
    assert polarity_warning(digits, MNIST_MEAN) is None
    message = polarity_warning(1 - digits, MNIST_MEAN)  # black strokes on white paper
    assert message and "8 of 8" in message and "invert" in message
    assert polarity_warning(torch.full((2, 3, 4, 4), 0.5), (0.5, 0.5, 0.5)) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the library returns the text, it neither prints nor warns
        polarity_warning(1 - digits, MNIST_MEAN)


def test_balanced_subset():
    labels = np.repeat(np.arange(10), 50)  # sorted by label, like the embedded test split
    idx = balanced_subset(labels, 100)
    assert np.bincount(labels[idx], minlength=10).tolist() == [10] * 10
    assert np.array_equal(idx, np.sort(idx)) and len(set(idx.tolist())) == 100
    assert np.array_equal(idx, balanced_subset(labels, 100))  # seeded
    assert not np.array_equal(idx, balanced_subset(labels, 100, seed=1))
    counts = np.bincount(labels[balanced_subset(labels, 25)], minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 25
    skewed = np.array([0] * 3 + [1] * 100 + [2] * 100)  # a small class gives all it has
    assert np.bincount(skewed[balanced_subset(skewed, 30)]).tolist() == [3, 14, 13] or \
        np.bincount(skewed[balanced_subset(skewed, 30)]).tolist() == [3, 13, 14]
    assert balanced_subset(labels, 1000).tolist() == list(range(500))
    free = balanced_subset(None, 20, size=500)
    assert len(set(free.tolist())) == 20 and free.max() > 100  # not the first 20
    assert np.array_equal(free, balanced_subset(None, 20, size=500))


def test_cli_count_takes_a_balanced_subset():
    from vqdraw.cli.common import load_inputs

    test = load_dataset("mnist-embedded", "test")
    assert set(test.labels[:100].tolist()) == {0, 1}  # why "the first --count" was biased
    args = argparse.Namespace(images=[], dataset="mnist-embedded", data_dir=None, count=20, model="unused")
    model = types.SimpleNamespace(config=types.SimpleNamespace(data_shape=(1, 28, 28), mean=MNIST_MEAN),
                                  device="cpu")
    images = load_inputs(args, model)
    idx = balanced_subset(test.labels, 20)
    assert np.bincount(test.labels[idx]).tolist() == [2] * 10
    assert torch.equal(images, test.batch(idx))
