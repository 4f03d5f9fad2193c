"""Hostile declared sizes (issue 35): a prior.json or distilled.json is checked against a memory
bound, and against the model it belongs to, before anything is built; each refusal is one line,
within seconds, allocating nothing of the declared size."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import vqdraw.prior as prior_module
import vqdraw.training.distill as distill_module
from vqdraw import RefinerConfig, VQDraw
from vqdraw.cli import main
from vqdraw.compress.bitstream import write_vqd
from vqdraw.errors import CheckpointError, ConfigError, InputError
from vqdraw.prior import Prior, PriorConfig, PriorNet, load_prior
from vqdraw.training.distill import DistilledConfig, build_encoder, load_distilled

pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model (K=16, N=3), a prior and a distilled encoder saved beside it, and a v3 file."""
    root = tmp_path_factory.mktemp("hostile_sizes")
    torch.manual_seed(0)
    small = RefinerConfig(down=(8, 8), body=(16,), up=(8, 8))
    model = VQDraw.from_preset("mnist", stages=3, options=16, refiner=small).eval()
    model.save(root / "model")
    prior = Prior(PriorNet(PriorConfig(16, 3, embed=8, hidden=16)), model.fingerprint())
    prior.save(root / "model")
    encoder = build_encoder(DistilledConfig.for_model(model, channels=(8,), hidden=16))
    encoder.save(root / "model", {"model_fingerprint": model.fingerprint().hex()})
    codes = np.random.default_rng(0).integers(0, 16, (2, 3))
    (root / "coded.vqd").write_bytes(write_vqd(codes, 16, (1, 28, 28), model.fingerprint(), coder=prior))
    return root, model


@pytest.fixture
def never_built(monkeypatch):
    """Fail the test if a prior or encoder of more than a million parameters' worth of K*N or
    hidden is built for real (the meta-device count is allowed)."""
    def guard(real):
        def build(config):
            big = getattr(config, "options", 0) * getattr(config, "stages", 0) > 10**6 \
                or getattr(config, "hidden", 0) > 10**5 or getattr(config, "layers", 1) > 100
            if big and torch.get_default_device().type != "meta":
                raise AssertionError(f"built before the size check: {config}")
            return real(config)
        return build

    monkeypatch.setattr(prior_module, "PriorNet", guard(prior_module.PriorNet))
    monkeypatch.setattr(distill_module, "DistilledEncoder", guard(distill_module.DistilledEncoder))
    monkeypatch.setattr(distill_module, "AutoregressiveEncoder", guard(distill_module.AutoregressiveEncoder))


def edited(src, dst, name: str, key: str, **fields):
    """A copy of the model folder ``src`` with ``fields`` set in ``name``'s ``key`` object."""
    import shutil

    shutil.copytree(src, dst)
    meta = json.loads((dst / name).read_text())
    meta[key].update(fields)
    (dst / name).write_text(json.dumps(meta))
    return dst


PRIORS = {
    "65535": (dict(options=65535, stages=65535), "parameters"),
    "30000": (dict(options=30000, stages=30000), "parameters"),
    "wide output": (dict(options=65535, stages=1100, hidden=1024), "parameters"),
}


@pytest.mark.parametrize("name", list(PRIORS))
def test_a_hostile_prior_json_is_refused_before_it_is_built(folder, tmp_path, never_built, name):
    root, model = folder
    fields, match = PRIORS[name]
    path = edited(root / "model", tmp_path / "m", "prior.json", "prior", **fields)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=match) as info:
        load_prior(path)  # no model: the memory bound alone
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="the model has K=16, N=3"):
        load_prior(path, model)  # with the model: its K and N, checked first
    assert time.perf_counter() - start < 5.0


def test_cli_decode_beside_a_hostile_prior_is_one_line(folder, tmp_path, never_built, capsys):
    root, _ = folder
    path = edited(root / "model", tmp_path / "m", "prior.json", "prior", options=65535, stages=65535)
    start = time.perf_counter()
    rc = main(["decode", "--model", str(path), str(root / "coded.vqd"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "K=65535" in err, err
    assert time.perf_counter() - start < 5.0


def test_train_prior_sizes_its_config_first(never_built):
    codes = np.zeros((4, 2), dtype=np.int64)
    with pytest.raises(ConfigError, match="parameters"):
        prior_module.train_prior(codes, 65535, config=PriorConfig(65535, 2, hidden=1024, embed=1024), steps=1)


DISTILLED = {
    "layers 1e4 (a float)": (dict(kind="autoregressive", layers=1e4), "whole number"),
    "layers 10000": (dict(kind="autoregressive", layers=10000, hidden=128), "parameters"),
    "hidden 1e6": (dict(hidden=1000000), "parameters"),
    "hidden 1e6, autoregressive": (dict(kind="autoregressive", hidden=1000000, heads=0), "parameters"),
    "a thousand convolutions": (dict(channels=[8] * 1000), "channels"),
    "pool 1e9": (dict(pool=10**9), "pool"),
    "mean of 3 entries": (dict(mean=[0.1, 0.2, 0.3]), "mean needs 1"),
    "std 0": (dict(std=[0]), "std must be positive"),
    "std -1": (dict(std=[-1]), "std must be positive"),
    "std NaN": (dict(std=["nan"]), "std needs 1 finite"),
}


@pytest.mark.parametrize("name", list(DISTILLED))
def test_a_hostile_distilled_json_is_refused_before_it_is_built(folder, tmp_path, never_built, name):
    root, model = folder
    fields, match = DISTILLED[name]
    path = edited(root / "model", tmp_path / "m", "distilled.json", "encoder", **fields)
    start = time.perf_counter()
    for with_model in (None, model):
        with pytest.raises(CheckpointError, match=match) as info:
            load_distilled(path, with_model)
        assert "\n" not in str(info.value) and "distilled.json" in str(info.value)
    assert time.perf_counter() - start < 5.0


def test_a_distilled_encoder_for_other_codes_is_refused_before_it_is_built(folder, tmp_path, never_built):
    root, model = folder
    path = edited(root / "model", tmp_path / "m", "distilled.json", "encoder", stages=3000, options=65535)
    with pytest.raises(InputError, match="the model has N=3, K=16"):
        load_distilled(path, model)


def test_counts_on_the_meta_device_equal_real_builds():
    for config in (PriorConfig(16, 5, 8, 16), PriorConfig(300, 2)):
        from vqdraw.core.sizing import count_parameters

        assert count_parameters(lambda: PriorNet(config)) == sum(p.numel() for p in PriorNet(config).parameters())
    for kw in (dict(kind="autoregressive", hidden=32, layers=5), dict(kind="autoregressive", hidden=32, heads=0),
               dict(hidden=32)):
        config = DistilledConfig((1, 28, 28), 5, 16, (0.1,), (0.3,), channels=(8, 16), **kw)
        real = sum(p.numel() for p in build_encoder(config).parameters())
        assert distill_module.encoder_parameters(config) == real
