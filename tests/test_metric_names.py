"""Metrics are named for what they measure, by the model's modality: PSNR and MSE for images with
the paper's likelihood, bits per character and accuracy for text, BCE and IoU for volumes, SNR for
audio. No image word labels a text, volume or audio metric: not in metrics.jsonl, the progress
line, curves.png's axis label or the run summary."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from vqdraw import TrainConfig, VQDraw, fit
from vqdraw.core.config import ModelConfig, RefinerConfig
from vqdraw.data.base import Dataset
from vqdraw.evaluate import plots
from vqdraw.modalities import modality_for

IMAGE_WORDS = re.compile(r"psnr|mse|pixel", re.IGNORECASE)


def _model(kind: str) -> VQDraw:
    torch.manual_seed(0)
    seq = RefinerConfig(down=(), body=(8,), up=(), head_kernel=3)
    if kind == "image":
        cfg = ModelConfig((1, 8, 8), 4, 2, 2, refiner=RefinerConfig(down=(8,), body=(8,), up=(8,)))
    elif kind == "text":
        cfg = ModelConfig((1, 16), 4, 2, 2, mean=(0.5,), std=(0.5,), likelihood="categorical", categories=256,
                          refiner=seq)
    elif kind == "volume":
        cfg = ModelConfig((1, 4, 4, 4), 4, 2, 2, likelihood="bernoulli", mean=(0.5,), std=(0.5,),
                          refiner=RefinerConfig(down=(), body=(8,), up=(), head_kernel=1))
    else:
        cfg = ModelConfig((1, 64), 4, 2, 2, mean=(0.5,), std=(0.25,), refiner=seq,
                          likelihood="discretized-logistic", modality="audio", sample_rate=8000)
    return VQDraw(cfg)


def _data(model: VQDraw, n: int) -> Dataset:
    shape = model.config.data_shape
    gen = np.random.default_rng(0)
    if model.config.likelihood == "bernoulli":
        data = (gen.random((n, *shape[1:], shape[0])) > 0.5).astype(np.uint8) * 255
    elif model.config.likelihood == "categorical":
        data = gen.integers(32, 127, (n, *shape[1:], shape[0])).astype(np.uint8)
    else:
        data = gen.integers(0, 256, (n, *shape[1:], shape[0])).astype(np.uint8)
    return Dataset(data)


EXPECTED = {
    "image": {"test_loss", "test_mse", "test_mse_pixels", "test_psnr"},
    "text": {"test_loss", "test_accuracy"},
    "volume": {"test_loss", "test_iou"},
    "audio": {"test_loss", "test_snr_db"},
}


@pytest.mark.parametrize("kind", ["image", "text", "volume", "audio"])
def test_metrics_are_named_by_modality(kind, tmp_path):
    model = _model(kind)
    cfg = TrainConfig(steps=2, batch=4, eval_every=2, save_every=2, log_every=1, eval_size=4)
    fit(model, _data(model, 16), _data(model, 4), cfg, tmp_path / "run", progress=False, pictures=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluation = [r for r in records if "test_loss" in r][-1]
    assert {k for k in evaluation if k.startswith("test_")} == EXPECTED[kind]
    assert all(np.isfinite(v) for k, v in evaluation.items() if k.startswith("test_"))

    modality = modality_for(model.config)
    summary = modality.summary(evaluation, model.config)
    progress = " ".join(modality.progress_fields(evaluation))
    label = modality.loss_name(model.config)
    if kind == "image":
        assert "PSNR" in summary and "psnr" in progress and "MSE" in label
    else:
        for text in (summary, progress, label):
            assert not IMAGE_WORDS.search(text), text
    word = {"image": "MSE", "text": "bits per character", "volume": "IoU", "audio": "SNR"}[kind]
    assert word in summary


def test_curves_take_the_modality_label_and_read_old_metrics_files(tmp_path, monkeypatch):
    seen = {}
    real_figure = plots.figure

    def spy(*a, **k):
        fig = real_figure(*a, **k)
        seen["fig"] = fig
        return fig

    monkeypatch.setattr(plots, "figure", spy)
    old = [{"step": 10, "final": 0.5, "entropy": 3.0}, {"step": 20, "final": 0.4, "test_mse": 0.45}]
    plots.save_curves(old, tmp_path / "old.png", loss_name="MSE (normalised)")
    assert len(seen["fig"].axes[0].lines) == 2  # train and test lines from a file that names test_mse
    text = _model("text")
    label = modality_for(text.config).loss_name(text.config)
    plots.save_curves([{"step": 5, "final": 3.0, "test_loss": 3.1}], tmp_path / "new.png", loss_name=label)
    assert seen["fig"].axes[0].get_ylabel() == "cross-entropy (nats per character)"
