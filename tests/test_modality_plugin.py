"""A new kind of data is one class: a modality defined here, outside src/, registered through
vqdraw.modalities.register, trains (its own metric in metrics.jsonl and the summary), writes .vqd
files and decodes them, and its model folder loads again, with no change under src/. A second one
has settings of its own (ModelConfig.modality_options, checked by it) and a .vqd layout of its own
(its modality byte and a header block only it reads), used through the command line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vqdraw import ConfigError, ModelConfig, RefinerConfig, TrainConfig, VQDraw, fit
from vqdraw.compress.codec import compress, decompress
from vqdraw.data.base import Dataset
from vqdraw.modalities import ImageModality, modality_for, register
from vqdraw.modalities.sequence import SequenceModality
from vqdraw.modalities.base import evaluation_loss


class Heatmap(ImageModality):
    """Single-channel intensity maps: pictures like images, scored by their peak's position."""

    name = "heatmap"
    noun = "map"
    element = "cell"
    headline = ("test_peak_hit", "peak", ".2f")

    def test_metrics(self, model, data, recon):
        same = data.flatten(1).argmax(1) == recon.flatten(1).argmax(1)
        return {"test_peak_hit": same.float().mean().item()}

    def summary(self, metrics, config=None):
        return f"test loss {evaluation_loss(metrics):.4f}, peak found in {100 * metrics['test_peak_hit']:.0f}% of maps"


@pytest.fixture(scope="module")
def heatmap():
    return register(Heatmap(), stored_as="image")


def _maps(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:8, 0:8]
    centres = rng.integers(1, 7, (n, 2))
    maps = np.exp(-((y[None] - centres[:, :1, None]) ** 2 + (x[None] - centres[:, 1:, None]) ** 2) / 4.0)
    return Dataset((maps[..., None] * 255).round().astype(np.uint8))


def test_a_registered_modality_trains_codes_and_decodes(heatmap, tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig((1, 8, 8), 4, 3, 3, refiner=RefinerConfig(down=(8,), body=(8,), up=(8,)), modality="heatmap")
    model = VQDraw(cfg)
    assert modality_for(model.config) is heatmap
    train_cfg = TrainConfig(steps=4, batch=8, eval_every=2, save_every=4, log_every=1, eval_size=8)
    result = fit(model, _maps(64, 0), _maps(8, 1), train_cfg, tmp_path / "run", progress=False)
    evaluation = [r for r in result.metrics if "test_peak_hit" in r]
    assert evaluation and 0 <= evaluation[-1]["test_peak_hit"] <= 1
    assert "peak found in" in heatmap.summary(evaluation[-1])
    assert (tmp_path / "run" / "samples.png").is_file()  # its pictures: the image modality's

    loaded = VQDraw.load(tmp_path / "run")
    assert loaded.config.modality == "heatmap"
    maps = _maps(5, 2).batch(range(5))
    data = compress(loaded, maps)
    recon, vqd = decompress(loaded, data)
    assert vqd.modality == "image"  # laid out as the modality it is stored as
    assert torch.equal(recon, loaded.decode(loaded.encode(maps)))
    saved = json.loads((tmp_path / "run" / "train.json").read_text())
    assert saved["model"]["modality"] == "heatmap"


def test_an_unregistered_modality_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="vqdraw.modalities.register"):
        ModelConfig((1, 8, 8), modality="not-registered")


def test_register_refuses_a_taken_name():
    from vqdraw.errors import InputError

    class Again(ImageModality):
        name = "image"

    with pytest.raises(InputError, match="new"):
        register(Again(), stored_as="image")



class Series(SequenceModality):
    """Sensor readings, one number a line in a .csv file, of any length and range. The model sees
    chunks of its length scaled to [0, 1]; the file records how many readings there were and their
    range in the modality's own header block, so decoding gives back the readings in their units.
    Its setting: the sampling rate, ``modality_options={"rate_hz": ...}``."""

    name = "series"
    noun = "chunk"
    file_suffixes = (".csv",)
    BLOCK = struct.Struct("<Qdd")  # readings, lowest, highest

    def check_config(self, config):
        if len(config.data_shape) != 2 or config.data_shape[0] != 1:
            raise ConfigError(f"a series model takes chunks of shape (1, L), got {config.data_shape}")
        rate = config.modality_options.get("rate_hz")
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ConfigError(f"a series model needs modality_options rate_hz >= 1, got {rate!r}")

    def encode(self, model, files, out, options):
        from vqdraw.compress.codec import compress_codes, encode_images

        values = np.loadtxt(files[0], ndmin=1)
        lo, hi = float(values.min()), float(values.max())
        length = model.config.data_shape[-1]
        padded = np.full(-(-len(values) // length) * length, lo)
        padded[: len(values)] = values
        x = torch.from_numpy((padded - lo) / ((hi - lo) or 1.0)).float().view(-1, 1, length)
        codes = encode_images(model, x, options.stages, policy=options.policy)
        Path(out).write_bytes(compress_codes(model, codes, extra=self.BLOCK.pack(len(values), lo, hi)))
        return f"{out}: {len(values)} readings at {model.config.modality_options['rate_hz']} Hz"

    def decode(self, model, data, out, options, *, source):
        from vqdraw.compress.codec import read_file

        vqd = read_file(model, data)
        count, lo, hi = self.BLOCK.unpack(vqd.extra)
        recon = model.decode(torch.from_numpy(vqd.codes)).flatten()[:count].double().numpy()
        Path(out).mkdir(parents=True, exist_ok=True)
        np.savetxt(Path(out) / "000000.csv", lo + recon * (hi - lo))
        return f"{out}: {count} readings decoded from {source}"


@pytest.fixture(scope="module")
def series():
    return register(Series(), code=200, dims=2)


def _series_config(**options):
    return ModelConfig((1, 16), 4, 3, 3, refiner=RefinerConfig(down=(), body=(8,), up=()), modality="series",
                       modality_options=options)


def test_a_modality_with_its_own_settings_and_vqd_layout(series, tmp_path, monkeypatch):
    from vqdraw.cli import main
    from vqdraw.compress.bitstream import read_header

    with pytest.raises(ConfigError, match="rate_hz >= 1"):  # its settings are checked by it
        _series_config(rate_hz=0)
    with pytest.raises(ConfigError, match="rate_hz"):
        _series_config()
    torch.manual_seed(0)
    model = VQDraw(_series_config(rate_hz=50, unit="mV"))
    t = np.arange(64 * 16)
    waves = Dataset((127.5 + 120 * np.sin(t / 7.0)).round().astype(np.uint8).reshape(64, 16, 1))
    fit(model, waves, waves, TrainConfig(steps=2, batch=8, eval_every=2, save_every=2, eval_size=8),
        tmp_path / "run", progress=False)
    loaded = VQDraw.load(tmp_path / "run")
    assert loaded.config.modality_options == {"rate_hz": 50, "unit": "mV"}
    assert loaded.fingerprint() == model.fingerprint()

    monkeypatch.chdir(tmp_path)
    readings = 3.0 + 2.5 * np.sin(np.arange(37) / 4.0)  # 37 readings in volts: 3 chunks, the last padded
    np.savetxt("in.csv", readings)
    assert main(["encode", "run", "in.csv", "-o", "s.vqd"]) == 0
    data = Path("s.vqd").read_bytes()
    header = read_header(data)
    assert (data[4], data[22], header.modality) == (2, 200, "series")  # version 2, its own modality byte
    assert struct.unpack("<Qdd", header.extra) == (37, readings.min(), readings.max())
    assert header.count == 3 and header.header_bytes == 24 + 2 * 2 + 8 + 2 + 24 + 4  # ... the block, CRC
    assert main(["decode", "run", "s.vqd", "-o", "back"]) == 0
    back = np.loadtxt("back/000000.csv")
    assert back.shape == (37,) and readings.min() - 1e-9 <= back.min() and back.max() <= readings.max() + 1e-9
    x = torch.from_numpy(np.concatenate([(readings - readings.min()) / np.ptp(readings),
                                         np.zeros(11)])).float().view(3, 1, 16)
    expected = loaded.decode(loaded.encode(x)).flatten()[:37].double().numpy() * np.ptp(readings) + readings.min()
    assert np.allclose(back, expected, atol=1e-6)  # what the model reconstructs, in the file's units

    broken = bytearray(data)
    at = 24 + 2 * 2 + 8  # magic .. r, the shape, K n count: then the block's length
    broken[at: at + 2] = struct.pack("<H", 5000)  # a header block longer than allowed
    from vqdraw.compress.bitstream import VqdFormatError

    with pytest.raises(VqdFormatError, match="header block of 5000 bytes"):
        read_header(bytes(broken))


def test_register_refuses_a_bad_layout(series):
    from vqdraw.errors import InputError

    class Other(SequenceModality):
        name = "other_series"

    with pytest.raises(InputError, match="code 200 is taken"):
        register(Other(), code=200, dims=2)
    with pytest.raises(InputError, match="128..255"):
        register(Other(), code=6, dims=2)
    with pytest.raises(InputError, match="one of the two"):
        register(Other(), stored_as="sequence", code=201, dims=2)
    with pytest.raises(ConfigError, match="modality_options"):  # the built-in modalities have none
        ModelConfig((1, 8, 8), modality_options={"rate_hz": 5})


# --- every config names its modality -------------------------------------------------------------

def test_a_config_records_the_modality_its_shape_implies_and_writes_the_same_bytes_as_before():
    from vqdraw.core.config import get_preset

    assert ModelConfig((1, 28, 28)).modality == "image"
    assert ModelConfig((1, 64), refiner=RefinerConfig(down=(8,), up=(8,)), mean=(0.5,), std=(0.5,)).modality == "sequence"
    assert get_preset("voxels32").model.modality == "volume"
    text = get_preset("text").model
    assert text.modality == "text" and "modality" not in text.to_dict()  # implied: written as before
    old = text.to_dict()  # a config file from before the modality was recorded
    assert ModelConfig.from_dict(json.loads(json.dumps(old))).modality == "text"
    mnist = VQDraw.from_preset("mnist")
    assert "modality" not in mnist.config.to_dict()
    assert ModelConfig.from_dict(mnist.config.to_dict()) == mnist.config


def test_a_named_modality_the_shape_does_not_imply_is_kept_through_the_config_file():
    from vqdraw.core.config import get_preset

    text = get_preset("text").model
    seq = ModelConfig(**{**{f: getattr(text, f) for f in ("data_shape", "options", "stages", "segment", "mean", "std",
                                                           "refiner", "likelihood", "categories")},
                         "modality": "sequence"})
    assert seq.modality == "sequence" and seq.to_dict()["modality"] == "sequence"
    again = ModelConfig.from_dict(json.loads(json.dumps(seq.to_dict())))
    assert again.modality == "sequence" and modality_for(again).name == "sequence"
    assert modality_for(text).name == "text"


def test_a_modality_that_does_not_fit_the_shape_is_refused_and_preset_overrides_follow_the_shape():
    from dataclasses import replace

    image = ModelConfig((1, 28, 28))  # names none: a copy with another shape takes that shape's
    assert replace(image, data_shape=(1, 64)).modality == "sequence"
    assert replace(image, data_shape=(1, 16, 16, 16)).modality == "volume"
    named = ModelConfig((1, 28, 28), modality="image")
    assert named == image and named.to_dict() == image.to_dict()
    with pytest.raises(ConfigError, match=r"image model takes data of shape \(C, H, W\)"):
        replace(named, data_shape=(1, 64))
    with pytest.raises(ConfigError, match="volume model"):
        ModelConfig((1, 28, 28), modality="volume")
    with pytest.raises(ConfigError, match="categorical"):
        ModelConfig((1, 64), refiner=RefinerConfig(down=(8,), up=(8,)), mean=(0.5,), std=(0.5,), modality="text")
    # presets name none: their overrides take the new shape's modality; a named one is kept
    assert VQDraw.from_preset("mnist", data_shape=(1, 64)).config.modality == "sequence"
    assert VQDraw.from_preset("mnist", data_shape=(1, 16, 16, 16)).config.modality == "volume"
    with pytest.raises(ConfigError, match="image model"):
        VQDraw.from_preset("mnist", data_shape=(1, 64), modality="image")


def test_a_plug_in_says_what_to_give_it_in_its_own_words_and_reads_what_its_layout_reads():
    from vqdraw.errors import InputError
    from vqdraw.modalities import check_modality

    class Quiet(SequenceModality):  # says nothing: its files may not be the built-in class's
        name = "quiet_series"

    class Chatty(SequenceModality):
        name = "chatty_series"
        give = "CSV files of readings"

    class Thermal(ImageModality):
        name = "thermal"

    register(Quiet(), code=211, dims=2)
    register(Chatty(), code=212, dims=2)
    register(Thermal(), stored_as="image")
    small = dict(refiner=RefinerConfig(down=(8,), up=(8,)), mean=(0.5,), std=(0.5,))
    with pytest.raises(InputError, match="give it quiet_series data$"):
        check_modality(ModelConfig((1, 64), modality="quiet_series", **small), "image", "photos")
    with pytest.raises(InputError, match="give it CSV files of readings$"):
        check_modality(ModelConfig((1, 64), modality="chatty_series", **small), "image", "photos")
    thermal = ModelConfig((1, 8, 8), modality="thermal")
    check_modality(thermal, "image", "photos")  # the image layout's files
    with pytest.raises(InputError, match="holds volume data, but this model is a thermal model"):
        check_modality(thermal, "volume", "grids")
    with pytest.raises(InputError, match="holds  data"):  # no modality at all is no modality of ours
        check_modality(ModelConfig((1, 28, 28)), "", "x")
