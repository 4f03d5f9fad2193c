"""The CLI end to end on tiny runs, and its error paths: one clear line, exit code 2, no traceback."""

import json

import numpy as np
import pytest
from PIL import Image

from vqdraw import VQDraw
from vqdraw.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--preset", "mnist", "--dataset", "mnist-embedded", "--run", str(run),
                 "--steps", "2", "--batch", "4", "--options", "4", "--stages", "2", "--segment", "2",
                 "--eval-size", "16", "--eval-every", "2", "--no-progress"])
    assert code == 0
    return run


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_train_writes_a_run_that_other_commands_accept(run_dir, tmp_path, capsys):
    assert json.loads((run_dir / "train.json").read_text())["model"]["options"] == 4
    assert VQDraw.load(run_dir).config.stages == 2
    assert main(["sample", "--model", str(run_dir), "-n", "9", "-o", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size[0] > 28
    assert main(["reconstruct", "--model", str(run_dir), "--count", "4", "-o", str(tmp_path / "r.png")]) == 0
    assert "MSE" in capsys.readouterr().out
    assert main(["stages", "--model", str(run_dir), "--count", "3", "-o", str(tmp_path / "st.png")]) == 0
    assert (tmp_path / "st.png").exists()


def test_resume_extends_a_run(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--run", str(copy), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert "vqdraw train: resuming the run, dataset" in capsys.readouterr().err  # not the default preset's name
    rows = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3


def test_reconstruct_image_files(run_dir, tmp_path, capsys):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    assert main(["reconstruct", "--model", str(run_dir), str(tmp_path / "a.png"), "-o", str(tmp_path / "r.png")]) == 0
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "big.png")
    assert main(["reconstruct", "--model", str(run_dir), str(tmp_path / "big.png")]) == 2
    assert "--fit" in error_line(capsys)
    assert main(["reconstruct", "--model", str(run_dir), str(tmp_path / "big.png"), "--resize",
                 "-o", str(tmp_path / "r2.png")]) == 0


@pytest.mark.parametrize("argv,needle", [
    (["train", "--preset", "imagenet"], "unknown preset"),
    (["train", "--dataset", "nope"], "unknown dataset"),
    (["sample", "--model", "/nonexistent/run"], "no such model"),
])
def test_clear_errors(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in error_line(capsys)


def test_stage_count_beyond_model(run_dir, capsys):
    assert main(["sample", "--model", str(run_dir), "--stages", "5"]) == 2
    assert "has 2 stages" in error_line(capsys)


def test_corrupt_and_incomplete_checkpoints(run_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    ckpt = bad / (bad / "LATEST").read_text().strip()
    (ckpt / "model.safetensors").write_bytes(b"\x00garbage")
    assert main(["sample", "--model", str(bad)]) == 2
    assert "unreadable weights" in error_line(capsys)
    (ckpt / "config.json").write_text("{not json")
    assert main(["sample", "--model", str(bad)]) == 2
    assert "config" in error_line(capsys)
    shutil.rmtree(ckpt)
    assert main(["sample", "--model", str(bad)]) == 2
    assert "missing" in error_line(capsys)
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["sample", "--model", str(f)]) == 2
    assert "folder" in error_line(capsys)


def test_presets_table(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for text in ("mnist", "svhn", "cifar10", "celeba", "50,000", "4,375", "2,175", "2,262", "600", "64x64x3"):
        assert text in out


@pytest.mark.parametrize("flag,mode", [([], False), (["--compile"], "default"),
                                       (["--compile", "reduce-overhead"], "reduce-overhead")])
def test_train_compile_flag_reaches_fit(flag, mode, tmp_path, monkeypatch):
    """`--compile [MODE]` reaches fit as torch.compile's mode (False without the flag)."""
    import vqdraw.training.train

    seen = {}

    def fake_fit(model, train_set, test_set, cfg, run_dir, **kw):
        seen["compile"] = kw["runtime"].compile
        raise SystemExit(0)

    monkeypatch.setattr(vqdraw.training.train, "fit", fake_fit)
    with pytest.raises(SystemExit):
        main(["train", "--preset", "mnist", "--dataset", "mnist-embedded", "--steps", "1", "--options", "8",
              "--stages", "2", "--segment", "2", "--run", str(tmp_path / "r"), *flag])
    assert seen["compile"] == mode
