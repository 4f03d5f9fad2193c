"""Audio models: mu-law clips, the by-file split, whole WAV files through .vqd, bad inputs refused,
a short training run that lowers the loss and writes listenable outputs. Synthetic WAV fixtures only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile")

from vqdraw.compress.bitstream import header_size, read_header, read_vqd, write_vqd  # noqa: E402
from vqdraw.cli import main  # noqa: E402
from vqdraw.core.config import ModelConfig, RefinerConfig, TrainConfig  # noqa: E402
from vqdraw.data import dataset_modality, load_dataset  # noqa: E402
from vqdraw.data import audio as adata  # noqa: E402
from vqdraw.data.base import DatasetError  # noqa: E402
from vqdraw.errors import ConfigError  # noqa: E402
from vqdraw.modalities import modality_for, path_modality  # noqa: E402
from vqdraw.modalities.audio import compress_audio, decompress_audio, snr_db  # noqa: E402
from vqdraw.core.model import VQDraw  # noqa: E402

RATE = 8000


def tone(seconds: float, freq: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A tone with a slow vibrato and a little noise: speech-like energy, deterministic."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * freq * t + 3 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def wav(path, samples, rate=RATE, **kw):
    sf.write(str(path), samples, rate, subtype="PCM_16", **kw)
    return path


def tiny_audio_model(length: int = 256, stages: int = 3, options: int = 4, likelihood="discretized-logistic"):
    torch.manual_seed(0)
    refiner = RefinerConfig(down=(), body=(8,), up=(), pre_head=(8,), head_kernel=1, res_expand=2,
                            dilations=(1, 2, 4))
    cfg = ModelConfig((1, length), options, stages, stages, mean=(0.5,), std=(0.25,), refiner=refiner,
                      likelihood=likelihood, modality="audio", sample_rate=RATE)
    return VQDraw(cfg).eval()


@pytest.fixture
def speech_dir(tmp_path):
    d = tmp_path / "speech"
    (d / "digits").mkdir(parents=True)
    for i in range(12):
        wav(d / ("digits" if i % 2 else ".") / f"prompt-{i:02d}.wav", tone(0.2 + 0.02 * i, 150 + 20 * i, seed=i))
    wav(d / "hi-rate.wav", tone(0.3, 300, rate=16000), rate=16000)  # resampled to 8 kHz by the reader
    return d


def test_mu_law_round_trips_every_level_and_is_monotone():
    levels = np.arange(256)
    samples = adata.mu_law_decode(levels)
    assert np.all(np.diff(samples) > 0) and samples[0] == -1 and samples[-1] == 1
    assert np.array_equal(adata.mu_law_encode(samples), levels)
    x = np.linspace(-1, 1, 10001)
    err = np.abs(adata.mu_law_decode(adata.mu_law_encode(x)) - x)
    assert err[np.abs(x) < 0.01].max() < 5e-4 < err.max() < 0.03  # fine steps near silence, coarse when loud


def test_split_is_by_file_deterministic_and_complete(speech_dir):
    files = adata.audio_files(speech_dir)
    train = adata.split_files(files, speech_dir, "train")
    test = adata.split_files(files, speech_dir, "test")
    assert test and train and not set(train) & set(test) and sorted(train + test) == files
    assert adata.split_files(files, speech_dir, "test") == test
    tr = load_dataset(f"audio:{speech_dir}", "train", size=(256,), sample_rate=RATE)
    te = load_dataset(f"audio:{speech_dir}", "test", size=(256,), sample_rate=RATE)
    clips = sum(len(adata.read_audio(f)[0]) * RATE // adata.read_audio(f)[1] // 256 for f in files)
    assert tr.data_shape == te.data_shape == (1, 256) and abs(len(tr) + len(te) - clips) <= 1
    assert dataset_modality(f"audio:{speech_dir}") == dataset_modality("asterisk-en") == "audio"
    assert path_modality(files[0]) == path_modality(speech_dir) == "audio"


def test_resampling_keeps_duration_and_pitch(tmp_path):
    x = tone(0.5, 440, rate=16000)
    y = adata.resample(x, 16000, RATE)
    assert len(y) == len(x) // 2
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * RATE / len(y) - 440) < 10


def test_whole_file_round_trip_through_the_cli(tmp_path, capsys):
    model = tiny_audio_model()
    model.save(tmp_path / "m")
    src = wav(tmp_path / "speech.wav", tone(0.3, 220))  # 2400 samples: 9 clips of 256, the last partial
    out = tmp_path / "x.vqd"
    assert main(["encode", str(tmp_path / "m"), str(src), "-o", str(out)]) == 0
    assert "bits/s" in capsys.readouterr().out
    data = out.read_bytes()
    head = read_header(data)
    assert (head.modality, head.length, head.sample_rate, head.count) == ("audio", 2400, RATE, 10)
    assert len(data) == header_size((1, 256), "audio") + head.payload_bytes
    assert main(["decode", str(tmp_path / "m"), str(out), "-o", str(tmp_path / "back.wav")]) == 0
    back, rate = sf.read(str(tmp_path / "back.wav"))
    assert rate == RATE and len(back) == 2400
    # the decoded file is the model's decoding of the clips, cut to the length
    samples, _ = decompress_audio(model, data)
    assert np.allclose(back, samples, atol=1 / 32768 + 1e-6)
    assert compress_audio(model, adata.read_audio(src)[0]) == data  # deterministic


def test_audio_vqd_header_layout():
    codes = np.zeros((3, 2), dtype=np.int64)
    data = write_vqd(codes, 4, (1, 100), b"\0" * 16, modality="audio", length=250, sample_rate=16000)
    assert len(data) == 24 + 2 * 2 + 8 + 12 + 2 + 4 and data[22] == 5  # 3 codes of 2x2 bits: 2 bytes
    vqd = read_vqd(data)
    assert (vqd.length, vqd.sample_rate, vqd.modality) == (250, 16000, "audio")
    with pytest.raises(Exception, match="does not fit"):
        write_vqd(codes, 4, (1, 100), b"\0" * 16, modality="audio", length=301, sample_rate=8000)
    with pytest.raises(Exception, match="sample rate"):
        write_vqd(codes, 4, (1, 100), b"\0" * 16, modality="audio", length=250)


@pytest.mark.parametrize("case", ["truncated", "empty", "garbage", "two", "nan", "inf"])
def test_bad_audio_is_one_line_exit_2(tmp_path, capsys, case):
    model = tiny_audio_model()
    model.save(tmp_path / "m")
    good = wav(tmp_path / "good.wav", tone(0.1, 200))
    bad = tmp_path / f"{case}.wav"
    if case == "truncated":
        bad.write_bytes(good.read_bytes()[:-500])
        expect = "truncated audio file"
    elif case == "empty":
        bad.write_bytes(b"")
        expect = "empty file"
    elif case in ("nan", "inf"):  # a float WAV (issue 35): accepted before, NaN became arbitrary levels
        samples = tone(0.1, 200).astype(np.float32)
        samples[[5, 50]] = np.nan if case == "nan" else np.inf
        sf.write(str(bad), samples, RATE, subtype="FLOAT", format="WAV")
        expect = "samples are NaN or infinite (the first at sample 5; 2 of the"
    elif case == "garbage":
        bad.write_bytes(b"RIFF\x0c\x00\x00\x00WAVEjunkjunk")
        expect = "not readable audio"
    else:
        bad = good
        expect = "give one audio file"
    files = [str(good), str(bad)] if case == "two" else [str(bad)]
    rc = main(["encode", str(tmp_path / "m"), *files, "-o", str(tmp_path / "o.vqd")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "o.vqd").exists()


@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2), (8000, 2), (48000, 1)])
def test_any_rate_and_channel_count_is_converted_and_said(tmp_path, capsys, rate, channels):
    """encode resamples to the model's rate and mixes down to mono itself, saying so on stderr;
    the result is what encoding the converted samples gives."""
    model = tiny_audio_model()
    model.save(tmp_path / "m")
    t = np.arange(int(0.3 * rate)) / rate
    left, right = 0.3 * np.sin(2 * np.pi * 200 * t), 0.2 * np.sin(2 * np.pi * 330 * t)
    samples = np.stack([left, right], 1) if channels == 2 else left
    src = wav(tmp_path / "in.wav", samples, rate=rate)
    assert main(["encode", str(tmp_path / "m"), str(src), "-o", str(tmp_path / "o.vqd")]) == 0
    err = capsys.readouterr().err
    if rate != RATE:
        assert f"resampled {rate} Hz to {RATE} Hz" in err
    if channels == 2:
        assert "mixed 2 channels down to mono" in err
    mono = samples.mean(1) if channels == 2 else samples
    expected = adata.resample(mono.astype(np.float32), rate, RATE)
    data = (tmp_path / "o.vqd").read_bytes()
    quantised = adata.read_audio(src, mix=True)[0]  # the file's 16-bit samples, mixed down
    assert compress_audio(model, adata.resample(quantised, rate, RATE)) == data
    assert abs(len(expected) - decompress_audio(model, data)[0].shape[0]) <= 1
    assert main(["decode", str(tmp_path / "m"), str(tmp_path / "o.vqd"), "-o", str(tmp_path / "back.wav")]) == 0
    assert sf.info(str(tmp_path / "back.wav")).samplerate == RATE


def test_audio_config_is_checked():
    with pytest.raises(ConfigError, match="mono clips"):
        ModelConfig((2, 256), mean=(0.5, 0.5), std=(0.25, 0.25), modality="audio", sample_rate=RATE)
    with pytest.raises(ConfigError, match="mono clips"):
        ModelConfig((1, 256), mean=(0.5,), std=(0.25,), modality="audio", sample_rate=0)
    with pytest.raises(ConfigError, match="sample_rate is for audio"):
        ModelConfig((1, 256), mean=(0.5,), std=(0.25,), sample_rate=RATE)
    cfg = tiny_audio_model().config
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and modality_for(cfg).name == "audio"
    assert "modality" not in ModelConfig().to_dict()  # older configs keep their bytes


def test_training_lowers_the_loss_and_writes_wavs(speech_dir, tmp_path, capsys):
    from vqdraw.training.train import fit

    model = tiny_audio_model(stages=4, options=8)
    train = load_dataset(f"audio:{speech_dir}", "train", size=(256,), sample_rate=RATE)
    test = load_dataset(f"audio:{speech_dir}", "test", size=(256,), sample_rate=RATE)
    x = test.batch(range(len(test)))
    before = model.encode(x, return_reconstruction=True).reconstruction
    cfg = TrainConfig(steps=40, batch=8, lr=3e-3, eval_every=40, save_every=40, log_every=10, eval_size=16)
    result = fit(model, train, test, cfg, tmp_path / "run", progress=False)
    model.eval()
    after = model.encode(x, return_reconstruction=True).reconstruction
    losses = [m["loss"] for m in result.metrics if "loss" in m]
    assert losses[-1] < losses[0]
    ref = adata.data_to_samples(x)
    assert snr_db(ref, adata.data_to_samples(after)) > snr_db(ref, adata.data_to_samples(before))
    run = tmp_path / "run"
    assert len(list((run / "samples").glob("*.wav"))) == 8
    pairs = sorted(p.name for p in (run / "reconstructions").glob("*.wav"))
    assert "000-original.wav" in pairs and "000-reconstructed.wav" in pairs
    assert sf.info(str(run / "samples" / "000.wav")).samplerate == RATE
    assert (run / "stages.png").stat().st_size > 1000 and (run / "reconstructions.png").exists()
    # the verbs write WAVs too
    assert main(["sample", str(run), "-n", "3"]) == 0
    assert len(list((run / "samples-0").glob("*.wav"))) == 3
    assert main(["reconstruct", str(run), "--dataset", f"audio:{speech_dir}", "--count", "2"]) == 0
    assert "SNR" in capsys.readouterr().out
    assert main(["stages", str(run), "--dataset", f"audio:{speech_dir}", "-o", str(tmp_path / "s.png")]) == 0


def test_asterisk_en_missing_says_how_to_install(monkeypatch, capsys):
    from vqdraw.cli import datasets as datasets_cli

    monkeypatch.setattr(adata, "ASTERISK_DIRS", ("/nonexistent/asterisk",))
    with pytest.raises(DatasetError, match="apt-get install asterisk-core-sounds-en-wav"):
        load_dataset("asterisk-en", "test")
    assert main(["datasets"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("asterisk-en"))
    assert "missing" in row and "apt-get install asterisk-core-sounds-en-wav" in row
    assert datasets_cli  # the verb's module
