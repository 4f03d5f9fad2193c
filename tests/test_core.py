"""The core's seams: data of rank 1, 2 and 3, the likelihoods, the stage loop's options, input checks."""

import pytest
import torch

from vqdraw import InputError, VQDraw
from vqdraw.core.config import ConfigError
from vqdraw.core.reference import reference_loss, reference_run
from vqdraw.core.stageloop import LoopOptions

SHAPES = {"sequence": (1, 64), "image": (1, 28, 28), "volume": (1, 16, 16, 16)}


def build(shape, likelihood="mse", **kw):
    torch.manual_seed(0)
    cfg = dict(options=8, stages=4, segment=2, data_shape=shape, likelihood=likelihood)
    cfg.update(kw)
    return VQDraw.from_preset("mnist", **cfg)


def data(shape, n=6, binary=False, seed=1):
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))
    return (x > 0.5).float() if binary else x


def train_steps(model, x, steps=3):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(steps):
        terms = model.loss(x)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    return model.eval(), losses


@pytest.mark.parametrize("likelihood", ["mse", "bernoulli"])
@pytest.mark.parametrize("kind", list(SHAPES))
def test_every_rank_and_likelihood_trains_and_round_trips(kind, likelihood):
    shape = SHAPES[kind]
    model = build(shape, likelihood)
    conv = type(model.refiner.segments[0].units[0].conv).__name__
    assert conv == f"Conv{len(shape) - 1}d"
    x = data(shape, binary=likelihood == "bernoulli")
    model, losses = train_steps(model, x)
    assert all(torch.isfinite(torch.tensor(losses)))
    res = model.encode(x, return_reconstruction=True)
    assert res.codes.shape == (6, 4) and res.losses.shape == (6, 4, 8)
    assert res.reconstruction.shape == x.shape
    assert 0 <= res.reconstruction.min() and res.reconstruction.max() <= 1
    assert torch.equal(model.decode(res.codes), res.reconstruction)  # bit for bit
    # the codes are the arg-min of the definition, stage by stage
    with torch.no_grad():
        codes, canvas, ref_losses = reference_run(model, model.target(x))
    assert torch.equal(res.codes, codes)
    assert torch.allclose(res.losses, ref_losses, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["sequence", "volume"])
def test_training_gradients_equal_the_definition_for_other_ranks(kind):
    model = build(SHAPES[kind], "bernoulli").train()
    x = data(SHAPES[kind], n=5, binary=True)
    ref = reference_loss(model, x, alpha=0.5)
    ref["loss"].backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    terms = model.loss(x, alpha=0.5, grad_checkpoint=True)
    terms["loss"].backward()
    assert torch.equal(terms["codes"], ref["codes"])
    for n, p in model.named_parameters():
        scale = expected[n].abs().max().item()
        assert (p.grad - expected[n]).abs().max().item() <= 1e-4 * scale + 1e-7, n


def test_bernoulli_loss_is_the_binary_cross_entropy_by_hand():
    """A 2x2 case: the per-option loss is the mean over elements of -[x log s(l) + (1-x) log(1-s(l))]."""
    model = VQDraw.from_preset("mnist", likelihood="bernoulli", data_shape=(1, 4, 4), options=2, stages=1)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]]).unsqueeze(0)  # (1, 2, 1, 2, 2)
    got = model.likelihood.option_losses(logits, target)
    sig = torch.sigmoid(torch.tensor([2.0, -1.0, 0.5, 0.0]))
    x = torch.tensor([1.0, 0.0, 0.0, 1.0])
    by_hand = -(x * sig.log() + (1 - x) * (1 - sig).log()).mean()
    assert got[0, 0].item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert got[0, 1].item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-6)


def test_bernoulli_training_lowers_the_loss():
    model = build((1, 8, 8), "bernoulli", stages=2)
    x = data((1, 8, 8), n=16, binary=True)
    _, losses = train_steps(model, x, steps=30)
    assert losses[-1] < 0.9 * losses[0]


def test_presets_build_with_other_data_shapes_and_likelihoods():
    assert VQDraw.from_preset("mnist", likelihood="bernoulli").config.likelihood == "bernoulli"
    assert VQDraw.from_preset("mnist", data_shape=(1, 64)).config.rank == 1
    assert VQDraw.from_preset("mnist", data_shape=(1, 16, 16, 16)).config.rank == 3
    with pytest.raises(ConfigError):
        VQDraw.from_preset("mnist", likelihood="nonsense")
    with pytest.raises(ConfigError):
        VQDraw.from_preset("mnist", data_shape=(1, 30))  # not divisible by 4 (two downsamplings)
    with pytest.raises(ConfigError):
        VQDraw.from_preset("mnist", data_shape=(1, 8, 8, 8, 8))


def test_config_round_trips_and_image_configs_keep_their_format():
    for shape, likelihood in [((1, 28, 28), "mse"), ((1, 64), "bernoulli"), ((2, 8, 8, 8), "mse")]:
        model = build(shape, likelihood, mean=(0.5,) * shape[0], std=(0.5,) * shape[0])
        d = model.config.to_dict()
        assert type(model.config).from_dict(d) == model.config
    image = build((1, 28, 28)).config.to_dict()
    assert "image_shape" in image and "likelihood" not in image  # format 1, fingerprints unchanged


def test_input_checks():
    model = build((1, 28, 28)).eval()
    x = data((1, 28, 28), n=3)
    assert torch.equal(model.encode(x.double()), model.encode(x))  # float64 accepted
    with pytest.raises(InputError, match="255"):
        model.encode(x * 255)
    with pytest.raises(InputError):
        model.loss(x - 0.5)
    with pytest.raises(InputError):
        model.encode(torch.full_like(x, float("nan")))
    with pytest.raises(InputError):
        model.encode((x * 255).to(torch.uint8))
    with pytest.raises(InputError):
        model.encode(x[:, :, :14])
    with pytest.raises(InputError):
        model.decode(torch.full((2, 4), 8))
    with pytest.raises(InputError):
        model.encode(x, stages=5)


def test_loop_options_do_not_change_results():
    model = build((1, 28, 28)).eval()
    x = data((1, 28, 28), n=20)
    base = model.encode(x, return_reconstruction=True)
    for opts in [LoopOptions(dedup=False), LoopOptions(cpu_chunk=3), LoopOptions(group_fraction=0.0),
                 LoopOptions(exact_group_size=False, group_bucket=1)]:
        model.loop = opts
        res = model.encode(x, return_reconstruction=True)
        assert torch.equal(res.codes, base.codes), opts
        assert torch.allclose(res.reconstruction, base.reconstruction, atol=1e-6), opts
        assert torch.equal(model.decode(res.codes), res.reconstruction), opts
