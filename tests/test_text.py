"""Text models: characters through a VQ-DRAW model, the .vqd round trip, and the modality checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vqdraw.compress.bitstream import read_vqd
from vqdraw.core.config import ModelConfig, RefinerConfig
from vqdraw.data import dataset_modality, load_dataset
from vqdraw.data.base import DatasetError
from vqdraw.data.text import decode_characters, encode_characters, read_text_file, sequences_to_text
from vqdraw.errors import InputError
from vqdraw.core.model import VQDraw
from vqdraw.core.modality import modality_of
from vqdraw.modalities import check_modality
from vqdraw.compress.text import compress_text, decompress_text, lossless_bits_per_char, stage_report, text_data_for

SRC = Path(__file__).resolve().parents[1] / "src"


def tiny_text_model(length: int = 16) -> VQDraw:
    torch.manual_seed(0)
    cfg = ModelConfig((1, length), 4, 3, 2, mean=(0.5,), std=(0.5,), likelihood="categorical", categories=256,
                      refiner=RefinerConfig(down=(), body=(8,), up=(), head_kernel=3))
    return VQDraw(cfg).eval()


def test_vocabulary_round_trip_and_unknowns():
    text = "Plain ASCII, “quotes” — dashes… café\n\ttab"
    assert decode_characters(encode_characters(text)) == text
    assert decode_characters(encode_characters("ő")) == "o"  # NFKD fold
    assert decode_characters(encode_characters("漢")) == "\ufffd"


def test_embedded_text_is_real_prose():
    train = load_dataset("text-embedded", "train")
    assert train.data.shape[1:] == (128, 1)
    line = sequences_to_text(train.batch([0]))[0]
    assert sum(ch.isalpha() for ch in line) > 40
    assert dataset_modality("text-embedded") == "text" and dataset_modality("text:/x") == "text"


def test_encode_vqd_decode_gives_model_decode_characters():
    model = tiny_text_model()
    text = "The quick brown fox jumps over the lazy dog. " * 2  # 90 characters: 6 chunks of 16, padded
    assert len(text) % 16 != 0
    data = compress_text(model, text)
    vqd = read_vqd(data)
    assert vqd.modality == "text" and vqd.length == len(text) and vqd.count == -(-len(text) // 16)
    decoded = decompress_text(model, data)
    assert len(decoded) == len(text)
    expected = "".join(sequences_to_text(model.decode(torch.from_numpy(vqd.codes))))[: len(text)]
    assert decoded == expected
    assert model.encode(text_data_for(model, text)).tolist() == vqd.codes.tolist()


def test_stage_report_and_lossless(tmp_path):
    model = tiny_text_model()
    rows = stage_report(model, text_data_for(model, "abcdefgh" * 8), stages=[1, 3])
    assert [r["stages"] for r in rows] == [1, 3]
    assert all(0 <= r["char_accuracy"] <= 1 and r["bits_per_char"] > 0 for r in rows)
    assert rows[1]["bits_per_char"] <= rows[0]["bits_per_char"] + 1e-6  # greedy codes never raise the loss
    lossless = lossless_bits_per_char("abc" * 1000)
    assert lossless["lzma"] < 8 and lossless["utf-8 bytes"] == 8


def test_non_utf8_is_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe")
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_text_file(bad)
    model = tiny_text_model()
    model.save(tmp_path / "m")
    proc = subprocess.run([sys.executable, "-m", "vqdraw.cli", "encode", str(tmp_path / "m"), str(bad),
                           "-o", str(tmp_path / "o.vqd")], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "not UTF-8" in proc.stderr


def test_modalities_refuse_each_other():
    text_cfg = tiny_text_model().config
    assert modality_of(text_cfg) == "text"
    with pytest.raises(InputError, match="text model"):
        check_modality(text_cfg, "image", "folder:x")
    image_cfg = ModelConfig((1, 28, 28))
    with pytest.raises(InputError, match="holds text data.*image model"):
        check_modality(image_cfg, dataset_modality("text-embedded"), "dataset text-embedded")
    with pytest.raises(InputError, match="not a text model"):
        decompress_text(VQDraw(image_cfg), b"")


def tiny_author_text_model(dilations=(1, 2, 4), length: int = 32, stages: int = 2) -> VQDraw:
    """The author's text refiner (dilated residual blocks, LayerNorm, softmax input), made small."""
    torch.manual_seed(0)
    refiner = RefinerConfig(down=(), body=(16,), up=(), pre_head=(16,), head_kernel=1, res_expand=2,
                            dilations=tuple(dilations), softmax_input=True)
    cfg = ModelConfig((1, length), 8, stages, stages, mean=(0.5,), std=(0.5,), likelihood="categorical",
                      categories=256, refiner=refiner)
    return VQDraw(cfg)


def test_text_preset_is_the_authors_dilated_refiner():
    from vqdraw.core.config import get_preset
    from vqdraw.core.sizing import estimate_size

    cfg = get_preset("text").model
    assert cfg.refiner.dilations == (1, 2, 4, 8, 16, 32) * 2 and cfg.refiner.softmax_input
    model = VQDraw(cfg)
    assert estimate_size(cfg)["parameters"] == sum(p.numel() for p in model.parameters())
    net = model.refiner.segments[0]
    # it reads V = 256 softmax channels, not the 16 canvas features; one block per dilation
    assert net.embed.in_channels == 256
    assert [block.convs[0].dilation[0] for block in net.blocks] == list(cfg.refiner.dilations)


def test_softmax_input_needs_a_categorical_canvas():
    from vqdraw.errors import ConfigError

    with pytest.raises(ConfigError, match="softmax_input"):
        ModelConfig((1, 32), 8, 2, 2, refiner=RefinerConfig(down=(), body=(16,), up=(), softmax_input=True))
    with pytest.raises(ConfigError, match="dilations"):
        ModelConfig((1, 28, 28), refiner=RefinerConfig(dilations=(1, 2)))


def test_authors_text_refiner_trains_and_round_trips():
    model = tiny_author_text_model()
    text = load_dataset("text-embedded", "train")
    x = text.batch(list(range(16)))[:, :, :32]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = model.loss(x)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert float(model.loss(x)["loss"]) < 0.8 * first
        result = model.encode(x, return_reconstruction=True)
        assert torch.equal(model.decode(result.codes), result.reconstruction)


def test_stages_of_a_text_model_are_lines_and_a_picture(tmp_path):
    from PIL import Image

    model = tiny_text_model()
    model.save(tmp_path / "m")
    src = tmp_path / "in.txt"
    src.write_text("Stage by stage, a line of text gets refined.\n")
    out = tmp_path / "st.png"
    proc = subprocess.run([sys.executable, "-m", "vqdraw.cli", "stages", str(tmp_path / "m"), str(src), "-o", str(out)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "", "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    lines = out.with_suffix(".txt").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["stage   1", "stage   2", "stage   3"]
    # each line is what decoding that many codes gives
    codes = model.encode(text_data_for(model, src.read_text()))
    from vqdraw.compress.text import format_lines

    second = sequences_to_text(model.decode(codes[:1], stages=2))
    assert lines[1][len("stage   2: "):] == format_lines(second).rstrip("\n")
    assert Image.open(out).size[0] > 300


def test_a_text_model_of_another_length_reads_the_datasets_rechunked(tmp_path):
    from vqdraw.data.text import rechunk

    test = load_dataset("text-embedded", "test")
    short = rechunk(test, 32)
    assert len(short) == 4 * len(test)
    assert sequences_to_text(short.batch(range(4))) == [sequences_to_text(test.batch([0]))[0][i:i + 32]
                                                        for i in range(0, 128, 32)]
    with pytest.raises(DatasetError, match="divides 128"):
        rechunk(test, 48)
    # and through the CLI: a (1, 32) model of the author's refiner trains on text-embedded
    proc = subprocess.run([sys.executable, "-m", "vqdraw.cli", "train", "--preset", "text", "--dataset", "text-embedded",
                           "--data-shape", "1", "32", "--stages", "2", "--segment", "2", "--options", "4", "--batch", "4",
                           "--steps", "2", "--eval-size", "8", "--eval-every", "2", "--save-every", "2", "--no-progress",
                           "--run", str(tmp_path / "run")], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": "", "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    assert "character accuracy" in proc.stderr
    assert all(len(line) == 32 for line in (tmp_path / "run" / "samples.txt").read_text().splitlines())
