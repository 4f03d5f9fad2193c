"""Likelihoods beyond mse (issue 12): hand-computed 2x2 cases, training lowers the NLL, canvas
channels, encode -> decode bit for bit, config and CLI errors, binarised data."""

import math

import pytest
import torch

from vqdraw import VQDraw
from vqdraw.cli import main
from vqdraw.core.config import LIKELIHOODS, ModelConfig, RefinerConfig
from vqdraw.data.base import Dataset
from vqdraw.data.binarize import BinarizedSet, batch_epochs, binarize
from vqdraw.errors import ConfigError, InputError
from vqdraw.core.likelihood import Categorical, DiscretizedLogistic, Gaussian, make_likelihood

SMALL = RefinerConfig(down=(8,), body=(8,), up=(8,))


def tiny(likelihood, **kw):
    kw = {"data_shape": (1, 8, 8), "options": 4, "stages": 3, "segment": 3, "refiner": SMALL,
          "likelihood": likelihood, **kw}
    return VQDraw.from_preset("mnist", **kw)


def data(likelihood, n=6, levels=256):
    x = torch.randint(0, levels, (n, 1, 8, 8)).float() / (levels - 1)
    return (x > 0.5).float() if likelihood == "bernoulli" else x


def image(values):  # a (1, 1, 2, 2) image
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


def test_mse_and_bernoulli_2x2():
    mse = make_likelihood(ModelConfig(data_shape=(1, 2, 2), mean=(0.0,), std=(1.0,), refiner=RefinerConfig(
        down=(), up=())))
    proposal = image([0, 1, 1, 0]).unsqueeze(1)  # (B=1, K=1, C, H, W)
    assert mse.option_losses(proposal, image([0, 0, 1, 1])).item() == pytest.approx(0.5)
    bern = make_likelihood(ModelConfig(data_shape=(1, 2, 2), likelihood="bernoulli",
                                       refiner=RefinerConfig(down=(), up=())))
    loss = bern.option_losses(image([0, 2, 0, -1]).unsqueeze(1), image([1, 1, 0, 0])).item()
    sp = lambda t: math.log1p(math.exp(t))  # noqa: E731  -log sigmoid(-t)
    assert loss == pytest.approx((sp(-0) + sp(-2) + sp(0) + sp(-1)) / 4, rel=1e-6)
    x = image([1, 1, 0, 0])
    assert bern.discrete_log_prob(torch.zeros(1, 1, 2, 2), x).item() == pytest.approx(4 * math.log(0.5))


def test_mse_discretised_gaussian_2x2():
    mse = make_likelihood(ModelConfig(data_shape=(1, 2, 2), mean=(0.0,), std=(1.0,),
                                      refiner=RefinerConfig(down=(), up=())))
    canvas = image([0.0, 0.5, 1.0, 0.5])  # the means
    x = image([0, 128 / 255, 1, 100 / 255])
    s, h = 0.1, 0.5 / 255
    cdf = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))  # noqa: E731
    expect = (math.log(cdf(h / s)) + math.log(cdf((128 / 255 + h - 0.5) / s) - cdf((128 / 255 - h - 0.5) / s))
              + math.log(1 - cdf((1 - h - 1) / s)) + math.log(cdf((100 / 255 + h - 0.5) / s)
                                                                - cdf((100 / 255 - h - 0.5) / s)))
    assert mse.discrete_log_prob(canvas, x, sigma=s).item() == pytest.approx(expect, rel=1e-6)
    with pytest.raises(InputError):
        mse.discrete_log_prob(canvas, x)  # no fixed std: no likelihood
    with pytest.raises(InputError):
        mse.discrete_log_prob(canvas, x + 0.001, sigma=s)  # not 8-bit data


def test_gaussian_2x2():
    g = Gaussian((0.0,), (1.0,), rank=2)
    canvas = torch.tensor([0.0, 0.5, 1.0, 0.0, 0.0, -1.0, 2.0, 0.0]).view(1, 2, 2, 2)  # loc, raw log-std
    x = image([0.0, 0.5, 0.2, 1.0])
    floor = math.log(1 / 255)
    nll = 0.0
    for loc, raw, xi in zip([0.0, 0.5, 1.0, 0.0], [0.0, -1.0, 2.0, 0.0], [0.0, 0.5, 0.2, 1.0]):
        log_s = floor + math.log1p(math.exp(raw - floor))
        nll += 0.5 * ((xi - loc) / math.exp(log_s)) ** 2 + log_s + 0.5 * math.log(2 * math.pi)
    got = g.option_losses(canvas.unsqueeze(1), g.target(x)).item()
    assert got == pytest.approx(nll / 4, rel=1e-5)
    assert g.canvas_channels(3) == 6


def test_discretized_logistic_2x2():
    d = DiscretizedLogistic((0.0,), (1.0,), rank=2)
    canvas = torch.tensor([0.0, 0.5, 0.9, 0.3, 0.0, -1.0, -2.0, -3.0]).view(1, 2, 2, 2)
    x = image([0, 128 / 255, 1, 77 / 255])
    floor, h = math.log(1 / 16 / 255), 0.5 / 255
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    logp = 0.0
    for i, (loc, raw, xi) in enumerate(zip([0.0, 0.5, 0.9, 0.3], [0.0, -1.0, -2.0, -3.0], x.flatten().tolist())):
        s = math.exp(floor + math.log1p(math.exp(raw - floor)))
        if i == 0:
            p = sig((xi + h - loc) / s)
        elif i == 2:
            p = 1 - sig((xi - h - loc) / s)
        else:
            p = sig((xi + h - loc) / s) - sig((xi - h - loc) / s)
        logp += math.log(p)
    assert d.option_losses(canvas.unsqueeze(1), d.target(x)).item() == pytest.approx(-logp / 4, rel=1e-4)
    assert d.discrete_log_prob(canvas, x).item() == pytest.approx(logp, rel=1e-6)


def test_categorical_2x2():
    c = Categorical(4, rank=2)
    assert c.embed == 4 and c.canvas_channels(1) == 4
    with torch.no_grad():
        c.proj.copy_(torch.eye(4))  # logits = the canvas features
    feats = torch.tensor([[1.0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 3], [1, 1, 1, 1]])  # per element
    canvas = feats.t().reshape(1, 4, 2, 2)
    x = image([0, 1 / 3, 2 / 3, 1])  # classes 0, 1, 2, 3
    ce = 0.0
    for f, k in zip(feats.tolist(), [0, 1, 2, 3]):
        ce += math.log(sum(math.exp(v) for v in f)) - f[k]
    assert c.option_losses(canvas.unsqueeze(1), c.target(x)).item() == pytest.approx(ce / 4, rel=1e-6)
    assert c.discrete_log_prob(canvas, x).item() == pytest.approx(-ce, rel=1e-9)
    assert torch.equal(c.to_data(canvas), image([0, 1 / 3, 1, 0]))  # the arg-max class (ties: the first)


@pytest.mark.parametrize("rank", [1, 2])
def test_categorical_loss_is_cross_entropy_of_its_logits(rank):
    import torch.nn.functional as F

    torch.manual_seed(0)
    c = Categorical(256, rank=rank)
    canvas = torch.randn(3, 2 * 16, *([5] * rank), dtype=torch.float64)  # C = 2 channels
    x = torch.randint(0, 256, (3, 2, *([5] * rank))).double() / 255
    expected = F.cross_entropy(c.logits(canvas), c.target(x).long(), reduction="none").detach()
    assert -c.discrete_log_prob(canvas, x) == pytest.approx(expected.flatten(1).sum(1), rel=1e-9)
    losses = c.option_losses(canvas.float().unsqueeze(1), c.target(x.float())).detach()
    assert losses.flatten() == pytest.approx(expected.flatten(1).mean(1).float(), rel=1e-5)
    # gradients (w.r.t. the proposals and the class map) equal autograd's through cross_entropy
    p = canvas.clone().unsqueeze(1).repeat(1, 3, *([1] * (rank + 1))).requires_grad_()  # K = 3 options
    weights = torch.rand(3, 3, dtype=torch.float64)
    (c.option_losses(p, c.target(x)) * weights).sum().backward()
    got_p, got_w = p.grad.clone(), c.proj.grad.clone()
    p.grad = None
    c.proj.grad = None
    ref = F.cross_entropy(c.logits(p.flatten(0, 1)), c.target(x).long().repeat_interleave(3, 0), reduction="none")
    (ref.flatten(1).mean(1).view(3, 3) * weights).sum().backward()
    torch.testing.assert_close(got_p, p.grad)
    torch.testing.assert_close(got_w, c.proj.grad.to(got_w.dtype))


def test_categorical_chunks_logits(monkeypatch):
    """The per-option loss is the same whether its logits are formed all at once or one option
    at a time, and gradients flow (recomputed chunks)."""
    import vqdraw.core.likelihood as lik

    c = Categorical(256, rank=2)
    p = torch.randn(2, 5, 16, 4, 4, requires_grad=True)
    t = torch.randint(0, 256, (2, 1, 4, 4)).float()
    whole = c.option_losses(p, t)
    monkeypatch.setattr(lik, "LOGITS_BUDGET", 1)
    chunked = c.option_losses(p, t)
    torch.testing.assert_close(chunked, whole)
    chunked.sum().backward()
    assert p.grad.abs().sum() > 0 and c.proj.grad.abs().sum() > 0


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_training_lowers_nll(likelihood):
    model = tiny(likelihood)
    x = data(likelihood, n=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = model.loss(x)["final"].item()
    for _ in range(12):
        opt.zero_grad()
        model.loss(x)["loss"].backward()
        opt.step()
    with torch.no_grad():
        after = model.loss(x)["final"].item()
    assert after < before


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_encode_decode_bit_for_bit(likelihood, tmp_path):
    model = tiny(likelihood).eval()
    c = model.config.data_shape[0]
    assert model.refiner.first_bias.shape[1] == model.likelihood.canvas_channels(c)
    x = data(likelihood)
    res = model.encode(x, return_reconstruction=True)
    assert res.reconstruction.shape == x.shape
    assert torch.equal(model.decode(res.codes), res.reconstruction)
    beam = model.encode(x, beam=3, return_reconstruction=True)
    assert torch.equal(model.decode(beam.codes), beam.reconstruction)
    loaded = VQDraw.load(model.save(tmp_path / "m"))
    assert torch.equal(loaded.decode(res.codes), res.reconstruction)


def test_config_keeps_old_files_and_rejects_nonsense():
    assert "categories" not in ModelConfig().to_dict() and "likelihood" not in ModelConfig().to_dict()
    cfg = ModelConfig(likelihood="categorical", categories=27)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        ModelConfig(likelihood="nonsense")
    with pytest.raises(ConfigError):
        ModelConfig(likelihood="categorical", categories=1)


def test_cli_unknown_likelihood_is_one_line(tmp_path, capsys):
    rc = main(["train", "--likelihood", "nonsense", "--steps", "1", "--run", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "nonsense" in err


def test_binarize_threshold_and_stochastic_are_pure():
    x = torch.rand(4, 1, 5, 5)
    index, epoch = torch.tensor([3, 1, 4, 1]), torch.tensor([0, 0, 1, 2])
    assert torch.equal(binarize(x, "threshold", seed=0, index=index, epoch=epoch), (x >= 0.5).float())
    a = binarize(x, "stochastic", seed=5, index=index, epoch=epoch)
    assert torch.equal(a, binarize(x.clone(), "stochastic", seed=5, index=index, epoch=epoch))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, binarize(x, "stochastic", seed=6, index=index, epoch=epoch))
    # items 1 in epochs 0 and 2 get different draws; P(1) = x
    assert not torch.equal(a[1], binarize(x, "stochastic", seed=5, index=index, epoch=torch.zeros(4).long())[3])
    grey = torch.full((2000, 1, 2, 2), 0.3)
    mean = binarize(grey, "stochastic", seed=0, index=torch.arange(2000), epoch=torch.zeros(2000).long()).mean()
    assert abs(mean.item() - 0.3) < 0.03
    assert batch_epochs(3, 4, 10).tolist() == [1, 1, 1, 1] and batch_epochs(2, 4, 10).tolist() == [0, 0, 1, 1]


def test_binarized_set_matches_batch_binarisation():
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (7, 4, 4, 1), dtype=np.uint8)
    base = Dataset(images, np.arange(7))
    for how in ("threshold", "stochastic"):
        fixed = BinarizedSet(base, how, seed=2).batch(range(7))
        drawn = binarize(base.batch(range(7)), how, seed=2, index=torch.arange(7), epoch=torch.zeros(7).long())
        assert (fixed != drawn).float().mean() < 0.02  # float32 vs float64 comparisons may differ at ties
        assert set(fixed.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ConfigError):
        BinarizedSet(base, "sometimes")
