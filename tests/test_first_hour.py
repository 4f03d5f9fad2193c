"""A fresh user following the README (issue 32): help with no arguments, the dataset list, exporting
dataset items as files, resuming a time-budgeted run, prior fallback, outputs that do not overwrite."""

import pytest

from vqdraw.cli import main


def test_no_arguments_prints_the_help(capsys):
    assert main([]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: vqdraw")
    assert "images, text, volumes and audio" in out
    assert "encode" in out and "decode" in out


def test_datasets_lists_every_kind_of_name(capsys, tmp_path):
    assert main(["datasets", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("text-embedded", "text:PATH", "voxels:PATH", "audio:PATH", "folder:PATH"):
        assert name in out
    fashion = next(line for line in out.splitlines() if line.startswith("fashion-mnist"))
    assert "dataset-fashion-mnist" in fashion or "system package" in fashion


def test_fashion_mnist_falls_back_to_the_system_package(tmp_path, monkeypatch):
    from test_data_readers import write_idx_set

    from vqdraw.data import download
    from vqdraw.data.idx import load_fashion_mnist

    system = tmp_path / "usr" / "fashion-mnist"
    write_idx_set(system, n_train=4)
    monkeypatch.setitem(download.SYSTEM_DIRS, "fashion-mnist", (system, "dataset-fashion-mnist"))
    assert download.status("fashion-mnist", tmp_path / "empty").complete
    assert len(load_fashion_mnist("train", tmp_path / "empty")) == 4
    own = tmp_path / "mine"
    write_idx_set(own / "fashion-mnist", n_train=3)  # the data dir's own copy comes first
    assert len(load_fashion_mnist("train", own)) == 3


def test_fashion_mnist_missing_everywhere_names_the_package(tmp_path, monkeypatch):
    from vqdraw.data import download
    from vqdraw.data.base import DatasetError
    from vqdraw.data.idx import load_fashion_mnist

    monkeypatch.setitem(download.SYSTEM_DIRS, "fashion-mnist", (tmp_path / "none", "dataset-fashion-mnist"))
    with pytest.raises(DatasetError, match="apt install dataset-fashion-mnist"):
        load_fashion_mnist("train", tmp_path)


def test_preset_help_lists_every_preset(capsys):
    from vqdraw.core.config import PRESETS

    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    preset_help = out.split("--preset PRESET", 2)[-1].split("--dataset DATASET")[0]
    for name in PRESETS:
        assert f" {name}," in preset_help or f" {name} " in preset_help
