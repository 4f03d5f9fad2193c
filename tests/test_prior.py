"""The learned prior: training, its exact integer twin, entropy-coded .vqd files (version 3) for
images, text and volumes, determinism across configurations, and refusing the wrong prior."""

from __future__ import annotations

import math
import struct
import time
import zlib

import numpy as np
import pytest
import torch

from vqdraw import RefinerConfig, VQDraw
from vqdraw.compress.bitstream import VqdFormatError, check_vqd, read_header, read_vqd, write_vqd
from vqdraw.cli import main
from vqdraw.compress.codec import compress, compress_codes, decompress
from vqdraw.core.config import ModelConfig
from vqdraw.errors import CheckpointError, InputError
from vqdraw.compress.fixedpoint import MAX_FREQUENCY, TOTAL, frequencies, quantize, sigmoid_q, tanh_q
from vqdraw.prior import Prior, PriorConfig, PriorNet, find_prior, load_prior, train_prior
from vqdraw.compress.text import compress_text, decompress_text

pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")


def chain_codes(count: int, K: int, N: int, seed: int = 0) -> np.ndarray:
    """Codes where each stage depends on the one before: c[t] = 3 c[t-1] + (0, 1 or 2) mod K."""
    rng = np.random.default_rng(seed)
    c = np.zeros((count, N), dtype=np.int64)
    c[:, 0] = rng.integers(0, K, count)
    for t in range(1, N):
        c[:, t] = (3 * c[:, t - 1] + rng.integers(0, 3, count)) % K
    return c


@pytest.fixture(scope="module")
def chain_prior() -> tuple[Prior, object]:
    return train_prior(chain_codes(1500, 16, 5), 16, config=PriorConfig(16, 5, embed=16, hidden=32),
                       steps=400, eval_every=100)


def test_training_lowers_heldout_cross_entropy_far_below_uniform(chain_prior):
    prior, report = chain_prior
    assert report.uniform_bits == 5 * 4
    # the true conditional entropy is 4 + 4 * log2(3) = 10.3 bits per item
    assert report.heldout_bits < 13, report
    assert report.heldout_stage_bits[1] < 2.5 < 3.5 < report.heldout_stage_bits[0]


def test_exact_integer_prior_agrees_with_the_float_network(chain_prior):
    prior, _ = chain_prior
    codes = chain_codes(300, 16, 5, seed=1)
    exact = -prior.log_prob(codes).mean() / math.log(2)
    floating = -prior.float_log_probs(codes).sum(1).mean() / math.log(2)
    assert abs(float(exact - floating)) < 0.01 * float(floating)


def test_fixed_point_functions_and_frequencies():
    x = np.linspace(-12, 12, 2001)
    q = quantize(x, 28)
    assert np.abs(tanh_q(q) / 2**14 - np.tanh(x)).max() < 2e-4
    assert np.abs(sigmoid_q(q) / 2**14 - 1 / (1 + np.exp(-x))).max() < 2e-4
    rng = np.random.default_rng(0)
    logits = quantize(rng.normal(0, 4, (500, 37)), 28)
    logits[0] = 0
    logits[1, 5] = 100 << 28  # one certain code: capped at 3/4
    f = frequencies(logits)
    assert (f.sum(1) == TOTAL).all() and f.min() >= 1 and f.max() <= MAX_FREQUENCY
    assert f[1, 5] == MAX_FREQUENCY and len(set(f[0])) <= 2  # equal logits: (almost) equal shares
    # row by row gives the same integers as the whole batch
    assert all((frequencies(logits[i:i + 1]) == f[i]).all() for i in range(0, 500, 37))


def tiny_model(stages: int = 3, options: int = 16) -> VQDraw:
    torch.manual_seed(0)
    small = RefinerConfig(down=(8, 8), body=(16,), up=(8, 8))
    return VQDraw.from_preset("mnist", stages=stages, options=options, refiner=small).eval()


def prior_for(model, seed: int = 0, steps: int = 30) -> Prior:
    codes = chain_codes(300, int(model.options), int(model.stages), seed=seed)
    prior, _ = train_prior(codes, model.options, config=PriorConfig(model.options, model.stages, 8, 16),
                           steps=steps, seed=seed, model_fingerprint=model.fingerprint())
    return prior


@pytest.mark.parametrize("count", [0, 1, 7, 13])
def test_entropy_coded_round_trip_in_blocks_and_size_matches_cross_entropy(chain_prior, count):
    prior, _ = chain_prior
    codes = chain_codes(count, 16, 5, seed=2)
    data = write_vqd(codes, 16, (1, 4, 4), bytes(range(16)), coder=prior, block=5)  # 3 blocks at 13
    vqd = read_vqd(data, coder=prior)
    assert vqd.version == 3 and vqd.prior_fingerprint == prior.fingerprint()
    assert vqd.codes.tolist() == codes.tolist()
    payload_bits = 8 * vqd.payload_bytes
    ideal = float(-prior.log_prob(codes).sum() / math.log(2)) if count else 0.0
    assert ideal - 32 <= payload_bits <= ideal + 64  # the range coder's few words per file


def test_block_size_changes_the_bytes_not_the_codes(chain_prior):
    prior, _ = chain_prior
    codes = chain_codes(40, 16, 5, seed=3)
    a = write_vqd(codes, 16, (1, 4, 4), bytes(16), coder=prior, block=1)
    b = write_vqd(codes, 16, (1, 4, 4), bytes(16), coder=prior)
    assert read_header(a).block == 1 and read_header(b).block == 1024
    assert read_vqd(a, coder=prior).codes.tolist() == read_vqd(b, coder=prior).codes.tolist() == codes.tolist()


def test_images_round_trip_bit_exact_against_fixed_length_across_configurations():
    model = tiny_model()
    prior = prior_for(model)
    x = torch.rand(9, 1, 28, 28)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        codes = torch.cat([model.encode(x[i:i + 1]) for i in range(9)])  # batch 1, one thread
        coded = compress_codes(model, codes, prior=prior, block=4)
        fixed = compress_codes(model, codes)
        torch.set_num_threads(2)
        # decoding in another configuration: two threads, decode batch 7, a freshly loaded prior
        again = Prior(PriorNet(prior.config), prior.model_fingerprint)
        again.net.load_state_dict(prior.net.state_dict())
        images, vqd = decompress(model, coded, batch_size=7, prior=again)
        ref_images, ref = decompress(model, fixed, batch_size=7)  # the model's decoder, same configuration
    finally:
        torch.set_num_threads(threads)
    assert vqd.codes.tolist() == ref.codes.tolist() == codes.tolist()
    assert torch.equal(images, ref_images)
    assert vqd.version == 3 and ref.version == 1


def test_text_round_trip_with_a_prior_equals_fixed_length():
    from tests.test_text import tiny_text_model

    model = tiny_text_model()
    prior = prior_for(model)
    text = "Entropy coding saves bits only where the prior predicts the codes. " * 3
    coded = compress_text(model, text, prior=prior)
    assert read_header(coded).version == 3 and read_header(coded).length == len(text)
    assert decompress_text(model, coded, prior=prior) == decompress_text(model, compress_text(model, text))


def test_volume_round_trip_with_a_prior_equals_fixed_length():
    torch.manual_seed(0)
    model = VQDraw.from_preset("voxels32", data_shape=(1, 8, 8, 8), stages=2, segment=1, options=8).eval()
    prior = prior_for(model)
    x = (torch.rand(5, 1, 8, 8, 8) > 0.5).float()
    coded, fixed = compress(model, x, prior=prior), compress(model, x)
    assert read_header(coded).modality == "volume" and read_header(coded).version == 3
    a, va = decompress(model, coded, prior=prior, batch_size=2)
    b, vb = decompress(model, fixed)
    assert va.codes.tolist() == vb.codes.tolist() and torch.equal(a, b)


def test_wrong_or_missing_prior_is_refused_in_one_line(chain_prior):
    prior, _ = chain_prior
    codes = chain_codes(6, 16, 5)
    data = write_vqd(codes, 16, (1, 4, 4), bytes(16), coder=prior)
    other = Prior(PriorNet(prior.config))
    with pytest.raises(VqdFormatError, match="different prior") as err:
        read_vqd(data, coder=other)
    assert "\n" not in str(err.value)
    with pytest.raises(VqdFormatError, match="entropy-coded with a prior"):
        read_vqd(data)
    # a fixed-length file needs no prior and ignores one
    assert read_vqd(write_vqd(codes, 16, (1, 4, 4), bytes(16)), coder=other).codes.tolist() == codes.tolist()


def test_a_prior_for_another_model_is_refused(tmp_path):
    model = tiny_model()
    torch.manual_seed(1)
    other = VQDraw(model.config).eval()  # same shape, other weights
    prior = prior_for(model)
    with pytest.raises(InputError, match="another model"):
        compress_codes(other, np.zeros((2, 3), dtype=np.int64), prior=prior)
    prior.save(tmp_path)
    other.save(tmp_path)
    with pytest.raises(CheckpointError, match="another model"):
        load_prior(tmp_path, other)
    empty = tmp_path / "empty"
    model.save(empty)
    assert find_prior(empty, model) is None


def test_save_load_keeps_the_fingerprint_and_the_coding(tmp_path, chain_prior):
    prior, _ = chain_prior
    prior.save(tmp_path)
    loaded = load_prior(tmp_path)
    assert loaded.fingerprint() == prior.fingerprint()
    codes = chain_codes(20, 16, 5, seed=4)
    assert torch.equal(loaded.log_prob(codes), prior.log_prob(codes))
    assert loaded.meta["training"]["steps"] == 400


def test_samples_follow_the_prior(chain_prior):
    prior, _ = chain_prior
    g = torch.Generator().manual_seed(0)
    s = prior.sample(400, generator=g)
    assert s.shape == (400, 5) and 0 <= int(s.min()) and int(s.max()) < 16
    follows = ((s[:, 1:] - 3 * s[:, :-1]) % 16 <= 2).float().mean()
    assert follows > 0.9  # the chain rule the prior learned (uniform codes: 3/16)
    cold = prior.sample(400, temperature=0.3, generator=torch.Generator().manual_seed(0))
    assert float(-prior.log_prob(cold).mean()) < float(-prior.log_prob(s).mean())
    with pytest.raises(InputError):
        prior.sample(2, temperature=0)


def forged3(K=16, n=5, count=3, block=4, payload=b"", shape=(1, 4, 4), prior_fp=bytes(16)) -> bytes:
    body = struct.pack("<4sBB16s16sBB", b"VQDR", 3, 0, bytes(16), prior_fp, 1, len(shape))
    body += struct.pack(f"<{len(shape)}H", *shape) + struct.pack("<HHIH", K, n, count, block) + payload
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("data,match", [
    (forged3(count=2**32 - 1), "cannot fit"),  # billions of codes from an empty payload
    (forged3(count=100_000, payload=bytes(400)), "cannot fit"),
    (forged3(block=0), "block"),
    (forged3(K=4096, block=2048), "block"),
    (forged3(payload=bytes(5)), "32-bit words"),
    (forged3()[:50], "truncated"),
])
def test_hostile_version_3_headers_are_refused_before_decoding(data, match):
    t = time.monotonic()
    with pytest.raises(VqdFormatError, match=match):
        check_vqd(data)
    assert time.monotonic() - t < 0.1


def test_fuzzed_version_3_files_fail_in_one_line_and_quickly(chain_prior):
    prior, _ = chain_prior
    good = write_vqd(chain_codes(50, 16, 5), 16, (1, 4, 4), bytes(16), coder=prior, block=7)
    rng = np.random.default_rng(0)
    for trial in range(150):
        data = bytearray(good)
        kind = trial % 3
        if kind == 0:  # flip bytes, keep the CRC valid: garbage in the stream itself
            body = bytearray(good[:-4])
            for i in rng.integers(read_header(good).header_bytes - 4, len(body), 3):
                body[i] ^= int(rng.integers(1, 256))
            data = body + struct.pack("<I", zlib.crc32(bytes(body)))
        elif kind == 1:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            data[int(rng.integers(0, len(data)))] ^= 0xFF
        t = time.monotonic()
        try:
            vqd = read_vqd(bytes(data), coder=prior)
            assert vqd.codes.shape == (50, 5) and vqd.codes.max() < 16  # decodes to some valid codes
        except VqdFormatError as exc:
            assert "\n" not in str(exc)
        assert time.monotonic() - t < 1.0


def test_cli_prior_encode_decode(tmp_path, capsys):
    model = tiny_model()
    folder = tmp_path / "model"
    model.save(folder)
    (folder / "train.json").write_text('{"train": {"dataset": "mnist-embedded"}, "model": {}}')
    assert main(["prior", str(folder), "--train-items", "300", "--test-items", "50", "--steps", "40",
                 "--hidden", "16", "--embed", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test cross-entropy" in out and (folder / "prior.safetensors").exists()
    from vqdraw.data import load_dataset
    from vqdraw.data.images import save_image

    test = load_dataset("mnist-embedded", "test")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    x = test.batch(range(5))
    for i in range(5):
        save_image(x[i], imgs / f"{i}.png")
    capsys.readouterr()
    assert main(["encode", str(folder), str(imgs), "-o", str(tmp_path / "p.vqd"), "--prior"]) == 0
    fell_back = "fixed length" in capsys.readouterr().err
    assert main(["encode", str(folder), str(imgs), "-o", str(tmp_path / "f.vqd")]) == 0
    if fell_back:  # five items and a 40-step prior: the coded file would be larger, so encode wrote fixed length
        from vqdraw.compress.codec import compress_codes, read_file

        fixed = (tmp_path / "f.vqd").read_bytes()
        assert (tmp_path / "p.vqd").read_bytes() == fixed
        codes = torch.as_tensor(read_file(model, fixed).codes)
        (tmp_path / "p.vqd").write_bytes(compress_codes(model, codes, prior=load_prior(folder, model)))
    assert read_header((tmp_path / "p.vqd").read_bytes()).version == 3
    assert main(["decode", str(folder), str(tmp_path / "p.vqd"), "-o", str(tmp_path / "p")]) == 0
    assert main(["decode", str(folder), str(tmp_path / "f.vqd"), "-o", str(tmp_path / "f"), "--batch", "2"]) == 0
    for i in range(5):
        assert (tmp_path / "p" / f"{i:06d}.png").read_bytes() == (tmp_path / "f" / f"{i:06d}.png").read_bytes()
    # another prior beside the model: the file is refused in one line, exit 2
    prior_for(model, seed=5).save(folder)
    capsys.readouterr()
    assert main(["decode", str(folder), str(tmp_path / "p.vqd"), "-o", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "different prior" in err and err.count("\n") == 1
    # no prior at all
    for name in ("prior.json", "prior.safetensors"):
        (folder / name).unlink()
    assert main(["decode", str(folder), str(tmp_path / "p.vqd"), "-o", str(tmp_path / "q")]) == 2
    assert "entropy-coded with a prior" in capsys.readouterr().err
    assert main(["encode", str(folder), str(imgs), "-o", str(tmp_path / "x.vqd"), "--prior"]) == 2
    assert "no prior" in capsys.readouterr().err


def zero_prior(K: int, N: int) -> Prior:
    """A prior whose every weight is 0: equal logits, so p = 1/K exactly when K is a power of two."""
    net = PriorNet(PriorConfig(K, N, 4, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return Prior(net)


def test_a_flat_prior_is_exactly_uniform_and_leaves_the_likelihood_bounds_unchanged():
    from vqdraw.evaluate.nll import nll_bounds

    flat = zero_prior(4, 3)
    codes = chain_codes(10, 4, 3)
    assert (flat.exact.frequencies(codes) == TOTAL // 4).all()
    assert torch.allclose(flat.log_prob(codes), torch.full((10,), -3 * math.log(4), dtype=torch.float64),
                          rtol=0, atol=1e-12)
    torch.manual_seed(0)
    model = VQDraw.from_preset("mnist", data_shape=(1, 8, 8), options=4, stages=3, segment=3,
                               refiner=RefinerConfig(down=(8,), body=(8,), up=(8,)), likelihood="bernoulli").eval()
    x = (torch.rand(6, 1, 8, 8) > 0.5).float()
    for r in nll_bounds(model, x, beam=2, prior=flat):
        assert r["nats_single_prior"] == pytest.approx(r["nats_single"], abs=1e-9)
        assert r["nats_marginal_prior"] == pytest.approx(r["nats_marginal"], abs=1e-9)
        assert r["nats_marginal_prior"] <= r["nats_single_prior"]
    # a prior trained on the model's own codes spends fewer nats on them than n ln K
    codes = model.encode((torch.rand(400, 1, 8, 8) > 0.5).float())
    learned, _ = train_prior(codes, 4, config=PriorConfig(4, 3, 8, 16), steps=150)
    rows = nll_bounds(model, x, beam=1, prior=learned)
    assert rows[-1]["nats_code_prior"] < rows[-1]["nats_code"]
    assert rows[-1]["nats_single_prior"] < rows[-1]["nats_single"]


def test_rate_distortion_report_gets_the_entropy_coded_curve():
    from vqdraw.evaluate.ratedistortion import vqdraw_curves

    model = tiny_model()
    prior = prior_for(model)
    images = torch.rand(6, 1, 28, 28)
    curves, _ = vqdraw_curves(model, images, prior=prior)
    coded = {c["name"]: c for c in curves}["VQ-DRAW (entropy-coded .vqd file, all images)"]["results"]
    assert coded["stages"] == [1, 2, 3]
    for n, bits, payload, ce in zip(coded["stages"], coded["bits_per_image"], coded["payload_bits_per_image"],
                                    coded["cross_entropy_bits"]):
        assert bits == pytest.approx(payload + 8 * 60 / 6)
        assert ce - 32 / 6 <= payload <= ce + 64 / 6


def test_cli_sample_with_the_prior(tmp_path, capsys):
    model = tiny_model()
    folder = tmp_path / "model"
    model.save(folder)
    assert main(["sample", str(folder), "--prior", "-n", "4"]) == 2
    assert "no prior" in capsys.readouterr().err
    assert main(["sample", str(folder), "--temperature", "0.5", "-n", "4"]) == 2
    assert "--temperature needs --prior" in capsys.readouterr().err
    prior_for(model).save(folder)
    assert main(["sample", str(folder), "--prior", "--temperature", "0.7", "-n", "4"]) == 0
    assert (folder / "prior-samples-0.png").stat().st_size > 0
