"""A new kind of data is one class: a modality defined here, outside src/, registered through
vqdraw.modalities.register, trains (its own metric in metrics.jsonl and the summary), writes .vqd
files and decodes them, and its model folder loads again, with no change under src/."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vqdraw import ConfigError, ModelConfig, RefinerConfig, TrainConfig, VQDraw, fit
from vqdraw.compress.codec import compress, decompress
from vqdraw.data.base import Dataset
from vqdraw.modalities import ImageModality, modality_for, register
from vqdraw.modalities.base import evaluation_loss


class Heatmap(ImageModality):
    """Single-channel intensity maps: pictures like images, scored by their peak's position."""

    name = "heatmap"
    noun = "map"
    element = "cell"
    headline = ("test_peak_hit", "peak", ".2f")

    def test_metrics(self, model, data, recon):
        same = data.flatten(1).argmax(1) == recon.flatten(1).argmax(1)
        return {"test_peak_hit": same.float().mean().item()}

    def summary(self, metrics, config=None):
        return f"test loss {evaluation_loss(metrics):.4f}, peak found in {100 * metrics['test_peak_hit']:.0f}% of maps"


@pytest.fixture(scope="module")
def heatmap():
    return register(Heatmap(), stored_as="image")


def _maps(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:8, 0:8]
    centres = rng.integers(1, 7, (n, 2))
    maps = np.exp(-((y[None] - centres[:, :1, None]) ** 2 + (x[None] - centres[:, 1:, None]) ** 2) / 4.0)
    return Dataset((maps[..., None] * 255).round().astype(np.uint8))


def test_a_registered_modality_trains_codes_and_decodes(heatmap, tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig((1, 8, 8), 4, 3, 3, refiner=RefinerConfig(down=(8,), body=(8,), up=(8,)), modality="heatmap")
    model = VQDraw(cfg)
    assert modality_for(model.config) is heatmap
    train_cfg = TrainConfig(steps=4, batch=8, eval_every=2, save_every=4, log_every=1, eval_size=8)
    result = fit(model, _maps(64, 0), _maps(8, 1), train_cfg, tmp_path / "run", progress=False)
    evaluation = [r for r in result.metrics if "test_peak_hit" in r]
    assert evaluation and 0 <= evaluation[-1]["test_peak_hit"] <= 1
    assert "peak found in" in heatmap.summary(evaluation[-1])
    assert (tmp_path / "run" / "samples.png").is_file()  # its pictures: the image modality's

    loaded = VQDraw.load(tmp_path / "run")
    assert loaded.config.modality == "heatmap"
    maps = _maps(5, 2).batch(range(5))
    data = compress(loaded, maps)
    recon, vqd = decompress(loaded, data)
    assert vqd.modality == "image"  # laid out as the modality it is stored as
    assert torch.equal(recon, loaded.decode(loaded.encode(maps)))
    saved = json.loads((tmp_path / "run" / "train.json").read_text())
    assert saved["model"]["modality"] == "heatmap"


def test_an_unregistered_modality_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="registered one"):
        ModelConfig((1, 8, 8), modality="not-registered")


def test_register_refuses_a_taken_name():
    from vqdraw.errors import InputError

    class Again(ImageModality):
        name = "image"

    with pytest.raises(InputError, match="new"):
        register(Again(), stored_as="image")
