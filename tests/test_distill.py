"""The distilled encoders (vqdraw.training.distill: independent and autoregressive) and `vqdraw distill`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vqdraw.core.config import ModelConfig, RefinerConfig
from vqdraw.training.distill import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AutoregressiveEncoder,
    DistilledConfig,
    DistilledEncoder,
    build_encoder,
    check_fits,
    continue_greedy,
    distill,
    finetune,
    load_distilled,
    prior_samples,
    relaxed_reconstruction_loss,
)
from vqdraw.errors import CheckpointError, InputError
from vqdraw.core.model import EncodeResult, VQDraw

TINY = ModelConfig(
    (1, 28, 28), options=8, stages=4, segment=2,
    refiner=RefinerConfig(down=(8, 8), body=(16,), up=(8, 8)),
)
SMALL_ENCODER = {"channels": (16, 32), "hidden": 128}
SMALL_AR = {"channels": (16, 32), "hidden": 64}


@pytest.fixture(scope="module")
def data():
    from vqdraw.data import load_dataset

    return load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data, train_briefly):
    """A tiny model trained for 30 Adam steps, saved in a folder: (folder, model loaded from it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = train_briefly(VQDraw(TINY), data[0], steps=30)
    path = tmp_path_factory.mktemp("model")
    model.eval().save(path)
    yield path, VQDraw.load(path).eval()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder(trained, data):
    """The independent kind distilled into the tiny model's folder, greedy codes only (~10 s)."""
    # One thread: on a shared 2-core machine OpenMP's second thread spin-waits for a busy core
    # and makes these tiny convolutions ~50x slower. Restored after this module's tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train, test = data
    path, model = trained
    result = distill(model, train.subset(range(1500)), test.subset(range(200)), steps=300, batch=64,
                     lr=2e-3, out_dir=path, progress=False, kind="independent", prior_fraction=0,
                     encoder_config=SMALL_ENCODER)
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
    assert cfg.to_dict()["data_shape"] == (1, 28, 28) and "image_shape" not in cfg.to_dict()
    assert DistilledConfig.from_dict(cfg.to_dict()) == cfg
    old = json.loads(json.dumps(cfg.to_dict()))  # as format versions 1 and 2 wrote it
    old["image_shape"] = old.pop("data_shape")
    assert DistilledConfig.from_dict(old) == cfg


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


# ---------------------------------------------------------------------- the autoregressive kind
@pytest.fixture(scope="module")
def ar_folder(trained, data, tmp_path_factory):
    """The autoregressive kind distilled (real images, prior samples, two segments) into a copy of
    the tiny model's folder (~15 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    src, model = trained
    path = tmp_path_factory.mktemp("ar")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, path / name)
    train, test = data
    result = distill(model, train.subset(range(1000)), test.subset(range(200)), steps=200, batch=48,
                     lr=3e-3, out_dir=path, progress=False, kind="autoregressive", prior_fraction=0.25,
                     prior_images=300, segments=2, encoder_config=SMALL_AR)
    yield path, model, result
    torch.set_num_threads(threads)


def test_autoregressive_distillation_beats_chance(ar_folder, data):
    path, model, result = ar_folder
    assert isinstance(result.encoder, AutoregressiveEncoder)
    assert result.steps == 200 and {h["segment_start"] for h in result.history} == {0, 2}
    chance = 1 / model.options
    assert result.mean_accuracy > chance + 0.25
    codes = model.encode(data[1].batch(range(200)))
    majority = torch.stack([torch.bincount(c, minlength=model.options).max() for c in codes.t()]) / 200
    assert result.mean_accuracy > majority.mean().item() + 0.05
    # its codes decode to images about as close as greedy's (on this tiny model even closer at times)
    assert result.distilled["mse"] < result.greedy["mse"] * 1.5


def test_teacher_forcing_matches_free_running(data):
    cfg = DistilledConfig.for_model(VQDraw(TINY), "autoregressive", **SMALL_AR)
    torch.manual_seed(1)
    enc = build_encoder(cfg).eval()
    x = data[1].batch(range(6))
    with torch.no_grad():
        codes, free = enc.free_run(x)
        forced = enc(x, codes)  # all stages in one GRU call, reading the free-running codes
        assert torch.allclose(forced, free, rtol=0, atol=1e-5)
        assert torch.equal(forced.argmax(2), codes)
        # the logits of code i depend on codes < i only: changing code j moves stages > j alone
        other = codes.clone()
        other[:, 1] = (other[:, 1] + 1) % cfg.options
        moved = enc(x, other)
    assert torch.equal(moved[:, :2], forced[:, :2])
    assert not torch.allclose(moved[:, 2:], forced[:, 2:])
    assert torch.equal(enc.predict(x), codes)


def test_reconstruction_is_decode_above_the_cpu_chunk(ar_folder, data):
    path, model, result = ar_folder
    n = model.loop.cpu_chunk + 36  # 100 images: two chunks
    x = data[1].batch(range(n))
    for enc in (result.encoder, None):
        res = model.encode(x, encoder=enc, return_reconstruction=True)
        assert res.codes.shape == (n, model.stages)
        assert torch.equal(res.reconstruction, model.decode(res.codes))
    assert torch.equal(model.encode(x, encoder=result.encoder), result.encoder.predict(x))


def test_autoregressive_save_load_round_trip(ar_folder, data):
    path, model, result = ar_folder
    meta = json.loads((path / CONFIG_FILE).read_text())
    assert meta["version"] == 3 and meta["encoder"]["kind"] == "autoregressive"
    assert meta["encoder"]["data_shape"] == [1, 28, 28] and "image_shape" not in meta["encoder"]
    enc = load_distilled(path, VQDraw.load(path))
    assert isinstance(enc, AutoregressiveEncoder) and enc.config == result.encoder.config
    x = data[1].batch(range(20))
    assert torch.equal(enc.predict(x), result.encoder.predict(x))
    with pytest.raises(CheckpointError, match="autoregressive"):
        DistilledEncoder.load(path)  # the independent class refuses the other kind


def test_a_version_1_folder_still_loads(folder, tmp_path, data):
    """Folders written before the autoregressive kind (format 1, no kind) load as independent."""
    path, model, result = folder
    shutil.copy(path / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(path / name, tmp_path / name)
    meta = json.loads((path / CONFIG_FILE).read_text())
    meta["version"] = 1
    del meta["encoder"]["kind"], meta["encoder"]["layers"], meta["encoder"]["heads"]
    meta["encoder"]["image_shape"] = meta["encoder"].pop("data_shape")  # the name versions 1 and 2 wrote
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    enc = load_distilled(tmp_path, VQDraw.load(tmp_path))
    assert isinstance(enc, DistilledEncoder) and enc.config.kind == "independent"
    x = data[1].batch(range(10))
    assert torch.equal(enc.predict(x), result.encoder.predict(x))


def test_a_version_2_folder_with_image_shape_still_loads(ar_folder, tmp_path, data):
    """Folders written before the shape was called data_shape (format 2: ``image_shape``) load unchanged."""
    path, model, result = ar_folder
    for name in (WEIGHTS_FILE, "config.json", "model.safetensors"):
        shutil.copy(path / name, tmp_path / name)
    meta = json.loads((path / CONFIG_FILE).read_text())
    meta["version"] = 2
    meta["encoder"]["image_shape"] = meta["encoder"].pop("data_shape")
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    enc = load_distilled(tmp_path, VQDraw.load(tmp_path))
    assert isinstance(enc, AutoregressiveEncoder) and enc.config == result.encoder.config
    assert enc.config.data_shape == (1, 28, 28)
    x = data[1].batch(range(10))
    assert torch.equal(enc.predict(x), result.encoder.predict(x))


def test_greedy_continuation_and_prior_samples(trained, data):
    _, model = trained
    x = data[1].batch(range(70))
    greedy = model.encode(x)
    assert torch.equal(continue_greedy(model, x, greedy[:, :0]), greedy)
    assert torch.equal(continue_greedy(model, x, greedy[:, :2]), greedy)  # greedy from greedy's canvas
    other = (greedy[:, :1] + 1) % model.options
    cont = continue_greedy(model, x, other)
    assert torch.equal(cont[:, :1], other)
    after = model.score(x, cont)
    # each continued stage picks the arg-min option on the canvas the given prefix drew
    assert torch.equal(after.losses[:, 1:].argmin(2), cont[:, 1:])
    images, codes = prior_samples(model, 5, seed=0)
    assert images.shape == (5, 1, 28, 28) and codes.shape == (5, model.stages)
    assert torch.equal(images, model.decode(codes))


def test_cli_autoregressive_segments(trained, tmp_path, capsys):
    from vqdraw.cli import main

    path, model = trained
    out = tmp_path / "enc"
    code = main(["distill", "--model", str(path), "--steps", "10", "--batch", "16", "--train-images", "100",
                 "--test-images", "20", "--prior-images", "20", "--segments", "2", "--kind", "autoregressive",
                 "--no-progress", "-o", str(out), "--device", "cpu"])
    assert code == 0
    assert "autoregressive" in capsys.readouterr().err
    assert json.loads((out / CONFIG_FILE).read_text())["training"]["segments"] == 2
    assert main(["distill", "--model", str(path), "--segments", "9", "-o", str(out), "--no-progress"]) == 2
