"""Speech models: log-mel blocks, whole WAV files of any rate and channel count through .vqd and
back (at the model's rate or --rate), the header's frame arithmetic, a short training run that
lowers the loss and writes listenable outputs. Synthetic WAV fixtures only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile")
pytest.importorskip("scipy")

from vqdraw.cli import main  # noqa: E402
from vqdraw.compress.bitstream import SPEECH_HOP, header_size, read_header, read_vqd, write_vqd  # noqa: E402
from vqdraw.core.config import ModelConfig, RefinerConfig, TrainConfig  # noqa: E402
from vqdraw.core.model import VQDraw  # noqa: E402
from vqdraw.data import load_dataset  # noqa: E402
from vqdraw.data import spectral  # noqa: E402
from vqdraw.errors import ConfigError, InputError, InputWarning, VQDrawError  # noqa: E402
from vqdraw.modalities import modality_for  # noqa: E402
from vqdraw.modalities.audio import read_for_model  # noqa: E402
from vqdraw.modalities.speech import compress_speech, decompress_speech  # noqa: E402

RATE = 8000
BANDS, FRAMES = 16, 8


def voice(seconds: float, f0: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding pitch with syllable-like bursts and a little noise: deterministic."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.2 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def wav(path, samples, rate=RATE):
    sf.write(str(path), samples, rate, subtype="PCM_16")
    return path


def tiny_speech_model(stages: int = 4, options: int = 8):
    torch.manual_seed(0)
    refiner = RefinerConfig(down=(8,), down_kernel=3, body=(16,), up=(8,), head_kernel=3, output_scale=0.1)
    cfg = ModelConfig((1, BANDS, FRAMES), options, stages, stages, mean=(0.5,), std=(0.2,), refiner=refiner,
                      modality="speech", sample_rate=RATE)
    return VQDraw(cfg).eval()


@pytest.fixture
def voices(tmp_path):
    d = tmp_path / "voices"
    d.mkdir()
    for i in range(12):
        wav(d / f"prompt-{i:02d}.wav", voice(0.4 + 0.05 * i, 110 + 15 * i, seed=i))
    return d


def test_blocks_cover_every_frame_and_pad_with_silence():
    x = voice(0.5, 140)  # 4000 samples: 1 + 4000 // 64 = 63 frames
    levels = spectral.mel_levels(x, BANDS, RATE)
    assert levels.shape == (BANDS, spectral.frames_of(len(x))) == (BANDS, 63)
    blocks = spectral.mel_blocks(x, BANDS, FRAMES, RATE, pad=True)
    assert blocks.shape == (8, BANDS, FRAMES, 1) and blocks.dtype == np.uint8
    side_by_side = blocks[..., 0].transpose(1, 0, 2).reshape(BANDS, -1)
    assert np.array_equal(side_by_side[:, :63], levels) and not side_by_side[:, 63:].any()
    assert spectral.mel_blocks(x, BANDS, FRAMES, RATE).shape[0] == 7  # datasets drop the partial block
    assert spectral.mel_blocks(x, BANDS, FRAMES, RATE, stride=4).shape[0] == 14  # half-overlapping
    # levels back to the spectrogram within half a level
    back = spectral.log_mel_of_blocks(torch.from_numpy(blocks).permute(0, 3, 1, 2).float() / 255)[:, :63]
    mel = spectral.log_mel(x, BANDS, RATE).clamp(spectral.LOG_LOW, spectral.LOG_HIGH)
    step = (spectral.LOG_HIGH - spectral.LOG_LOW) / 255
    assert float((back - mel).abs().max()) <= step / 2 + 1e-6
    assert spectral.HOP == SPEECH_HOP  # the .vqd format's frame arithmetic is the representation's


def test_speech_header_records_length_and_rate_and_checks_the_frames():
    for length, count in ((1, 1), (FRAMES * 64 - 1, 1), (FRAMES * 64, 2), (5000, 10)):
        data = write_vqd(np.zeros((count, 3), np.int64), 8, (1, BANDS, FRAMES), b"f" * 16, modality="speech",
                         length=length, sample_rate=RATE)
        head = read_header(data)
        assert (head.modality, head.length, head.sample_rate, head.count) == ("speech", length, RATE, count)
        assert len(data) == header_size((1, BANDS, FRAMES), "speech") + head.payload_bytes
    with pytest.raises(InputError, match="does not fit"):  # 2 blocks cannot hold 1 + 4000 // 64 = 63 frames
        write_vqd(np.zeros((2, 3), np.int64), 8, (1, BANDS, FRAMES), b"f" * 16, modality="speech",
                  length=4000, sample_rate=RATE)
    with pytest.raises(InputError, match="sample rate"):
        write_vqd(np.zeros((1, 3), np.int64), 8, (1, BANDS, FRAMES), b"f" * 16, modality="speech", length=10)


def test_speech_config_is_checked():
    with pytest.raises(ConfigError, match="speech model"):
        ModelConfig((1, 256), mean=(0.5,), std=(0.25,), modality="speech", sample_rate=RATE)
    with pytest.raises(ConfigError, match="speech model"):
        ModelConfig((1, BANDS, FRAMES), modality="speech", sample_rate=0)
    cfg = tiny_speech_model().config
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and modality_for(cfg).name == "speech"


@pytest.mark.parametrize("rate,channels", [(8000, 1), (16000, 2), (44100, 1)])
def test_any_wav_round_trips_through_the_cli_at_the_models_rate_or_rate(tmp_path, capsys, rate, channels):
    model = tiny_speech_model()
    model.save(tmp_path / "m")
    x = voice(0.6, 130, rate=rate)
    src = wav(tmp_path / "in.wav", np.stack([x] * channels, 1) if channels > 1 else x, rate)
    out = tmp_path / "x.vqd"
    assert main(["encode", str(tmp_path / "m"), str(src), "-o", str(out)]) == 0
    io = capsys.readouterr()
    assert "bits/s" in io.out
    assert (rate != RATE or channels != 1) == ("warning:" in io.err)  # resampling or mixing is said
    data = out.read_bytes()
    head = read_header(data)
    n = round(len(x) * RATE / rate)
    assert (head.modality, head.sample_rate, head.length) == ("speech", RATE, n)
    assert head.count == -(-spectral.frames_of(n) // FRAMES)
    assert main(["decode", str(tmp_path / "m"), str(out), "-o", str(tmp_path / "back.wav")]) == 0
    back, got = sf.read(str(tmp_path / "back.wav"))
    assert got == RATE and len(back) == n
    samples, _ = decompress_speech(model, data)
    assert np.allclose(back, samples, atol=1 / 32768 + 1e-6)  # the file is the library's decoding
    assert main(["decode", str(tmp_path / "m"), str(out), "-o", str(tmp_path / "hi.wav"), "--rate", "16000"]) == 0
    hi, got = sf.read(str(tmp_path / "hi.wav"))
    assert got == 16000 and len(hi) == 2 * n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # said once already, by the command
        assert compress_speech(model, read_for_model(model, src)) == data  # deterministic


def test_decoding_repeats_and_fewer_stages_is_a_prefix(tmp_path):
    model = tiny_speech_model()
    data = compress_speech(model, voice(0.5, 150))
    a, _ = decompress_speech(model, data)
    b, _ = decompress_speech(model, data)
    assert np.array_equal(a, b)  # seeded Griffin-Lim
    short = read_vqd(data)
    part = write_vqd(short.codes[:, :2], short.K, short.data_shape, short.fingerprint, modality="speech",
                     length=short.length, sample_rate=short.sample_rate)
    assert np.array_equal(decompress_speech(model, part)[0], decompress_speech(model, data, stages=2)[0])


def test_rate_is_refused_for_other_models_and_checked(tmp_path, capsys):
    from vqdraw.compress.codec import DecodeOptions

    with pytest.raises(VQDrawError):
        DecodeOptions(rate=0)
    image = VQDraw(ModelConfig((1, 8, 8), 4, 2, 2, refiner=RefinerConfig(down=(4,), body=(4,), up=(4,))))
    image.save(tmp_path / "img")
    speech = tiny_speech_model()
    (tmp_path / "s.vqd").write_bytes(compress_speech(speech, voice(0.2, 150)))
    speech.save(tmp_path / "m")
    assert main(["decode", str(tmp_path / "m"), str(tmp_path / "s.vqd"), "-o", str(tmp_path / "o.wav"),
                 "--rate", "0"]) == 2
    assert main(["decode", str(tmp_path / "img"), str(tmp_path / "s.vqd"), "-o", str(tmp_path / "o")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2  # one line each


def test_training_lowers_the_loss_and_writes_wavs_and_spectrograms(voices, tmp_path, capsys):
    from vqdraw.training.train import fit

    model = tiny_speech_model(stages=4, options=8)
    train = load_dataset(f"audio:{voices}", "train", size=(BANDS, FRAMES), sample_rate=RATE)
    test = load_dataset(f"audio:{voices}", "test", size=(BANDS, FRAMES), sample_rate=RATE)
    assert train.data_shape == test.data_shape == (1, BANDS, FRAMES)
    x = test.batch(range(len(test)))
    before = spectral.log_spectral_distance(x, model.encode(x, return_reconstruction=True).reconstruction)
    cfg = TrainConfig(steps=40, batch=8, lr=3e-3, eval_every=40, save_every=40, log_every=10, eval_size=16)
    result = fit(model, train, test, cfg, tmp_path / "run", progress=False)
    model.eval()
    after = spectral.log_spectral_distance(x, model.encode(x, return_reconstruction=True).reconstruction)
    losses = [m["loss"] for m in result.metrics if "loss" in m]
    assert losses[-1] < losses[0] and after < before
    assert "test_lsd_db" in result.metrics[-1] or any("test_lsd_db" in m for m in result.metrics)
    run = tmp_path / "run"
    assert len(list((run / "samples").glob("*.wav"))) == 8
    assert sf.info(str(run / "samples" / "000.wav")).samplerate == RATE
    assert {p.name for p in (run / "reconstructions").iterdir()} >= {"original.wav", "reconstructed.wav", "pairs.png"}
    assert (run / "stages.png").stat().st_size > 1000 and (run / "samples.png").exists()
    assert main(["sample", str(run), "-n", "3"]) == 0
    assert len(list((run / "samples-0").glob("*.wav"))) == 3
    assert main(["reconstruct", str(run), "--dataset", f"audio:{voices}", "--count", "4"]) == 0
    assert "log-spectral distance" in capsys.readouterr().out
    assert main(["stages", str(run), "--dataset", f"audio:{voices}", "-o", str(tmp_path / "s.png")]) == 0


@pytest.mark.parametrize("samples", [1, 80, 128, 129, 1000])
def test_files_shorter_than_a_window_round_trip(tmp_path, samples):
    """One sample, or fewer than half an STFT window: one block, the same length back."""
    model = tiny_speech_model()
    x = voice(samples / RATE + 1e-9, 200)[:samples]
    data = compress_speech(model, x)
    assert read_header(data).count == -(-spectral.frames_of(samples) // FRAMES)
    y, rate = decompress_speech(model, data)
    assert rate == RATE and len(y) == samples and np.isfinite(y).all()
