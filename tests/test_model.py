"""Algorithmic invariants of VQ-DRAW (Algorithms 1-2, eq. 3, stage conditioning, segments)."""

import pytest
import torch

from vqdraw import ConfigError, InputError, VQDraw
from vqdraw.core.losses import code_usage, objective, option_losses


def test_codes_shape_range_and_argmin(tiny_model, digits):
    res = tiny_model.encode(digits, return_reconstruction=True)
    assert res.codes.shape == (16, 4) and res.codes.dtype == torch.int64
    assert res.codes.min() >= 0 and res.codes.max() < 8
    assert res.losses.shape == (16, 4, 8)
    # The chosen option is the arg-min of that stage's losses (Algorithm 1).
    assert torch.equal(res.codes, res.losses.argmin(dim=2))


def test_losses_are_those_of_the_replayed_proposals(tiny_model, digits):
    """Recompute stage by stage by hand: the reported losses are L(R_ij, X) of Algorithm 1."""
    codes = tiny_model.encode(digits)
    target = tiny_model.target(digits)
    canvas = torch.zeros_like(target)
    with torch.no_grad():
        for i in range(tiny_model.stages):
            proposals = tiny_model.propose(canvas, i)
            losses = ((proposals - target[:, None]) ** 2).mean(dim=(2, 3, 4))
            assert torch.equal(losses.argmin(1), codes[:, i])
            canvas = proposals[torch.arange(len(codes)), codes[:, i]]


def test_decode_reproduces_encode_reconstruction_exactly(tiny_model, digits):
    res = tiny_model.encode(digits, return_reconstruction=True)
    assert torch.equal(tiny_model.decode(res.codes), res.reconstruction)
    assert torch.equal(tiny_model.reconstruct(digits), res.reconstruction)


def test_decode_prefix_matches_encoding_fewer_stages(tiny_model, digits):
    codes = tiny_model.encode(digits)
    for n in range(tiny_model.stages + 1):
        short = tiny_model.encode(digits, stages=n, return_reconstruction=True)
        assert torch.equal(short.codes, codes[:, :n])  # greedy: a prefix of the full code
        assert torch.equal(tiny_model.decode(codes, stages=n), short.reconstruction)
    # Zero stages decode to the starting canvas, zeros in normalised space.
    zero = tiny_model.decode(codes, stages=0)
    assert torch.allclose(zero, tiny_model.to_data(torch.zeros_like(digits)))


def test_empty_batches_give_empty_results(tiny_model):
    res = tiny_model.encode(torch.zeros(0, 1, 28, 28), return_reconstruction=True)
    assert res.codes.shape == (0, 4) and res.codes.dtype == torch.long
    assert res.reconstruction.shape == (0, 1, 28, 28) and res.losses.shape == (0, 4, 8)
    assert tiny_model.decode(torch.zeros(0, 4, dtype=torch.long)).shape == (0, 1, 28, 28)
    assert tiny_model.decode(torch.zeros(0, 4, dtype=torch.long), stages=2).shape == (0, 1, 28, 28)


def test_sample_decodes_random_codes(tiny_model):
    a = tiny_model.sample(6, generator=torch.Generator().manual_seed(1))
    b = tiny_model.sample(6, generator=torch.Generator().manual_seed(1))
    assert a.shape == (6, 1, 28, 28) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_objective_eq3_hand_checked():
    # One image, two stages, two options. Stage 1 losses [1, 3], stage 2 losses [4, 2].
    losses = torch.tensor([[[1.0, 3.0], [4.0, 2.0]]])
    codes = torch.tensor([[0, 1]])
    t = objective(losses, codes, alpha=0.5)
    assert t["chosen"].item() == pytest.approx((1 + 2) / 2)  # eq. 1
    assert t["all"].item() == pytest.approx((1 + 3 + 4 + 2) / 4)  # eq. 2
    assert t["loss"].item() == pytest.approx(1.5 + 0.5 * 2.5)  # eq. 3
    assert t["final"].item() == pytest.approx(2.0)


def test_option_losses_is_per_option_mse():
    proposals = torch.zeros(1, 2, 1, 2, 2)
    proposals[0, 1] = 1.0
    target = torch.full((1, 1, 2, 2), 0.5)
    assert torch.allclose(option_losses(proposals, target), torch.tensor([[0.25, 0.25]]))
    target[0, 0, 0, 0] = 1.0
    assert torch.allclose(option_losses(proposals, target), torch.tensor([[0.4375, 0.1875]]))


def test_code_usage_entropy():
    codes = torch.tensor([[0, 1], [0, 1]])
    entropy, used = code_usage(codes, options=4)
    assert used.item() == 2
    assert entropy.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    entropy, used = code_usage(torch.arange(4).view(1, 4), options=4)
    assert entropy.item() == pytest.approx(torch.log(torch.tensor(4.0)).item()) and used.item() == 4


def _capture_proposals(model):
    captured = []
    original = model.propose

    def spy(canvas, stage):
        out = original(canvas, stage)
        out.retain_grad()
        captured.append(out)
        return out

    model.propose = spy
    return captured


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_gradients_flow_through_chosen_path_only(tiny_model, digits, alpha):
    """With alpha = 0 only the chosen proposals get gradient (paper §3.3); l_all reaches the rest."""
    model = tiny_model.train()
    captured = _capture_proposals(model)
    terms = model.loss(digits[:4], alpha=alpha)
    terms["loss"].backward()
    codes = terms["codes"]
    for stage, proposals in enumerate(captured):
        g = proposals.grad.flatten(2).abs().sum(2)  # (B, K)
        chosen = torch.zeros_like(g, dtype=torch.bool)
        chosen[torch.arange(4), codes[:, stage]] = True
        assert (g[chosen] > 0).all()
        if alpha == 0:
            assert (g[~chosen] == 0).all()
        else:
            assert (g[~chosen] > 0).all()
    # and the refiner's first layer receives gradient (through later stages' inputs)
    first_conv = model.refiner.segments[0].units[0].conv.weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_codes_held_fixed_in_backward(tiny_model, digits):
    """The arg-min is not differentiated: the loss equals the objective at the fixed codes."""
    terms = tiny_model.train().loss(digits[:4], alpha=0.0)
    res = tiny_model.encode(digits[:4], return_reconstruction=True)
    assert torch.equal(terms["codes"], res.codes)
    assert terms["loss"].item() == pytest.approx(res.losses.min(2).values.mean().item(), rel=1e-5)


def test_segments_have_distinct_parameters(tiny_model, digits):
    segs = tiny_model.refiner.segments
    assert len(segs) == 2
    ptrs0 = {p.data_ptr() for p in segs[0].parameters()}
    ptrs1 = {p.data_ptr() for p in segs[1].parameters()}
    assert not ptrs0 & ptrs1
    canvas = tiny_model.target(digits[:2])
    with torch.no_grad():
        before = [tiny_model.propose(canvas, s) for s in range(4)]
        for p in segs[1].parameters():
            p.add_(0.1)
        after = [tiny_model.propose(canvas, s) for s in range(4)]
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.allclose(before[2], after[2]) and not torch.allclose(before[3], after[3])


def test_stage_masks_condition_the_refiner(digits):
    model = VQDraw.from_preset("mnist", options=8, stages=3, segment=3).eval()
    canvas = model.target(digits[:2])
    with torch.no_grad():
        p1, p2 = model.propose(canvas, 1), model.propose(canvas, 2)
        assert not torch.allclose(p1, p2)
        # Same masks for two stages => same proposals: the masks are what differ.
        for mod in model.modules():
            if hasattr(mod, "masks") and isinstance(mod.masks, torch.nn.Parameter):
                mod.masks[2] = mod.masks[1]
        assert torch.allclose(model.propose(canvas, 1), model.propose(canvas, 2))


def test_residual_outputs_add_deltas_to_the_canvas(tiny_model, digits):
    canvas = tiny_model.target(digits[:2])
    with torch.no_grad():
        proposals = tiny_model.propose(canvas, 1)
        deltas = tiny_model.refiner.segments[0](canvas, 1)
    assert torch.allclose(proposals, canvas[:, None] + deltas)


@pytest.mark.parametrize("name,shape,bits", [("mnist", (1, 28, 28), 60), ("svhn", (3, 32, 32), 120),
                                             ("cifar10", (3, 32, 32), 600), ("celeba", (3, 64, 64), 600)])
def test_every_preset_builds_and_proposes(name, shape, bits):
    model = VQDraw.from_preset(name, stages=2, segment=1)
    assert model.config.data_shape == shape
    assert VQDraw.from_preset(name).config.code_bits == bits
    with torch.no_grad():
        out = model.propose(torch.zeros(1, *shape), 1)
    assert out.shape == (1, 64, *shape)


def test_bad_inputs_are_clear_errors(tiny_model):
    with pytest.raises(InputError, match="shape"):
        tiny_model.encode(torch.rand(2, 3, 28, 28))
    with pytest.raises(InputError, match="shape"):
        tiny_model.encode(torch.rand(28, 28))
    with pytest.raises(InputError, match="stages"):
        tiny_model.encode(torch.rand(2, 1, 28, 28), stages=5)
    with pytest.raises(InputError, match="stages"):
        tiny_model.decode(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(InputError, match=r"\[0, 8\)"):
        tiny_model.decode(torch.full((2, 4), 8))
    with pytest.raises(ConfigError, match="unknown preset"):
        VQDraw.from_preset("imagenet")
    with pytest.raises(ConfigError, match="unknown"):
        VQDraw.from_preset("mnist", colours=3)


def test_old_names_of_target_and_to_data_still_work_with_a_warning(tiny_model, digits):
    with pytest.warns(DeprecationWarning, match="VQDraw.target"):
        assert torch.equal(tiny_model.normalize(digits), tiny_model.target(digits))
    canvas = tiny_model.target(digits)
    with pytest.warns(DeprecationWarning, match="VQDraw.to_data"):
        assert torch.equal(tiny_model.denormalize(canvas), tiny_model.to_data(canvas))
