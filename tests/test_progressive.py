"""The progressive refiner: early stages propose coarse deltas (upsampled), later ones full ones."""

import dataclasses

import pytest
import torch

from vqdraw import TrainConfig, VQDraw
from vqdraw.core.config import ModelConfig, RefinerConfig
from vqdraw.errors import ConfigError
from vqdraw.runs import fingerprint
from vqdraw.training.train import fit

pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")

REFINER = RefinerConfig(down=(8, 8), body=(8,), up=(8, 8))


def model(progressive=0, seed=0, stages=5, segment=5):
    torch.manual_seed(seed)
    cfg = ModelConfig((1, 28, 28), options=4, stages=stages, segment=segment,
                      refiner=dataclasses.replace(REFINER, progressive=progressive))
    return VQDraw(cfg)


def test_off_changes_nothing():
    plain, off = model(0), model(0)
    assert not any("coarse" in k for k in off.state_dict())
    assert "progressive" not in off.config.to_dict()["refiner"]  # config.json as before
    assert fingerprint(plain.config.to_dict(), plain.state_dict()) == \
        fingerprint(off.config.to_dict(), off.state_dict())


def test_progressive_adds_only_coarse_heads_and_keeps_the_others():
    plain, prog = model(0).state_dict(), model(2).state_dict()
    extra = set(prog) - set(plain)
    assert set(plain) <= set(prog)
    assert extra and all(".coarse_heads." in k for k in extra)
    assert {k.split(".coarse_heads.")[1].split(".")[0] for k in extra} == {"0", "1"}  # two levels


def test_early_deltas_are_coarse_and_later_ones_full():
    m = model(2).eval()
    canvas = torch.rand(3, 1, 28, 28)
    refiner = m.refiner
    assert [refiner.level(s) for s in range(5)] == [0, 0, 1, 1, 2]
    with torch.no_grad():
        coarse = refiner.deltas(canvas, 1)  # 7x7 upsampled bilinearly to 28x28: smooth
        full = refiner.deltas(canvas, 4)
    assert coarse.shape == full.shape == (3, 4, 1, 28, 28)
    # a bilinear upsampling by 4 of a 7x7 map: second differences along a row are zero away from
    # the sample points' neighbourhoods; measure smoothness against the full-resolution deltas
    rough = lambda d: (d[..., 2:] - 2 * d[..., 1:-1] + d[..., :-2]).abs().mean()  # noqa: E731
    assert rough(coarse) < 0.5 * rough(full)


def test_progressive_trains_and_round_trips_bit_for_bit(tmp_path):
    from vqdraw.data import load_dataset

    train_set, test_set = load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")
    m = model(1, stages=4, segment=2)
    cfg = TrainConfig(steps=2, batch=4, eval_every=2, save_every=2, log_every=1, eval_size=8)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    result = fit(m, train_set, test_set, cfg, tmp_path / "run", progress=False, pictures=False)
    assert result.step == 2
    changed = [k for k, v in m.state_dict().items() if not torch.equal(v, before[k])]
    assert any(".coarse_heads." in k for k in changed)  # the coarse heads learn
    m.save(tmp_path / "model")
    back = VQDraw.load(tmp_path / "model")
    assert back.config.refiner.progressive == 1
    x = test_set.batch(range(6))
    a, b = m.eval().encode(x, return_reconstruction=True), back.eval().encode(x, return_reconstruction=True)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.reconstruction, b.reconstruction)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in m.state_dict().items())


def test_progressive_needs_upsampling_layers():
    with pytest.raises(ConfigError, match="progressive"):
        RefinerConfig(down=(), up=(), progressive=2)
    with pytest.raises(ConfigError, match="progressive"):
        RefinerConfig(progressive=-1)
