"""The model that ships with vqdraw: loads by name everywhere a model folder is accepted, round-trips
files through the CLI with no training, writes nothing into the package, and its model card's
figure is what the model measures."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqdraw import CheckpointError, VQDraw
from vqdraw.cli import main
from vqdraw.data import load_dataset
from vqdraw.evaluate.metrics.distortion import psnr_from_mse
from vqdraw.pretrained import NAMES, folder

CARD = Path(folder("mnist")).parent / "mnist.md"


def _package_files() -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in Path(folder("mnist")).parent.rglob("*") if p.is_file()}


def test_names_load_the_same_model():
    a = VQDraw.from_pretrained("mnist")
    b = VQDraw.load("pretrained:mnist")
    assert (a.options, a.stages, a.config.data_shape) == (64, 10, (1, 28, 28))
    assert a.fingerprint() == b.fingerprint()
    assert "mnist" in NAMES


def test_unknown_name_is_refused(capsys):
    with pytest.raises(CheckpointError, match="no pretrained model 'nope'"):
        VQDraw.from_pretrained("nope")
    assert main(["sample", "pretrained:nope", "-n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pretrained:mnist" in err[0]


def test_encode_decode_digits_with_no_training(tmp_path, monkeypatch):
    """The README's quickstart: encode a folder of digits with the shipped model, decode them back."""
    monkeypatch.chdir(tmp_path)
    before = _package_files()
    digits = load_dataset("mnist-embedded", "test").batch(range(5))  # (5, 1, 28, 28) in [0, 1]
    Path("digits").mkdir()
    for i, x in enumerate(digits):
        Image.fromarray((x[0].numpy() * 255).round().astype(np.uint8)).save(f"digits/d{i}.png")
    assert main(["encode", "pretrained:mnist", "digits", "-o", "d.vqd"]) == 0
    assert Path("d.vqd").stat().st_size < 5 * 8 + 64  # 60 bits a digit plus the header
    assert main(["decode", "pretrained:mnist", "d.vqd", "-o", "out"]) == 0
    decoded = sorted(Path("out").glob("*.png"))
    assert len(decoded) == 5
    model = VQDraw.from_pretrained("mnist")
    expected = model.decode(model.encode(digits))
    got = torch.stack([torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255) for p in decoded])
    assert torch.allclose(got, expected[:, 0], atol=1 / 255 + 1e-6)
    # default outputs of a shipped model go to ./pretrained-mnist, never into the package
    assert main(["sample", "pretrained:mnist", "-n", "4"]) == 0
    assert (tmp_path / "pretrained-mnist" / "samples-0.png").is_file()
    assert _package_files() == before


def test_model_card_states_the_measured_psnr():
    """The card's test PSNR (of the mean MSE over the 500 embedded test digits) is what the model gives."""
    card = CARD.read_text()
    stated = float(re.search(r"\| greedy \(Algorithm 1\) \| [\d.]+ \| ([\d.]+) dB", card).group(1))
    model = VQDraw.from_pretrained("mnist")
    test = load_dataset("mnist-embedded", "test")
    x = test.batch(range(len(test)))
    assert len(x) == 500
    recon = model.decode(model.encode(x))
    measured = psnr_from_mse(float(torch.mean((recon - x) ** 2)))
    assert abs(measured - stated) < 0.01, (measured, stated)


def test_shipped_prior_belongs_to_the_model_and_states_its_measured_bits(tmp_path, monkeypatch):
    """The prior in the package is the model's (fingerprint), its card figure (cross-entropy over the
    codes of the 500 test digits) is what it measures, and --prior works with no training."""
    import math

    from vqdraw.prior import load_prior

    model = VQDraw.from_pretrained("mnist")
    prior = load_prior("pretrained:mnist", model)
    stated = float(re.search(r"its cross-entropy is \*\*([\d.]+) bits per digit\*\*", CARD.read_text()).group(1))
    test = load_dataset("mnist-embedded", "test")
    codes = model.encode(test.batch(range(len(test))))  # (500, N) greedy codes
    measured = float(-prior.stage_log_probs(codes).sum(1).mean()) / math.log(2)
    assert abs(measured - stated) < 0.01, (measured, stated)
    assert measured < 0.97 * model.stages * math.log2(model.options)
    monkeypatch.chdir(tmp_path)
    before = _package_files()
    assert main(["sample", "pretrained:mnist", "--prior", "-n", "4", "-o", "s.png"]) == 0
    assert Path("s.png").is_file() and _package_files() == before
