"""The VQ-VAE baseline: bits, shapes, persistence, a short training run, `vqdraw baseline vqvae`."""

from __future__ import annotations

import json

import pytest
import torch

from vqdraw.baselines import load_any_model, run_dataset
from vqdraw.baselines.vqvae import VQVAE, VQVAEConfig, VQVAETrainConfig, build_vqvae, train_vqvae
from vqdraw.errors import CheckpointError, InputError

SMALL = dict(channels=(8, 16), latent_dim=4)


pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")


@pytest.fixture(scope="module")
def splits():
    from vqdraw.data import load_dataset

    return load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")


def test_bits_per_image():
    assert VQVAEConfig(codebook=2).code_bits == 49
    assert VQVAEConfig(codebook=4).code_bits == 98
    assert VQVAEConfig(codebook=2).grid == (7, 7) and VQVAEConfig().stages == 49


def test_encode_decode_sample_shapes(splits):
    train, test = splits
    torch.manual_seed(0)
    model = build_vqvae(train, codebook=4, **SMALL)
    x = test.batch(range(8))
    model.train()
    model.loss(x)  # first forward initialises the codebook (k-means)
    model.eval()
    codes = model.encode(x)
    assert codes.shape == (8, 49) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < 4
    recon = model.decode(codes)
    assert recon.shape == (8, 1, 28, 28) and 0 <= recon.min() and recon.max() <= 1
    assert torch.allclose(recon, model.reconstruct(x), atol=1e-5)
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 28, 28)
    with pytest.raises(InputError):
        model.decode(torch.full((2, 49), 4))
    with pytest.raises(InputError):
        model.encode(torch.rand(2, 3, 28, 28))


def test_loss_falls_in_a_short_run_and_roundtrips(splits, tmp_path):
    train, test = splits
    torch.manual_seed(0)
    model = build_vqvae(train, codebook=2, **SMALL)
    cfg = VQVAETrainConfig(steps=60, batch=16, lr=3e-3, log_every=20)
    res = train_vqvae(model, train, test.subset(range(40)), cfg, tmp_path / "run", pictures=False)
    losses = res["losses"]
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:5]) / 5
    assert res["final"]["test_codes_used"] == 2  # no dead code with a 2-entry codebook
    # The run folder is a loadable model folder that says its dataset.
    loaded = load_any_model(tmp_path / "run")
    assert isinstance(loaded, VQVAE)
    assert run_dataset(tmp_path / "run") == "mnist-embedded"
    x = test.batch(range(6))
    model.eval()
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 4
    from vqdraw import VQDraw

    with pytest.raises(CheckpointError):
        VQDraw.load(tmp_path / "run")


def test_baseline_cli_and_evaluation_tools_accept_it(tmp_path):
    from vqdraw.cli import main

    run = tmp_path / "vq"
    assert main(["baseline", "vqvae", "--steps", "3", "--batch", "8", "--codebook", "4", "--latent-dim", "4",
                 "--run", str(run), "--no-progress", "--device", "cpu"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["format"] == "vqdraw-vqvae" and cfg["model"]["codebook"] == 4
    for name in ("model.safetensors", "train.json", "samples.png", "reconstructions.png"):
        assert (run / name).exists()
    assert main(["baseline", "vqvae", "--steps", "3", "--run", str(run), "--no-progress"]) == 2  # exists
    assert main(["code-stats", str(run), "--device", "cpu"]) == 0
    stats = json.loads((run / "evaluation" / "code-stats.json").read_text())
    assert stats["stages"] == 49 and stats["options"] == 4 and stats["images"] == 500
