"""Every dataset reader feeds `vqdraw train` through the same interface (tiny files, official formats)."""

import json

import pytest
from test_data_readers import write_celeba, write_cifar, write_idx_set, write_pngs, write_svhn

from vqdraw.cli import main


def _train(tmp_path, preset, dataset, data_dir):
    run = tmp_path / "run"
    argv = ["train", "--preset", preset, "--dataset", dataset, "--run", str(run), "--steps", "1",
            "--batch", "2", "--micro-batch", "1", "--stages", "1", "--segment", "1", "--eval-size", "2",
            "--no-progress"]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    assert main(argv) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and "test_mse" in rows[-1]
    assert (run / "samples.png").exists()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_datasets_train(tmp_path, name):
    write_idx_set(tmp_path / "data" / name)
    _train(tmp_path, "mnist", name, tmp_path / "data")


def test_cifar10_trains(tmp_path):
    write_cifar(tmp_path / "data" / "cifar10", as_tar=True)
    _train(tmp_path, "cifar10", "cifar10", tmp_path / "data")


def test_svhn_trains(tmp_path):
    for split, n in (("train", 4), ("test", 3)):
        write_svhn(tmp_path / "data" / "svhn", split, n)
    _train(tmp_path, "svhn", "svhn", tmp_path / "data")


def test_celeba_trains(tmp_path):
    write_celeba(tmp_path / "data" / "celeba")
    _train(tmp_path, "celeba", "celeba", tmp_path / "data")


def test_image_folder_is_fitted_to_the_preset(tmp_path):
    write_pngs(tmp_path / "imgs", 20, size=(40, 30))  # colour, wrong size: made 28x28 grey for mnist
    _train(tmp_path, "mnist", f"folder:{tmp_path / 'imgs'}", None)


def test_missing_dataset_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "--preset", "svhn", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_32x32.mat" in err[0] and str(tmp_path) in err[0]
