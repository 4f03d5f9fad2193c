"""The distilled one-pass encoder (vqdraw.distill) and `vqdraw distill`."""

from __future__ import annotations

import shutil

import pytest
import torch

from vqdraw.config import ModelConfig, RefinerConfig
from vqdraw.distill import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    DistilledConfig,
    DistilledEncoder,
    check_fits,
    distill,
    finetune,
    load_distilled,
    relaxed_reconstruction_loss,
)
from vqdraw.errors import CheckpointError, InputError
from vqdraw.model import EncodeResult, VQDraw

TINY = ModelConfig(
    (1, 28, 28), options=8, stages=4, segment=2,
    refiner=RefinerConfig(down=(8, 8), body=(16,), up=(8, 8)),
)
SMALL_ENCODER = {"channels": (16, 32), "hidden": 128}


@pytest.fixture(scope="module")
def data():
    from vqdraw.data import load_dataset

    return load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, data, train_briefly):
    """A tiny model trained for 30 Adam steps, saved in a folder, then distilled into it (~10 s)."""
    # One thread: on a shared 2-core machine OpenMP's second thread spin-waits for a busy core
    # and makes these tiny convolutions ~50x slower. Restored after this module's tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train, test = data
    torch.manual_seed(0)
    model = train_briefly(VQDraw(TINY), train, steps=30)
    path = tmp_path_factory.mktemp("model")
    model.eval().save(path)
    model = VQDraw.load(path).eval()
    result = distill(model, train.subset(range(1500)), test.subset(range(200)), steps=300, batch=64,
                     lr=2e-3, out_dir=path, progress=False, encoder_config=SMALL_ENCODER)
    yield path, model, result
    torch.set_num_threads(threads)


def test_encoder_shapes():
    cfg = DistilledConfig((1, 28, 28), stages=5, options=16, mean=(0.1,), std=(0.3,), channels=(8, 16), hidden=32)
    enc = DistilledEncoder(cfg)
    x = torch.rand(3, 1, 28, 28)
    assert enc(x).shape == (3, 5, 16)
    codes = enc.predict(x)
    assert codes.shape == (3, 5) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    rgb = DistilledEncoder(DistilledConfig((3, 64, 64), 100, 64, (0.5,) * 3, (0.5,) * 3))
    assert rgb(torch.rand(2, 3, 64, 64)).shape == (2, 100, 64)


def test_config_round_trip():
    cfg = DistilledConfig((1, 28, 28), 4, 8, (0.1,), (0.3,), channels=(8, 16), hidden=32, dropout=0.0)
    assert DistilledConfig.from_dict(cfg.to_dict()) == cfg


def test_distillation_beats_chance_by_far(folder, data):
    path, model, result = folder
    chance = 1 / model.options
    assert len(result.accuracy) == model.stages
    assert result.accuracy[0] > 0.8  # the first stage is almost a classifier of the digit's look
    assert result.mean_accuracy > chance + 0.25
    # a tiny model's codes are unbalanced: also beat always guessing each stage's commonest option
    codes = model.encode(data[1].batch(range(200)))
    majority = torch.stack([torch.bincount(c, minlength=model.options).max() for c in codes.t()]) / 200
    assert result.mean_accuracy > majority.mean().item() + 0.05
    # the codes it predicts decode to images closer to the targets than random codes do
    assert result.distilled["mse"] < result.greedy["mse"] * 2
    assert result.greedy["psnr"] > result.distilled["psnr"] > 0


def test_saved_into_the_model_folder(folder):
    path, model, result = folder
    assert result.out_dir == path
    assert (path / WEIGHTS_FILE).exists() and (path / CONFIG_FILE).exists()
    loaded = DistilledEncoder.load(path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded.predict(x), result.encoder.predict(x))
    assert loaded.meta["model_fingerprint"] == model.fingerprint().hex()
    assert loaded.meta["metrics"]["accuracy"] == pytest.approx(result.accuracy)


def test_encode_with_the_distilled_encoder(folder, data):
    path, model, result = folder
    x = data[1].batch(range(8))
    enc = result.encoder
    codes = model.encode(x, encoder=enc)
    assert torch.equal(codes, enc.predict(x))
    res = model.encode(x, encoder=enc, return_reconstruction=True)
    assert isinstance(res, EncodeResult)
    assert torch.equal(res.codes, codes)
    assert res.losses.shape == (8, model.stages, model.options)
    assert torch.allclose(res.reconstruction, model.decode(codes), rtol=0, atol=1e-6)
    prefix = model.encode(x, encoder=enc, stages=2, return_reconstruction=True)
    assert torch.equal(prefix.codes, codes[:, :2])
    assert torch.allclose(prefix.reconstruction, model.decode(codes, stages=2), rtol=0, atol=1e-6)


def test_predict_checks_its_input(folder, data):
    _, _, result = folder
    enc = result.encoder
    x = data[1].batch(range(4))
    assert torch.equal(enc.predict(x.double()), enc.predict(x))  # float64 accepted
    for bad in (x * 255, x.round().long(), x[:, :, :20], x[0]):
        with pytest.raises(InputError):
            enc.predict(bad)


def test_a_freshly_loaded_model_loads_its_distilled_encoder(folder, data):
    path, model, result = folder
    x = data[1].batch(range(8))
    fresh = VQDraw.load(path)
    enc = load_distilled(path, fresh)
    assert torch.equal(fresh.encode(x, encoder=enc), result.encoder.predict(x))
    assert "distilled" not in "".join(fresh.state_dict())  # not part of the model's weights
    assert not hasattr(fresh, "source_dir")


def test_no_distilled_encoder_is_a_clear_error(tmp_path, data):
    model = VQDraw(TINY).eval()
    model.save(tmp_path)
    with pytest.raises(InputError, match="vqdraw distill"):
        load_distilled(tmp_path, VQDraw.load(tmp_path))


def test_an_encoder_for_another_shape_is_refused(data):
    model = VQDraw(TINY).eval()
    enc = DistilledEncoder(DistilledConfig.for_model(model, **SMALL_ENCODER))
    check_fits(model, enc)  # fits
    x = data[1].batch(range(3))
    assert torch.equal(model.encode(x, encoder=enc), enc.predict(x))
    wrong = DistilledEncoder(DistilledConfig((1, 28, 28), 5, 8, (0.1,), (0.3,)))
    with pytest.raises(InputError):
        check_fits(model, wrong)


def test_encoder_for_other_weights_is_refused(folder, tmp_path, data):
    path, model, _ = folder
    other = VQDraw.load(path)
    with torch.no_grad():
        other.refiner.first_bias.add_(0.01)
    other.save(tmp_path)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        shutil.copy(path / name, tmp_path / name)
    with pytest.raises(CheckpointError, match="other model weights"):
        load_distilled(tmp_path, VQDraw.load(tmp_path))


def test_straight_through_loss_follows_the_hard_codes(folder, data):
    path, model, result = folder
    enc = result.encoder
    x = data[1].batch(range(8))
    enc.eval()
    loss = relaxed_reconstruction_loss(model, enc, x)
    res = model.encode(x, encoder=enc, return_reconstruction=True)
    along = res.losses.gather(2, res.codes.unsqueeze(2)).mean()
    assert loss.item() == pytest.approx(along.item(), rel=1e-4)
    loss.backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in enc.parameters())
    enc.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)


def test_finetune_changes_only_the_encoder(folder, data):
    path, model, result = folder
    enc = DistilledEncoder(result.encoder.config)
    enc.load_state_dict(result.encoder.state_dict())
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_enc = {k: v.clone() for k, v in enc.state_dict().items()}
    losses = finetune(model, enc, data[0].subset(range(64)), steps=2, batch=8, lr=1e-4)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before_model.items())
    assert any(not torch.equal(v, enc.state_dict()[k]) for k, v in before_enc.items())
    assert all(p.requires_grad for p in model.parameters())


def test_cli(folder, tmp_path, capsys):
    from vqdraw.cli import main

    path, model, _ = folder
    out = tmp_path / "enc"
    code = main(["distill", "--model", str(path), "--steps", "20", "--batch", "32", "--train-images", "300",
                 "--test-images", "50", "--no-progress", "-o", str(out), "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "code accuracy per stage" in printed and "PSNR" in printed and "distilled" in printed
    assert (out / WEIGHTS_FILE).exists() and (out / CONFIG_FILE).exists()
