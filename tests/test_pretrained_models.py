"""The shipped models beyond digits (pretrained:fashion, pretrained:text): they load by name, code
files through the CLI with no training, and their model cards' headline figures are what they
measure. Fashion-MNIST comes from Debian's dataset-fashion-mnist package (.ci/run installs it);
without it the fashion figure's test skips and says so."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqdraw import VQDraw
from vqdraw.cli import main
from vqdraw.data import load_dataset
from vqdraw.evaluate.metrics.distortion import psnr_from_mse
from vqdraw.pretrained import NAMES, folder

FASHION_FILES = Path("/usr/share/datasets/fashion-mnist")


def card(name: str) -> str:
    return (Path(folder(name)).parent / f"{name}.md").read_text()


def _package_files() -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in Path(folder("mnist")).parent.rglob("*") if p.is_file()}


@pytest.fixture
def fashion_test(tmp_path):
    if not (FASHION_FILES / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed (apt install dataset-fashion-mnist)")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fashion-mnist").symlink_to(FASHION_FILES)
    return load_dataset("fashion-mnist", "test", tmp_path / "data")


def test_the_models_load_by_name():
    assert {"fashion", "text", "speech"} <= set(NAMES)
    fashion = VQDraw.from_pretrained("fashion")
    assert (fashion.options, fashion.stages, fashion.config.data_shape) == (64, 10, (1, 28, 28))
    text = VQDraw.from_pretrained("text")
    assert text.config.likelihood == "categorical" and text.config.data_shape[0] == 1
    assert VQDraw.load("pretrained:text").fingerprint() == text.fingerprint()
    speech = VQDraw.from_pretrained("speech")
    assert (speech.options, speech.stages, speech.config.data_shape) == (64, 20, (1, 40, 16))
    assert speech.config.modality == "speech" and speech.config.sample_rate == 8000


def test_fashion_card_states_the_measured_psnr(fashion_test):
    stated = float(re.search(r"first 1,000 test images[^*]*\*\*([\d.]+) dB\*\*", card("fashion")).group(1))
    model = VQDraw.from_pretrained("fashion")
    x = fashion_test.batch(range(1000))
    recon = model.decode(model.encode(x))
    measured = psnr_from_mse(float(torch.mean((recon - x) ** 2)))
    assert abs(measured - stated) < 0.01, (measured, stated)


def test_text_card_states_the_measured_accuracy():
    stated = float(re.search(r"first 500 held-out test sequences[^*]*\*\*([\d.]+)%\*\*", card("text")).group(1))
    model = VQDraw.from_pretrained("text")
    test = load_dataset("text-embedded", "test", size=tuple(model.config.data_shape[1:]))
    x = test.batch(range(500))
    recon = model.decode(model.encode(x))
    measured = 100 * float((torch.round(recon * 255) == torch.round(x * 255)).float().mean())
    assert abs(measured - stated) < 0.01, (measured, stated)


def test_text_files_round_trip_with_no_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _package_files()
    prose = ("The quick brown fox jumps over the lazy dog. " * 3).strip()
    Path("notes.txt").write_text(prose)
    assert main(["encode", "pretrained:text", "notes.txt", "-o", "n.vqd"]) == 0
    assert main(["decode", "pretrained:text", "n.vqd", "-o", "back.txt"]) == 0
    back = Path("back.txt").read_text()
    assert len(back) == len(prose)
    model = VQDraw.from_pretrained("text")
    chunks = math.ceil(len(prose) / model.config.data_shape[-1])
    assert Path("n.vqd").stat().st_size < 64 + chunks * math.ceil(model.stages * 6 / 8)
    assert _package_files() == before


def test_fashion_images_round_trip_with_no_training(tmp_path, monkeypatch, fashion_test):
    monkeypatch.chdir(tmp_path)
    x = fashion_test.batch(range(4))
    Path("clothes").mkdir()
    for i, item in enumerate(x):
        Image.fromarray((item[0].numpy() * 255).round().astype(np.uint8)).save(f"clothes/c{i}.png")
    assert main(["encode", "pretrained:fashion", "clothes", "-o", "c.vqd"]) == 0
    assert main(["decode", "pretrained:fashion", "c.vqd", "-o", "out"]) == 0
    assert len(list(Path("out").glob("*.png"))) == 4


def test_readme_block_of_the_other_models_runs(tmp_path, monkeypatch):
    """The README's second block under "Use it before training anything", as written."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Use it before training anything", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[1]
    lines = [line.split("  #")[0].split(" # ")[0] for line in block.splitlines() if line.startswith("vqdraw ")]
    assert any("pretrained:text" in line for line in lines) and any("pretrained:fashion" in line for line in lines)
    monkeypatch.chdir(tmp_path)
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, line
    assert Path("back.txt").stat().st_size > 0


# ------------------------------------------------------------------ pretrained:speech
@pytest.fixture
def held_out_prompts():
    from vqdraw.data import audio

    pytest.importorskip("soundfile")
    root = audio.asterisk_dir()
    if root is None:
        pytest.skip(audio.asterisk_missing())
    return audio.split_files(audio.audio_files(root), root, "test")


def test_speech_card_states_the_measured_intelligibility(held_out_prompts):
    """The card's test figure: STOI of the first 8 held-out prompts through real .vqd files (20
    stages), decoded as `vqdraw decode` does, and the log-spectral distance of all held-out blocks."""
    stoi = pytest.importorskip("pystoi").stoi
    from vqdraw.data.spectral import log_spectral_distance
    from vqdraw.modalities.audio import read_for_model
    from vqdraw.modalities.speech import compress_speech, decompress_speech

    text = card("speech")
    stated_stoi = float(re.search(r"first 8 held-out prompts[^*]*\*\*STOI ([\d.]+)\*\*", text).group(1))
    stated_lsd = float(re.search(r"all \d[\d,]* held-out blocks[^*]*\*\*([\d.]+) dB\*\*", text).group(1))
    model = VQDraw.from_pretrained("speech")
    scores = []
    for f in held_out_prompts[:8]:
        x = read_for_model(model, f)
        y, rate = decompress_speech(model, compress_speech(model, x))
        assert rate == 8000 and len(y) == len(x)
        scores.append(stoi(x, y, rate, extended=False))
    assert abs(float(np.mean(scores)) - stated_stoi) < 0.002, (np.mean(scores), stated_stoi)
    test = load_dataset("asterisk-en", "test", size=tuple(model.config.data_shape[1:]), sample_rate=8000)
    x = test.batch(range(len(test)))
    measured = log_spectral_distance(x, model.decode(model.encode(x)))
    assert abs(measured - stated_lsd) < 0.01, (measured, stated_lsd)


@pytest.mark.parametrize("rate,channels", [(8000, 1), (48000, 2)])
def test_speech_files_round_trip_with_no_training(tmp_path, monkeypatch, rate, channels):
    """The issue's promise: any mono or stereo WAV of 8-48 kHz in, a WAV of the same duration out
    (at the model's 8 kHz, or back at the file's rate with --rate)."""
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("scipy")
    monkeypatch.chdir(tmp_path)
    t = np.arange(3 * rate) / rate
    voice = (0.3 * np.sin(2 * np.pi * 180 * t + 2 * np.sin(2 * np.pi * 3 * t)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)))
    sf.write("in.wav", np.stack([voice] * channels, 1) if channels > 1 else voice, rate, subtype="PCM_16")
    before = _package_files()
    assert main(["encode", "pretrained:speech", "in.wav", "-o", "s.vqd"]) == 0
    assert main(["decode", "pretrained:speech", "s.vqd", "-o", "s.wav"]) == 0
    assert main(["decode", "pretrained:speech", "s.vqd", "-o", "back.wav", "--rate", str(rate)]) == 0
    assert sf.info("s.wav").samplerate == 8000 and sf.info("s.wav").frames == 24000
    assert sf.info("back.wav").samplerate == rate and sf.info("back.wav").frames == len(t)
    assert Path("s.vqd").stat().st_size * 8 / 3 < 1200  # bits per second of the real file, header included
    assert _package_files() == before
