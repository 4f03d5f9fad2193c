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


def test_datasets_export_writes_files_the_verbs_read(tmp_path, capsys):
    from PIL import Image

    assert main(["datasets", "export", "mnist-embedded", "--split", "test", "--count", "16",
                 "-o", str(tmp_path / "digits")]) == 0
    files = sorted((tmp_path / "digits").glob("*.png"))
    assert len(files) == 16 and Image.open(files[0]).size == (28, 28)
    assert main(["datasets", "export", "text-embedded", "--count", "3", "-o", str(tmp_path / "text")]) == 0
    texts = sorted((tmp_path / "text").glob("*.txt"))
    assert len(texts) == 3 and len(texts[0].read_text(encoding="utf-8")) == 128
    capsys.readouterr()
    assert main(["datasets", "export", "mnist-embedded"]) == 2
    assert "-o DIR" in capsys.readouterr().err


def test_datasets_export_volumes_and_audio(tmp_path):
    import numpy as np

    from vqdraw.data.base import Dataset
    from vqdraw.data.export import export_items
    from vqdraw.data.voxels import read_grids

    grids = np.zeros((3, 4, 4, 4, 1), np.uint8)
    grids[1, 1:3, 1:3, 1:3] = 255
    done = export_items(Dataset(grids, name="voxels:x"), tmp_path / "v", 3)
    assert [f.suffix for f in done.files] == [".npy"] * 3
    assert read_grids(done.files[1]).sum() == 8
    pytest.importorskip("soundfile")
    from vqdraw.data.audio import read_audio

    clips = np.full((2, 64, 1), 128, np.uint8)
    done = export_items(Dataset(clips, name="audio:x"), tmp_path / "a", 2)
    samples, rate = read_audio(done.files[0])
    assert rate == 8000 and len(samples) == 64


def test_readme_first_block_runs(tmp_path, monkeypatch, capsys):
    """The README's "Use it before training anything" block, as written: export digits, then the
    pretrained model encodes, decodes and samples them."""
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Use it before training anything.*?```bash\n(.*?)```", readme, flags=re.S).group(1)
    lines = [line.split("  #")[0].split(" # ")[0] for line in block.splitlines() if line.startswith("vqdraw ")]
    assert lines[0].startswith("vqdraw datasets export")
    monkeypatch.chdir(tmp_path)
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, line
    assert len(list(Path("out").glob("*.png"))) == 16


def test_resume_after_a_time_budget_trains_to_the_steps_asked(tmp_path):
    """`train --time-budget` then `train --resume --steps N`: the resumed run reaches step N (the
    budget is each invocation's, and --steps without --time-budget on --resume drops it)."""
    from vqdraw.runs import read_latest

    run = tmp_path / "run"
    tiny = ["--options", "4", "--stages", "2", "--segment", "2", "--batch", "4", "--eval-size", "8",
            "--eval-every", "1000", "--save-every", "1000", "--no-progress"]
    assert main(["train", "--preset", "mnist-10min", "--dataset", "mnist-embedded", "--run", str(run),
                 "--time-budget", "0.005", *tiny]) == 0
    done = int(read_latest(run).name.split("-")[1])
    assert 0 < done < 5000  # ended by the budget, not by the preset's steps
    target = done + 3
    assert main(["train", "--run", str(run), "--resume", "--steps", str(target), "--no-progress"]) == 0
    assert read_latest(run).name == f"ckpt-{target:08d}"


def test_prior_encode_never_makes_a_larger_file(tmp_path, capsys):
    """17 digits with pretrained:mnist: the entropy-coded file (its header is larger) is no larger
    than the fixed-length one; when it would be, encode writes fixed length and says so on stderr."""
    from vqdraw.compress.bitstream import read_header

    digits = tmp_path / "digits"
    assert main(["datasets", "export", "mnist-embedded", "--count", "17", "-o", str(digits)]) == 0
    assert main(["encode", "pretrained:mnist", str(digits), "-o", str(tmp_path / "f.vqd")]) == 0
    capsys.readouterr()
    assert main(["encode", "pretrained:mnist", str(digits), "-o", str(tmp_path / "p.vqd"), "--prior"]) == 0
    err = capsys.readouterr().err
    fixed, coded = (tmp_path / "f.vqd").read_bytes(), (tmp_path / "p.vqd").read_bytes()
    assert len(coded) <= len(fixed)
    if read_header(coded).version != 3:
        assert coded == fixed and "fixed length" in err
    else:
        assert "fixed length" not in err
    assert main(["decode", "pretrained:mnist", str(tmp_path / "p.vqd"), "-o", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 17


def test_smaller_file_falls_back_when_the_prior_does_not_pay(tmp_path, capsys):
    """One digit: the version-3 header alone outweighs any saving, so the file is fixed length."""
    from vqdraw.compress.bitstream import read_header

    digits = tmp_path / "digits"
    assert main(["datasets", "export", "mnist-embedded", "--count", "1", "-o", str(digits)]) == 0
    capsys.readouterr()
    assert main(["encode", "pretrained:mnist", str(digits), "-o", str(tmp_path / "p.vqd"), "--prior"]) == 0
    captured = capsys.readouterr()
    assert read_header((tmp_path / "p.vqd").read_bytes()).version != 3
    assert "fixed length" in captured.err and captured.err.count("\n") == 1
    assert "entropy-coded" not in captured.out


def test_default_outputs_get_new_numbered_names(tmp_path, monkeypatch, capsys):
    """A second `reconstruct`/`stages`/`sample` without -o writes beside the first, not over it, and
    says where; the title of pretrained:mnist names it, not the preset its config equals."""
    from vqdraw.evaluate import plots

    titles = []
    real = plots.describe_model
    monkeypatch.setattr(plots, "describe_model", lambda *a, **k: titles.append(real(*a, **k)) or titles[-1])
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "pretrained-mnist"
    for argv, first, second in (
            (["reconstruct", "pretrained:mnist", "--count", "2"], "reconstructions-cli.png", "reconstructions-cli-2.png"),
            (["stages", "pretrained:mnist", "--count", "2"], "stages-cli.png", "stages-cli-2.png"),
            (["sample", "pretrained:mnist", "-n", "4"], "samples-0.png", "samples-0-2.png")):
        assert main(argv) == 0
        before = (home / first).read_bytes()
        capsys.readouterr()
        assert main(argv) == 0
        assert (home / second).is_file() and (home / first).read_bytes() == before
        assert str(home.name + "/" + second) in capsys.readouterr().out
    assert titles and all("pretrained:mnist" in t and "preset" not in t for t in titles)


def test_brightness_warning_names_the_files_and_encode_reports_bits_per_pixel(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "pages"
    folder.mkdir()
    for name, value in (("white.png", 255), ("black.png", 0)):
        Image.fromarray(np.full((28, 28), value, np.uint8)).save(folder / name)
    assert main(["encode", "pretrained:mnist", str(folder), "-o", str(tmp_path / "x.vqd")]) == 0
    captured = capsys.readouterr()
    warning = next(line for line in captured.err.splitlines() if line.startswith("warning:"))
    assert "white.png" in warning and "black.png" not in warning
    out = " ".join(captured.out.split())
    assert "bits) per image" in out and "bits per pixel" in out


def test_prior_progress_is_plain_lines_off_a_terminal(tmp_path, capsys):
    """stderr is not a terminal under pytest: progress comes as whole lines, no carriage returns."""
    from vqdraw import VQDraw

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    folder = tmp_path / "model"
    VQDraw.from_preset("mnist", options=4, stages=2, segment=2).save(folder)
    (folder / "train.json").write_text('{"train": {"dataset": "mnist-embedded"}, "model": {}}')
    assert main(["prior", str(folder), "--train-items", "600", "--test-items", "50", "--steps", "20",
                 "--hidden", "8", "--embed", "4"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "prior: 20/20 steps" in err and "train codes: 600/600 items" in err


def test_every_output_help_says_missing_folders_are_created():
    from vqdraw.cli import build_parser

    parser = build_parser("*")
    verbs = next(a for a in parser._actions if a.dest == "command").choices
    outputs = [(name, a) for name, p in verbs.items() for a in p._actions
               if getattr(a.type, "__name__", "") in ("output_file", "output_dir") or "-o" in a.option_strings]
    assert len(outputs) >= 10
    for name, action in outputs:
        assert "created" in (action.help or ""), (name, action.option_strings)


def test_pyproject_license_is_an_spdx_string():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    setuptools = next(r for r in project["build-system"]["requires"] if r.startswith("setuptools"))
    assert setuptools == "setuptools>=77"  # the first setuptools that reads an SPDX license string


def test_verify_leaves_the_system_package_copy_unverified(tmp_path, monkeypatch):
    from test_data_readers import write_idx_set

    from vqdraw.data import download

    system = tmp_path / "usr" / "fashion-mnist"
    write_idx_set(system, n_train=4)
    monkeypatch.setitem(download.SYSTEM_DIRS, "fashion-mnist", (system, "dataset-fashion-mnist"))
    results = download.verify("fashion-mnist", tmp_path / "empty")
    assert [ok for _, ok, _ in results] == [None] * 4
    assert all("dpkg --verify dataset-fashion-mnist" in message for _, _, message in results)
