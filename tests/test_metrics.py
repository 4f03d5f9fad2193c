"""FID / KID / precision-recall definitions, the feature-net cache, and `vqdraw eval-samples`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from vqdraw.evaluate.metrics import features as feat
from vqdraw.evaluate.metrics.features import FeatureRecipe, features_dir, load_feature_net
from vqdraw.evaluate.metrics.fid import fid, frechet_distance, kid, mmd2_unbiased, precision_recall

RECIPE = FeatureRecipe(steps=150, batch=32, width=8, feature_dim=32, lr=3e-3)


pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("vqdraw-data")


@pytest.fixture(scope="module")
def net(data_dir):
    net, meta = load_feature_net("mnist-embedded", data_dir, recipe=RECIPE)
    return net


@pytest.fixture(scope="module")
def real():
    from vqdraw.data import load_dataset

    return load_dataset("mnist-embedded", "test").batch(range(200))


# ---------------------------------------------------------------- definitions
def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    # Diagonal covariances: |dmu|^2 + sum (sqrt v1 - sqrt v2)^2.
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_kid_of_gaussian_samples():
    rng = np.random.default_rng(1)
    a, a2 = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    b = rng.normal(size=(400, 8)) + 1.0
    assert fid(a, a) == pytest.approx(0.0, abs=1e-8)
    assert fid(a, a2) < 0.5 < 7.0 < fid(a, b)  # |dmu|^2 = 8
    same, _ = kid(a, a2, subsets=20)
    shifted, _ = kid(a, b, subsets=20)
    assert abs(same) < 0.05 < shifted
    # Unbiased MMD^2 of two independent samples of one distribution is centred on 0.
    vals = [mmd2_unbiased(rng.normal(size=(50, 4)), rng.normal(size=(50, 4))) for _ in range(40)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))


def test_kid_identical_sets_is_near_zero_and_std_reported():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 8))
    mean, std = kid(a, a, subsets=30)
    shifted, _ = kid(a, a + 0.5, subsets=30)
    # Subsets of one set share points, so the unbiased estimate sits slightly below 0.
    assert abs(mean) < 0.1 * shifted and std > 0


def test_precision_recall_identical_and_disjoint_sets():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(100, 5))
    assert precision_recall(a, a) == (1.0, 1.0)
    far = a + 100.0
    assert precision_recall(a, far) == (0.0, 0.0)
    # A generator covering only half the modes: precision stays high, recall drops.
    modes = np.concatenate([rng.normal(size=(100, 2)) * 0.1, rng.normal(size=(100, 2)) * 0.1 + 10])
    half = rng.normal(size=(200, 2)) * 0.1
    p, r = precision_recall(modes, half)
    assert p > 0.9 and 0.3 < r < 0.7


def test_bad_feature_shapes_raise():
    with pytest.raises(ValueError):
        fid(np.zeros(5), np.zeros(5))


# ---------------------------------------------------------------- in the feature-net space
def _blur(x: torch.Tensor, passes: int) -> torch.Tensor:
    k = torch.ones(1, 1, 3, 3) / 9
    for _ in range(passes):
        x = F.conv2d(x, k, padding=1)
    return x


def test_fid_kid_zero_on_identical_sets_and_grow_with_perturbation(net, real):
    g = torch.Generator().manual_seed(0)
    f_real = net.features(real)
    assert f_real.shape == (200, RECIPE.feature_dim)
    scores = {}
    variants = {
        "same": real,
        "noise 0.2": (real + 0.2 * torch.randn(real.shape, generator=g)).clamp(0, 1),
        "noise 0.5": (real + 0.5 * torch.randn(real.shape, generator=g)).clamp(0, 1),
        "blur 1": _blur(real, 1),
        "blur 3": _blur(real, 3),
    }
    for name, images in variants.items():
        f = net.features(images)
        scores[name] = (fid(f_real, f), kid(f_real, f, subsets=20)[0])
    assert scores["same"][0] == pytest.approx(0.0, abs=1e-6)
    for weak, strong in (("noise 0.2", "noise 0.5"), ("blur 1", "blur 3")):
        assert 0 < scores[weak][0] < scores[strong][0], scores
        assert scores[weak][1] < scores[strong][1], scores
        # KID of a set with itself is ~0 (slightly negative: its subsets share points).
        assert abs(scores["same"][1]) < 0.2 * scores[strong][1], scores


def test_feature_net_is_cached_and_reused(net, data_dir, monkeypatch):
    d = features_dir("mnist-embedded", data_dir)
    meta = json.loads((d / feat.META_FILE).read_text())
    assert (d / feat.WEIGHTS_FILE).exists()
    assert meta["dataset"] == "mnist-embedded" and 0.1 < meta["test_accuracy"] <= 1.0
    assert meta["recipe"]["steps"] == RECIPE.steps
    assert (net.feature_std != 1).all() and (net.feature_mean != 0).any()  # standardisation is set

    def no_training(*a, **k):
        raise AssertionError("the cached feature net should have been reused")

    monkeypatch.setattr(feat, "train_feature_net", no_training)
    again, meta2 = load_feature_net("mnist-embedded", data_dir, recipe=RECIPE)
    assert meta2["test_accuracy"] == meta["test_accuracy"]
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(again.features(x), net.features(x))
    # A different recipe is not served from the cache.
    with pytest.raises(AssertionError, match="reused"):
        load_feature_net("mnist-embedded", data_dir, recipe=FeatureRecipe(steps=151, width=8, feature_dim=32))


def test_classifier_score_bounds(net, real):
    from vqdraw.evaluate.metrics.samples import classifier_summary

    s = classifier_summary(net, real)
    assert 1.0 <= s["score"] <= 10.0 and sum(s["classes"]) == len(real)
    blank = classifier_summary(net, torch.zeros(20, 1, 28, 28))
    assert blank["score"] == pytest.approx(1.0)  # identical images: one predictive distribution


def test_feature_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VQDRAW_DATA", str(tmp_path))
    assert features_dir("folder:/x/y") == tmp_path / "features" / "folder_x_y"


def test_eval_samples_cli(net, data_dir, tmp_path, monkeypatch):
    from vqdraw import VQDraw
    from vqdraw.cli import main

    # Serve the module's small cached feature net instead of training one with the CLI's recipe.
    original = feat.load_feature_net
    monkeypatch.setattr(feat, "load_feature_net",
                        lambda dataset, data_dir=None, **kw: original(dataset, data_dir, **{**kw, "recipe": RECIPE}))
    monkeypatch.setattr(feat, "train_feature_net", lambda *a, **k: pytest.fail("should use the cache"))
    torch.manual_seed(0)
    model_dir = VQDraw.from_preset("mnist", options=8, stages=4, segment=2).save(tmp_path / "model")
    out = tmp_path / "out"
    rc = main(["eval-samples", "--model", str(model_dir), "--dataset", "mnist-embedded", "--count", "24",
               "--kid-subsets", "3", "--data-dir", str(data_dir), "-o", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "eval-samples.json").read_text())
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "count", "feature_net_test_accuracy"):
        assert key in res
    assert res["count"] == 24 and res["bits_per_image"] == 12
    assert res["feature_net_test_accuracy"] == res["feature_net"]["test_accuracy"] > 0.1
    assert res["reconstruction"]["psnr"] > 0 and res["real_vs_real"]["fid"] >= 0
    assert 1 <= res["classifier"]["score"] <= 10 and sum(res["classifier"]["classes"]) == 24
    assert (out / "eval-samples.png").stat().st_size > 0
    # with the learned prior: its samples in the same table, same feature net
    from vqdraw.prior import PriorConfig, train_prior

    model = VQDraw.load(model_dir)
    prior, _ = train_prior(model.encode(torch.rand(64, 1, 28, 28)), 8, config=PriorConfig(8, 4, 4, 8), steps=5,
                           model_fingerprint=model.fingerprint())
    prior.save(model_dir)
    rc = main(["eval-samples", "--model", str(model_dir), "--dataset", "mnist-embedded", "--count", "24",
               "--kid-subsets", "3", "--data-dir", str(data_dir), "-o", str(out), "--no-progress", "--prior",
               "--temperature", "0.8"])
    assert rc == 0
    res = json.loads((out / "eval-samples.json").read_text())
    q = res["prior_samples"]
    assert q["temperature"] == 0.8 and q["fid"] >= 0 and sum(q["classifier"]["classes"]) == 24


def test_eval_samples_cli_errors(tmp_path, capsys):
    from vqdraw.cli import main

    assert main(["eval-samples"]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["eval-samples", str(tmp_path / "missing")]) == 2


def test_distortion_measures_by_hand():
    from vqdraw.evaluate.metrics import mse, psnr, psnr_from_mse

    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    y = x.clone()
    y[0, 0, 0, 0] = 0.2  # mse 0.04 / 4 = 0.01 -> 20 dB
    y[1] = math.sqrt(0.001)
    assert mse(x, y).tolist() == pytest.approx([0.01, 0.001])
    assert psnr(x, y).tolist() == pytest.approx([20.0, 30.0])
    assert psnr(x, y).mean().item() == pytest.approx(25.0)  # CompressAI's psnr-rgb of the pair
    assert psnr_from_mse(mse(x, y).mean().item()) == pytest.approx(10 * math.log10(1 / 0.0055))
    assert psnr(x, x).isinf().all() and psnr_from_mse(0.0) == math.inf
    assert psnr(x * 255, y * 255, peak=255).tolist() == pytest.approx([20.0, 30.0])
