"""Distillation for every likelihood and rank: a Bernoulli image model, a categorical text model
(rank 1) and a Bernoulli voxel model (rank 3). Each distilled encoder, after a short run, must
encode within 10% of the greedy encoder's loss, where uniformly random codes are well outside it,
and its codes must go through ``model.encode(x, encoder=...)``. Tiny models: seconds each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqdraw.core.config import ModelConfig, RefinerConfig
from vqdraw.data import load_dataset
from vqdraw.data.base import Dataset
from vqdraw.training.distill import distill, load_distilled, relaxed_reconstruction_loss
from vqdraw.core.model import VQDraw

ENCODER = {"channels": (16, 32), "hidden": 64}


def solids(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """n boxes at random places and sizes, uint8 0/255 (n, size, size, size, 1)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, size, 1), dtype=np.uint8)
    for i in range(n):
        lo = rng.integers(0, size // 2, size=3)
        hi = lo + rng.integers(2, size // 2 + 1, size=3)
        out[i, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 255
    return out


def binary_digits(split: str, n: int) -> Dataset:
    images = load_dataset("mnist-embedded", split).data[:n]
    return Dataset(((images >= 128) * 255).astype(np.uint8), None, "binary-digits")


def _case(name: str):
    """(model config, train set, test set, training steps) of one modality."""
    if name == "bernoulli-image":
        cfg = ModelConfig((1, 28, 28), options=8, stages=4, segment=2, likelihood="bernoulli", mean=(0.5,),
                          std=(0.5,), refiner=RefinerConfig(down=(8, 8), body=(16,), up=(8, 8)))
        return cfg, binary_digits("train", 1000), binary_digits("test", 200), 100
    if name == "text":
        train = load_dataset("text-embedded", "train", size=(16,))
        test = load_dataset("text-embedded", "test", size=(16,))
        cfg = ModelConfig((1, 16), options=16, stages=2, segment=2, likelihood="categorical", categories=256,
                          mean=(0.5,), std=(0.5,), refiner=RefinerConfig(down=(8,), body=(16,), up=(8,)))
        return cfg, train.subset(range(min(4000, len(train)))), test.subset(range(min(200, len(test)))), 100
    cfg = ModelConfig((1, 8, 8, 8), options=8, stages=4, segment=2, likelihood="bernoulli", mean=(0.5,),
                      std=(0.5,), refiner=RefinerConfig(down=(8,), body=(16,), up=(8,)))
    return cfg, Dataset(solids(1000), None, "solids"), Dataset(solids(200, seed=1), None, "solids"), 60


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: a second thread only waits for a busy core
    yield
    torch.set_num_threads(threads)


_TRAINED: dict = {}


def trained(name: str, train_briefly):
    """(model, train set, test set) of a modality, trained once per module."""
    if name not in _TRAINED:
        cfg, train, test, steps = _case(name)
        torch.manual_seed(0)
        _TRAINED[name] = train_briefly(VQDraw(cfg), train, steps=steps).eval(), train, test
    return _TRAINED[name]


def _final_loss(model, x, codes) -> float:
    res = model.score(x, codes)
    return res.losses[:, -1].gather(1, codes[:, -1:]).mean().item()


@pytest.mark.parametrize("name, kind", [("bernoulli-image", "independent"), ("text", "independent"),
                                        ("voxels", "independent"), ("bernoulli-image", "autoregressive")])
def test_distilled_encoder_is_within_ten_percent_of_greedy(name, kind, train_briefly):
    model, train, test = trained(name, train_briefly)
    res = distill(model, train, test, steps=300, batch=32, lr=3e-3, progress=False, save=False, kind=kind,
                  prior_fraction=0, encoder_config=ENCODER, finetune_steps=20)
    greedy, distilled = res.greedy["mse"], res.distilled["mse"]  # the likelihood's loss of the final canvas
    assert distilled <= 1.1 * greedy, (name, kind, greedy, distilled)
    x = test.batch(range(100))
    codes = model.encode(x, encoder=res.encoder)
    assert codes.shape == (100, model.stages) and codes.dtype == torch.int64
    assert torch.equal(codes, res.encoder.predict(x))
    # the bound means something: uniformly random codes are well outside it
    random = torch.randint(0, model.options, codes.shape, generator=torch.Generator().manual_seed(0))
    assert _final_loss(model, x, random) > 1.1 * _final_loss(model, x, model.encode(x))
    if kind == "independent":
        # the relaxed loss is the likelihood's (not squared error): it equals the losses along the codes
        res.encoder.eval()
        relaxed = relaxed_reconstruction_loss(model, res.encoder, x[:16])
        along = model.encode(x[:16], encoder=res.encoder, return_reconstruction=True)
        expected = along.losses.gather(2, along.codes.unsqueeze(2)).mean()
        assert relaxed.item() == pytest.approx(expected.item(), rel=1e-4)


def test_cli_distills_a_text_model(tmp_path, capsys, train_briefly):
    from vqdraw.cli import main

    model = trained("text", train_briefly)[0]
    model.save(tmp_path)
    code = main(["distill", "--model", str(tmp_path), "--dataset", "text-embedded", "--steps", "20", "--batch",
                 "16", "--train-images", "200", "--test-images", "40", "--prior-images", "20", "--no-progress",
                 "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "categorical loss" in printed and "distilled" in printed
    encoder = load_distilled(tmp_path, model)
    x = load_dataset("text-embedded", "test", size=(16,)).batch(range(8))
    assert model.encode(x, encoder=encoder).shape == (8, model.stages)
