"""The fast paths compute what the straightforward definitions compute (up to float rounding).

The straightforward versions live in `vqdraw.core.reference`, written the obvious way: the refiner as conv -> mask
multiply -> ReLU [-> GroupNorm] module by module and head * output_scale; the stage loop as
``proposals = canvas + deltas``, ``option_losses(proposals, target)``, ``proposals[rows, choice]``.
The library instead folds masks and scales into weights, runs channels-last, computes the
per-option losses as ||d||^2 - 2<d, r> + ||r||^2 with a hand-written backward, and refines a
canvas shared by several images once.
"""

import hashlib

import pytest
import torch

from vqdraw import VQDraw
from vqdraw.core.config import ModelConfig
from vqdraw.core.losses import option_losses, select_option
from vqdraw.core.stageloop import LoopOptions
from vqdraw.core.reference import reference_deltas, reference_loss, reference_proposals, reference_run


def close(a, b, rtol=1e-4, atol=1e-5):
    return torch.allclose(a, b, rtol=rtol, atol=atol)


def small(name, **kw):
    torch.manual_seed(0)
    cfg = dict(options=8, stages=4, segment=2)
    cfg.update(kw)
    return VQDraw.from_preset(name, **cfg)


# ----------------------------------------------------------------------------- per-option losses
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("c", [1, 3])
def test_select_option_equals_option_losses(c, channels_last):
    g = torch.Generator().manual_seed(0)
    b, k, h, w = 5, 7, 6, 4
    deltas = torch.randn(b, k * c, h, w, generator=g)
    if channels_last:  # the layout the refiner's head produces
        deltas = deltas.contiguous(memory_format=torch.channels_last)
    deltas = deltas.unflatten(1, (k, c))
    canvas, target = torch.randn(b, c, h, w, generator=g), torch.randn(b, c, h, w, generator=g)
    losses, choice, chosen = select_option(deltas, target - canvas)
    proposals = canvas.unsqueeze(1) + deltas
    ref = option_losses(proposals, target)
    assert torch.allclose(losses, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(choice, ref.argmin(1))
    assert torch.allclose(canvas + chosen, proposals[torch.arange(b), choice], atol=1e-6)
    codes = torch.tensor([0, 6, 3, 3, 1])
    _, followed, chosen = select_option(deltas, target - canvas, codes)
    assert torch.equal(followed, codes) and torch.equal(chosen, deltas[torch.arange(b), codes])


@pytest.mark.parametrize("groups", [1, 3, 40])
@pytest.mark.parametrize("host_reads", [True, False])  # False: the GPU rule (no exact group size)
def test_select_option_grouped_equals_gathered(groups, host_reads):
    """U distinct canvases shared by B images (group index) = the same deltas gathered per image."""
    g = torch.Generator().manual_seed(1)
    b, k = 50 if groups > 3 else 9, 5
    group = torch.randint(0, groups, (b,), generator=g)
    deltas = torch.randn(groups, k, 1, 6, 6, generator=g)
    residual = torch.randn(b, 1, 6, 6, generator=g)
    got = select_option(deltas, residual, group=group, exact_size=host_reads)
    ref = select_option(deltas[group], residual)
    assert torch.allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)
    assert torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])


@pytest.mark.parametrize("grouping", [None, [0] * 6, [0, 2, 1, 2, 0, 1], [3, 3, 3, 3, 1, 0]])
@pytest.mark.parametrize("host_reads", [True, False])  # False: the GPU rule (no exact group size)
def test_select_option_backward_matches_autograd_of_the_definition(grouping, host_reads):
    """Hand-written backward == autograd through proposals, option_losses and indexing (float64).
    Groupings: none, one shared canvas, equal groups, one big group (gathered instead)."""
    g = torch.Generator().manual_seed(2)
    b, k, c, h, w = 6, 4, 2, 3, 5
    group = None if grouping is None else torch.tensor(grouping)
    u = b if grouping is None else max(grouping) + 1
    deltas = torch.randn(u, k, c, h, w, generator=g, dtype=torch.float64)
    canvas = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    target = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    g_losses = torch.randn(b, k, generator=g, dtype=torch.float64)
    g_chosen = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)

    def fast(d, cv):
        losses, choice, chosen = select_option(d, target - cv, group=group, exact_size=host_reads)
        return (losses * g_losses).sum() + ((cv + chosen) * g_chosen).sum(), choice

    def naive(d, cv):
        per_image = d if group is None else d[group]
        p = cv.unsqueeze(1) + per_image
        losses = option_losses(p, target)
        choice = losses.argmin(1)
        return (losses * g_losses).sum() + (p[torch.arange(b), choice] * g_chosen).sum(), choice

    grads = []
    for fn in (fast, naive):
        d, cv = deltas.clone().requires_grad_(), canvas.clone().requires_grad_()
        out, choice = fn(d, cv)
        out.backward()
        grads.append((out.detach(), choice, d.grad, cv.grad))
    (o1, c1, gd1, gc1), (o2, c2, gd2, gc2) = grads
    assert torch.equal(c1, c2)
    assert torch.allclose(o1, o2, rtol=1e-10)
    assert torch.allclose(gd1, gd2, rtol=1e-9, atol=1e-12)
    assert torch.allclose(gc1, gc2, rtol=1e-9, atol=1e-12)
    d, r = deltas[:, :, :1, :2, :2].clone().requires_grad_(), (target - canvas)[:, :1, :2, :2].clone()
    r.requires_grad_()
    assert torch.autograd.gradcheck(lambda d, r: (select_option(d, r, group=group, exact_size=host_reads)[0],
                                                 select_option(d, r, group=group, exact_size=host_reads)[2]), (d, r))


# ----------------------------------------------------------------------------- the refiner
@pytest.mark.parametrize("name", ["mnist", "svhn", "cifar10", "celeba"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_refiner_equals_module_by_module_definition(name, channels_last):
    model = small(name, stages=3, segment=2)
    model.refiner.set_speed(channels_last=channels_last)
    shape = model.config.data_shape
    canvas = torch.randn(3, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for stage in range(3):
            seg = model.refiner.segments[stage // 2]
            fast = seg(canvas, stage % 2)
            ref = reference_deltas(seg, canvas, stage % 2)
            assert fast.shape == ref.shape
            assert close(fast, ref), (name, stage, (fast - ref).abs().max().item())
            assert close(model.propose(canvas, stage), reference_proposals(model, canvas, stage))


def _listing(model) -> tuple[int, str]:
    sd = model.state_dict()
    listing = repr(sorted((k, tuple(v.shape)) for k, v in sd.items()))
    return len(sd), hashlib.sha256(listing.encode()).hexdigest()[:16]


def test_state_dict_keys_and_shapes_unchanged():
    """Checkpoints written before the speed work load unchanged: same keys, same shapes.

    The CIFAR-10 and CelebA presets changed deliberately to the author's layers (no masks on the
    downsampling convolutions; CIFAR-10's raw body convolution): fewer keys. Model folders written
    before that have no mask_down/raw_body in config.json, so they rebuild the earlier layout,
    whose listing is pinned as before."""
    from dataclasses import replace

    expected = {"mnist": (49, "c2fa49c5c60c1462"), "svhn": (87, "392078ca1a722408"),
                "cifar10": (235, "f4f75729b4725600"), "celeba": (241, "241570c13290835c")}
    for name, listing in expected.items():
        assert _listing(small(name)) == listing, name
    earlier = {"cifar10": (243, "99bec646685cd877"), "celeba": (247, "b0ad3f0f45622a50")}
    for name, listing in earlier.items():
        cfg = small(name).config.to_dict()
        for key in ("mask_down", "raw_body", "norm_groups"):  # what a config.json of then holds
            cfg["refiner"].pop(key, None)
        old = VQDraw(ModelConfig.from_dict(cfg))
        assert old.config.refiner == replace(small(name).config.refiner, mask_down=True, raw_body=False,
                                             norm_groups=())
        assert _listing(old) == listing, name


def test_golden_codes_of_a_seeded_model(digits):
    """Codes and losses that the original, straightforward implementation produced."""
    model = small("mnist").eval()
    res = model.encode(digits, return_reconstruction=True)
    assert res.codes.tolist() == [
        [6, 5, 6, 6], [6, 5, 6, 6], [6, 5, 6, 6], [6, 5, 6, 6], [3, 2, 4, 1], [6, 5, 6, 6],
        [6, 5, 6, 6], [3, 3, 4, 4], [3, 2, 4, 1], [6, 5, 6, 6], [3, 3, 3, 4], [6, 5, 6, 6],
        [6, 5, 6, 6], [6, 5, 6, 6], [6, 5, 6, 6], [6, 5, 6, 6]]
    final = [1.282059, 1.419269, 1.251507, 1.858007, 0.947474, 1.108519, 1.184429, 0.892899,
             0.968102, 1.309826, 0.761108, 1.254219, 1.755542, 2.006521, 1.228606, 1.423761]
    assert torch.allclose(res.losses[:, -1].min(1).values, torch.tensor(final), rtol=2e-6, atol=2e-6)
    assert res.reconstruction.sum().item() == pytest.approx(1658.63232421875, rel=1e-5)


# ----------------------------------------------------------------------------- whole model
@pytest.mark.parametrize("batch", [4, 16, 40])  # K = 8: shared stage 0, then B <= K or B > K
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dedup", [True, False])  # distinct canvases by torch.unique, or no-sync rule
@pytest.mark.parametrize("chunk", [64, 7])  # CPU inference in chunks of this many images
def test_encode_decode_equal_the_stage_by_stage_definition(digits, batch, channels_last, dedup, chunk):
    model = small("mnist").eval()
    model.loop = LoopOptions(dedup=dedup, cpu_chunk=chunk)
    model.refiner.set_speed(channels_last=channels_last)
    x = torch.cat([digits, digits.flip(3), digits.flip(2)])[:batch]
    with torch.no_grad():
        codes, canvas, losses = reference_run(model, model.target(x))
    res = model.encode(x, return_reconstruction=True)
    assert torch.equal(res.codes, codes)
    assert close(res.losses, losses, rtol=1e-5, atol=1e-6)
    assert close(res.reconstruction, model.to_data(canvas))
    assert torch.equal(model.decode(res.codes), res.reconstruction)  # bit for bit
    # decode of arbitrary codes, too (every path: shared, grouped, per image)
    other = torch.randint(0, 8, codes.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, ref_canvas, _ = reference_run(model, None, codes=other)
    assert close(model.decode(other), model.to_data(ref_canvas))


def test_rgb_model_encode_equals_definition():
    model = small("svhn", stages=3).eval()
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        codes, canvas, losses = reference_run(model, model.target(x))
    res = model.encode(x, return_reconstruction=True)
    assert torch.equal(res.codes, codes)
    assert close(res.losses, losses, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch,checkpointed,dedup", [(4, False, True), (16, False, True), (16, True, True),
                                                     (32, False, False), (32, True, False)])
def test_training_gradients_equal_autograd_of_the_definition(digits, batch, checkpointed, dedup):
    """eq. 3 through the fast path (and with per-segment checkpointing) = through the definition."""
    model = small("mnist").train()
    model.loop = LoopOptions(dedup=dedup)
    x = torch.cat([digits, digits.flip(3)])[:batch]
    ref_terms = reference_loss(model, x, alpha=0.5)
    codes = ref_terms["codes"]
    assert len(torch.unique(codes[:, 0])) < batch  # the shared/grouped paths are exercised
    ref_terms["loss"].backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    terms = model.loss(x, alpha=0.5, grad_checkpoint=checkpointed)
    terms["loss"].backward()
    assert torch.equal(terms["codes"], codes)
    for key in ("loss", "chosen", "all", "final"):
        assert terms[key].item() == pytest.approx(ref_terms[key].item(), rel=1e-5)
    for n, p in model.named_parameters():
        scale = ref[n].abs().max().item()
        assert (p.grad - ref[n]).abs().max().item() <= 1e-4 * scale + 1e-7, n


def test_bf16_autocast_keeps_losses_and_argmin_float32(digits):
    from vqdraw.training.train import autocast

    model = small("mnist").train()
    with autocast("bf16", "cpu"):
        terms = model.loss(digits[:4])
    assert terms["loss"].dtype == torch.float32
    terms["loss"].backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    with autocast("bf16", "cpu"):
        res = model.eval().encode(digits, return_reconstruction=True)
    assert res.losses.dtype == torch.float32 and res.reconstruction.dtype == torch.float32
    agree = (res.codes == model.encode(digits)).float().mean().item()
    assert agree > 0.5  # bf16 is an approximation: most codes agree with float32


def test_bf16_codes_match_float32_on_a_trained_model(all_cores, train_briefly):
    """After real training (not at initialisation, where options are near-ties), bf16 autocast
    must pick the float32 codes for the vast majority of images and not lose quality."""
    from vqdraw.data import load_dataset
    from vqdraw.training.train import autocast

    train, test = load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")
    model = train_briefly(small("mnist", options=16, stages=4).train(), train, steps=40, batch=32, lr=1e-3)
    x = test.batch(range(200))
    model.eval()
    fp32 = model.encode(x, return_reconstruction=True)
    with autocast("bf16", "cpu"):
        bf16 = model.encode(x, return_reconstruction=True)
    whole = (bf16.codes == fp32.codes).all(1).float().mean().item()
    first = (bf16.codes[:, 0] == fp32.codes[:, 0]).float().mean().item()
    assert whole >= 0.8 and first >= 0.95, (whole, first)
    mse = [((r.reconstruction - x) ** 2).mean().item() for r in (fp32, bf16)]
    assert mse[1] <= 1.05 * mse[0], mse


@pytest.mark.slow
def test_compiled_refiner_equals_eager(digits):
    model = small("mnist").eval()
    eager = model.encode(digits, return_reconstruction=True)
    model.refiner.set_speed(compile=True)
    try:
        compiled = model.encode(digits, return_reconstruction=True)
    finally:
        model.refiner.set_speed(compile=False)
    assert torch.equal(compiled.codes, eager.codes)
    assert close(compiled.losses, eager.losses, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("out_pad", [0, 1])
def test_transposed_convolution_backward_equals_autograd(out_pad):
    from vqdraw.core.layers import conv_transpose

    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 5, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv_transpose(x, w, b, 2, 1, out_pad), (x, w, b))
