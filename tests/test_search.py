"""Beam search (vqdraw.core.search): greedy at beam 1, never worse than greedy, codes that decode."""

from __future__ import annotations

import functools
import itertools
import warnings

import numpy as np
import pytest
import torch

from vqdraw.core.config import ModelConfig, RefinerConfig
from vqdraw.errors import InputError
from vqdraw.core.model import EncodeResult, VQDraw
from vqdraw.core.search import beam_search, final_losses
from vqdraw.core.stageloop import Beam, Greedy, Policy, beam_stages

TINY = ModelConfig(
    (1, 28, 28), options=8, stages=4, segment=2,
    refiner=RefinerConfig(down=(8, 8), body=(16,), up=(8, 8)),
)


@pytest.fixture(scope="module")
def trained(train_briefly):
    """A tiny model after 30 Adam steps on embedded MNIST (a few seconds), and 48 test digits."""
    from vqdraw.data import load_dataset

    # One thread: on a shared 2-core machine OpenMP's second thread spin-waits for a busy core
    # and makes these tiny convolutions ~50x slower. Restored after this module's tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = train_briefly(VQDraw(TINY), load_dataset("mnist-embedded", "train"), steps=30).eval()
    yield model, load_dataset("mnist-embedded", "test").batch(range(48))
    torch.set_num_threads(threads)


def test_beam_one_is_exactly_greedy(trained):
    model, x = trained
    greedy = model.encode(x, return_reconstruction=True)
    for keep_greedy in (True, False):  # beam 1 never runs the extra greedy pass: this is the search itself
        res = beam_search(model, x, 1, keep_greedy=keep_greedy)
        assert torch.equal(res.codes, greedy.codes)
        # greedy may compute the losses with other (faster) arithmetic: equal up to rounding
        assert torch.allclose(res.losses, greedy.losses, rtol=1e-5, atol=1e-6)
        assert torch.allclose(res.reconstruction, greedy.reconstruction, rtol=0, atol=1e-6)
    assert torch.equal(model.encode(x, beam=1), greedy.codes)


def test_beam_one_is_greedy_for_prefixes(trained):
    model, x = trained
    for n in (1, 3):
        assert torch.equal(beam_search(model, x, 1, stages=n).codes, model.encode(x, stages=n))


@pytest.mark.parametrize("beam", [2, 4, 16])
def test_beam_never_worse_than_greedy(trained, beam):
    model, x = trained
    greedy = model.encode(x, return_reconstruction=True)
    res = model.encode(x, beam=beam, return_reconstruction=True)
    g, b = final_losses(greedy.codes, greedy.losses), final_losses(res.codes, res.losses)
    assert (b <= g).all()  # exact: greedy's own code is kept wherever the search did not beat it
    assert (b < g).any()  # and the search does find better codes for some digits
    assert b.mean() < g.mean()


def test_wider_beams_help_on_average(trained):
    model, x = trained
    means = [final_losses(r.codes, r.losses).mean().item()
             for r in (beam_search(model, x, w, keep_greedy=False) for w in (1, 4, 32))]
    assert means[0] > means[1] > means[2]


def test_beam_codes_decode_to_the_reported_reconstruction(trained):
    model, x = trained
    res = model.encode(x, beam=4, return_reconstruction=True)
    assert isinstance(res, EncodeResult)
    # decode() runs a batch of B canvases where the search ran B*beam, so the convolutions may
    # round differently; in practice (CPU, this model) they agree exactly, the test allows 1e-6.
    assert torch.allclose(model.decode(res.codes), res.reconstruction, rtol=0, atol=1e-6)
    # the losses are the ones along the returned code: following the codes gives them again
    followed = model.score(x, res.codes)
    assert torch.allclose(followed.losses, res.losses, rtol=1e-5, atol=1e-7)


def test_exhaustive_beam_finds_the_best_code(trained):
    """With beam >= K^n the search keeps every code: it must find the global optimum."""
    model, x = trained
    x = x[:6]
    n, k = 2, model.options
    res = beam_search(model, x, k**n, stages=n, keep_greedy=False)
    every = torch.tensor(list(itertools.product(range(k), repeat=n)))  # (K^n, n)
    best = []
    for i in range(x.shape[0]):
        trace = model.score(x[i : i + 1].expand(len(every), -1, -1, -1), every)
        best.append(final_losses(trace.codes, trace.losses).min())
    assert torch.allclose(final_losses(res.codes, res.losses), torch.stack(best), rtol=1e-5, atol=1e-7)


def test_one_batched_refiner_call_per_stage(trained, monkeypatch):
    model, x = trained
    calls = []
    original = model.refiner.deltas

    def spy(canvas, stage):
        calls.append((stage, canvas.shape[0]))
        return original(canvas, stage)

    monkeypatch.setattr(model.refiner, "deltas", spy)
    x = x[:20]
    res = beam_search(model, x, 3, keep_greedy=False)
    assert [s for s, _ in calls] == list(range(model.stages))  # one call per stage
    # one canvas per distinct prefix: the empty code, then at most K one-option prefixes, ...
    assert calls[0][1] == 1 and 3 <= calls[1][1] <= model.options
    assert all(size <= 20 * 3 for _, size in calls)
    # deduplicating prefixes does not change the result
    monkeypatch.setattr("vqdraw.core.search.beam_stages", functools.partial(beam_stages, dedup=False))
    again = beam_search(model, x, 3, keep_greedy=False)
    assert torch.equal(again.codes, res.codes)
    assert torch.allclose(again.losses, res.losses, rtol=1e-5, atol=1e-7)


def test_encode_and_reconstruct_with_beam(trained):
    model, x = trained
    codes = model.encode(x[:4], beam=3)
    assert codes.shape == (4, model.stages) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < model.options
    assert model.encode(x[:4], beam=3, stages=2).shape == (4, 2)
    res = model.encode(x[:4], beam=3, return_reconstruction=True)
    assert res.losses.shape == (4, model.stages, model.options)
    assert torch.equal(model.reconstruct(x[:4], policy=Beam(3)), res.reconstruction)
    with pytest.warns(DeprecationWarning, match="policy=Beam"):
        assert torch.equal(model.reconstruct(x[:4], beam=3), res.reconstruction)
    empty = model.encode(x[:4], beam=3, stages=0, return_reconstruction=True)
    assert empty.codes.shape == (4, 0)


@pytest.mark.parametrize("beam", [0, -2, 1.5])
def test_bad_beam(trained, beam):
    model, x = trained
    with pytest.raises(InputError):
        model.encode(x[:2], beam=beam)
    with pytest.raises(InputError):
        beam_search(model, x[:2], beam)
    with pytest.raises(InputError):
        beam_search(model, x[:2], True)


def test_one_pass_encoder_and_beam_cannot_be_combined(trained):
    model, x = trained

    class Fixed:  # any object with predict(x) -> codes is a one-pass encoder
        def predict(self, images):
            return torch.zeros(images.shape[0], model.stages, dtype=torch.long)

    with pytest.raises(InputError):
        model.encode(x[:2], encoder=Fixed(), beam=4)
    res = model.encode(x[:2], encoder=Fixed(), return_reconstruction=True)
    assert res.codes.eq(0).all() and torch.equal(res.reconstruction, model.decode(res.codes))


# ---------------------------------------------------------------------- policies as objects
def test_encode_takes_policy_objects_and_a_custom_policy(tiny_model, digits):
    import warnings

    from vqdraw import Beam, Follow, Greedy, Policy

    greedy = tiny_model.encode(digits)
    assert torch.equal(tiny_model.encode(digits, policy=Greedy()), greedy)
    beam = tiny_model.encode(digits, policy=Beam(4), return_reconstruction=True)
    with pytest.warns(DeprecationWarning, match="policy=Beam"):
        old = tiny_model.encode(digits, beam=4, return_reconstruction=True)
    assert torch.equal(beam.codes, old.codes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the policy spelling warns about nothing
        tiny_model.encode(digits, policy=Beam(4))
    forced = torch.zeros((digits.shape[0], 2), dtype=torch.long)
    followed = tiny_model.encode(digits, policy=Follow(forced))
    assert torch.equal(followed[:, :2], forced)
    assert torch.equal(followed, tiny_model.encode(digits, prefix=forced))

    class SecondBest(Policy):
        """A policy defined outside the library: each stage keeps the second-lowest loss."""

        def choose(self, losses, choice, j):
            return None, losses.argsort(dim=1)[:, 1], None

    res = tiny_model.encode(digits, policy=SecondBest(), return_reconstruction=True)
    first = tiny_model.score(digits, res.codes[:, :1]).losses[:, 0]  # (B, K) losses at stage 1
    assert torch.equal(res.codes[:, 0], first.argsort(dim=1)[:, 1])
    assert torch.allclose(res.reconstruction, tiny_model.decode(res.codes), atol=1e-5)
    with pytest.raises(InputError, match="policy must be"):
        tiny_model.encode(digits, policy="beam")


def test_the_library_takes_policies_and_warns_on_beam_integers(tiny_model, digits):
    """compress, compress_text, the rate-distortion curves and the NLL bounds take ``policy=`` like
    model.encode; ``beam=W`` still works for one release, with a DeprecationWarning."""
    from vqdraw.compress.codec import compress, decompress, encode_images
    from vqdraw.compress.text import compress_text, decompress_text, encode_text
    from vqdraw.evaluate.nll import nll_bounds
    from vqdraw.evaluate.ratedistortion import vqdraw_curves

    x = digits[:4]
    beamed = tiny_model.encode(x, policy=Beam(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the policy spelling warns about nothing
        data = compress(tiny_model, x, policy=Beam(3))
        assert torch.equal(encode_images(tiny_model, x, policy=Beam(3)), beamed.cpu())
    assert np.array_equal(decompress(tiny_model, data)[1].codes, beamed.cpu().numpy())
    with pytest.warns(DeprecationWarning, match=r"compress\(beam=W\) is deprecated"):
        assert compress(tiny_model, x, beam=3) == data
    with pytest.raises(InputError, match="not both"):
        compress(tiny_model, x, beam=3, policy=Beam(3))
    with pytest.raises(InputError, match="policy must be"):
        compress(tiny_model, x, policy=3)
    with pytest.raises(InputError, match="beam width"):
        encode_images(tiny_model, x, policy=Beam(10**9))

    class SecondBest(Policy):
        def choose(self, losses, choice, j):
            return None, losses.argsort(dim=1)[:, 1], None

    assert torch.equal(encode_images(tiny_model, x, policy=SecondBest()),
                       tiny_model.encode(x, policy=SecondBest()).cpu())

    from vqdraw.core.config import RefinerConfig as R

    text = VQDraw(ModelConfig((1, 16), 4, 3, 3, mean=(0.5,), std=(0.5,), likelihood="categorical", categories=256,
                              refiner=R(down=(), body=(8,), up=(), head_kernel=3))).eval()
    line = "a policy object, not a beam integer"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coded = compress_text(text, line, policy=Beam(2))
    assert len(decompress_text(text, coded)) == len(line)
    assert encode_text(text, line, policy=Beam(2)).shape == (3, 3)  # 35 characters in chunks of 16
    with pytest.warns(DeprecationWarning, match="compress_text"):
        assert compress_text(text, line, beam=2) == coded

    binary = (x > 0.5).float()
    bern = VQDraw(ModelConfig((1, 28, 28), options=4, stages=2, segment=2, likelihood="bernoulli",
                              refiner=RefinerConfig(down=(8, 8), body=(16,), up=(8, 8)))).eval()
    rows = nll_bounds(bern, binary, policy=Beam(2))
    with pytest.warns(DeprecationWarning, match="nll_bounds"):
        assert nll_bounds(bern, binary, beam=2) == rows
    assert [r["beam"] for r in rows] == [2, 2]
    with pytest.raises(InputError, match="Greedy\\(\\) or Beam"):
        nll_bounds(bern, binary, policy=SecondBest())

    curves, _ = vqdraw_curves(tiny_model, x, policy=Beam(2))
    assert "beam search, width 2" in curves[0]["description"]
    for greedy in (None, Greedy(), Beam(1)):  # what the CLI passes for --beam 1, named as greedy
        assert "greedy)" in vqdraw_curves(tiny_model, x[:1], policy=greedy)[0][0]["description"]
