"""The contrastive term (TrainConfig.contrastive; the paper's open question, docs/representation.md):
finite, logged, lowered by a short real run, off by default, and the codes still decode to the
encoder's reconstructions."""

from __future__ import annotations

import pytest
import torch

from vqdraw import TrainConfig, VQDraw
from vqdraw.core.losses import choice_agreement_nce, shifted_view
from vqdraw.data import load_dataset
from vqdraw.training.train import train_step


def test_the_nce_prefers_matching_views():
    torch.manual_seed(0)
    a = torch.randn(8, 2, 16)
    assert choice_agreement_nce(a, a, 0.5) < choice_agreement_nce(a, a[torch.randperm(8)], 0.5)
    assert torch.isfinite(choice_agreement_nce(a, torch.randn(8, 2, 16), 0.5))


def test_shifted_view_translates_with_zero_fill():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(3, 1, 1, 1)
    g = torch.Generator().manual_seed(1)
    y = shifted_view(x, 1, g)
    assert y.shape == x.shape and torch.equal(shifted_view(x, 0), x)
    for item in y:  # each is the original moved by at most one row and one column
        assert any(torch.equal(item, _move(x[0], dy, dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def _move(img, dy, dx):
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_off_by_default_and_a_short_run_lowers_it():
    assert TrainConfig().loss_options()["contrastive"] is None
    torch.manual_seed(0)
    model = VQDraw.from_preset("mnist", options=8, stages=3, segment=3)
    cfg = TrainConfig(batch=16, lr=3e-3, contrastive=1.0, contrastive_stages=2)
    data = load_dataset("mnist-embedded", "train")
    gen = torch.Generator().manual_seed(0)
    fixed = data.batch(torch.randint(len(data), (16,), generator=gen))
    with torch.no_grad():
        torch.manual_seed(5)
        before = model.loss(fixed, **cfg.loss_options())["contrastive"].item()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    logged = []
    for _ in range(40):
        x = data.batch(torch.randint(len(data), (16,), generator=gen))
        logged.append(train_step(model, opt, x, cfg))
    assert all("contrastive" in t and torch.isfinite(torch.tensor(t["contrastive"])) for t in logged)
    with torch.no_grad():
        torch.manual_seed(5)
        after = model.loss(fixed, **cfg.loss_options())["contrastive"].item()
    assert after < 0.9 * before, (before, after)
    model.eval()
    res = model.encode(fixed, return_reconstruction=True)
    assert torch.allclose(res.reconstruction, model.decode(res.codes), atol=1e-5)
