"""The paper's alternatives (§3.3, §3.4) and the author's switches: each does what it says, and
off (the default) changes nothing (tests/test_speed_equivalence.py's golden codes)."""

from __future__ import annotations

import pytest
import torch

from vqdraw import VQDraw
from vqdraw.core.reference import reference_proposals, reference_run
from vqdraw.core.stageloop import Exploration, run


def small(**kw):
    torch.manual_seed(0)
    cfg = dict(options=8, stages=3, segment=1)
    cfg.update(kw)
    return VQDraw.from_preset("mnist", **cfg)


@pytest.fixture(scope="module")
def digits():
    g = torch.Generator().manual_seed(0)
    return torch.rand(48, 1, 28, 28, generator=g).pow(3)


def _grad_norm(model, segment: int) -> float:
    grads = [p.grad for p in model.refiner.segments[segment].parameters() if p.grad is not None]
    return float(sum(g.abs().sum() for g in grads)) if grads else 0.0


def test_grad_decay_one_stops_gradients_between_stages(digits):
    for decay, flows in [(0.0, True), (0.5, True), (1.0, False)]:
        model = small()
        # alpha 0 and the final stage only: the first segment reaches the loss only through the canvas
        model.loss(digits, alpha=0.0, final_only=True, grad_decay=decay)["loss"].backward()
        assert (_grad_norm(model, 0) > 0) == flows, decay
        assert _grad_norm(model, 2) > 0


def test_grad_decay_keeps_the_values(digits):
    model = small()
    plain = model.loss(digits)
    decayed = model.loss(digits, grad_decay=0.7)
    assert torch.equal(plain["codes"], decayed["codes"])
    torch.testing.assert_close(plain["loss"], decayed["loss"], rtol=1e-5, atol=1e-6)


def test_epsilon_one_makes_training_choices_uniform(digits):
    model = small()
    greedy = model.encode(digits)
    counts = torch.bincount(greedy.flatten(), minlength=8)
    assert counts.max() > 0.4 * greedy.numel()  # an untrained model's arg-mins crowd on few options
    torch.manual_seed(1)
    explored = model.loss(digits, epsilon=1.0)
    counts = torch.bincount(explored["codes"].flatten(), minlength=8)
    assert counts.min() >= 6 and counts.max() <= 36  # 144 uniform draws over 8: 18 each expected
    assert (explored["codes"] != greedy).float().mean() > 0.5


def test_epsilon_loss_terms_use_the_best_option(digits):
    """The canvas follows the random choice, but the chosen term is each stage's best loss."""
    model = small()
    torch.manual_seed(2)
    terms = model.loss(digits, alpha=0.0, epsilon=0.5)
    torch.manual_seed(2)
    trace = run(model.refiner, model.likelihood, range(3), target=model.target(digits),
                explore=Exploration(epsilon=0.5))
    assert torch.equal(trace.codes, terms["codes"])
    torch.testing.assert_close(terms["loss"], trace.losses.min(2).values.mean())
    taken = trace.losses.gather(2, trace.codes.unsqueeze(2)).mean()
    assert terms["loss"] < taken  # some taken options were not the best


def test_final_only_and_final_coeff(digits):
    model = small()
    base = model.loss(digits, alpha=0.01)
    only = model.loss(digits, alpha=0.0, final_only=True)
    torch.testing.assert_close(only["loss"], only["final"])
    torch.testing.assert_close(model.loss(digits, alpha=0.01, final_only=True)["loss"],
                               base["final"] + 0.01 * base["all"])
    torch.testing.assert_close(model.loss(digits, alpha=0.01, final_coeff=2.0)["loss"],
                               base["chosen"] + 0.01 * base["all"] + 2.0 * base["final"])
    assert not torch.isclose(only["loss"], base["chosen"])


def test_no_residual_proposals_do_not_add_the_canvas(digits):
    model = small(residual=False).eval()
    canvas = model.target(digits[:4])
    with torch.no_grad():
        for stage in (0, 1):
            p = model.propose(canvas, stage)
            assert torch.equal(p, model.refiner.deltas(canvas, stage))
            torch.testing.assert_close(p, reference_proposals(model, canvas, stage), rtol=1e-4, atol=1e-5)
        # adding a constant to the canvas does not shift the proposals by it
        shifted = model.propose(canvas + 5.0, 1)
        assert (shifted - p).abs().mean() < 1.0
    res = model.encode(digits, return_reconstruction=True)
    codes, canvas, losses = reference_run(model, model.target(digits))
    assert torch.equal(res.codes, codes)
    torch.testing.assert_close(res.losses, losses, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.decode(res.codes), res.reconstruction)
    model.train()
    model.loss(digits)["loss"].backward()
    assert _grad_norm(model, 0) > 0


def test_no_stage_conditioning_shares_masks_and_heads(digits):
    model = small(stages=4, segment=4, stage_conditioning=False).eval()
    seg = model.refiner.segments[0]
    assert seg.units[0].mask.masks.shape[0] == 1
    canvas = model.target(digits[:4])
    with torch.no_grad():
        assert torch.equal(model.propose(canvas, 1), model.propose(canvas, 3))
        torch.testing.assert_close(model.propose(canvas, 2), reference_proposals(model, canvas, 2))
    conditioned = small(stages=4, segment=4).eval()
    with torch.no_grad():
        assert not torch.equal(conditioned.propose(canvas, 1), conditioned.propose(canvas, 3))
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in conditioned.parameters())
    reloaded = VQDraw(model.config.__class__.from_dict(model.config.to_dict()))
    assert reloaded.config == model.config


def test_active_stages_trains_the_first_stages_only(digits):
    model = small()
    terms = model.loss(digits, stages=2)
    assert terms["codes"].shape == (48, 2)
    assert torch.equal(terms["codes"], model.encode(digits, stages=2))
    terms["loss"].backward()
    assert _grad_norm(model, 2) == 0 and _grad_norm(model, 1) > 0


def test_switches_off_change_nothing(digits):
    model = small()
    torch.manual_seed(3)
    a = model.loss(digits)
    b = model.loss(digits, stages=None, epsilon=0.0, grad_decay=0.0, final_coeff=0.0, final_only=False)
    assert torch.equal(a["codes"], b["codes"]) and torch.equal(a["loss"], b["loss"])
    assert small().config.to_dict() == VQDraw.from_preset("mnist", options=8, stages=3, segment=1).config.to_dict()
    assert "residual" not in a and "residual" not in small().config.to_dict()
