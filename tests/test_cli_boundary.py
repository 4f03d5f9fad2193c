"""The CLI's one boundary for user numbers, paths and devices (issue 17 item 4), MODEL given the
same way in every verb, and the light `vqdraw --help` / `--version` (issue 15 item 2).

Every reproducer must end in exactly one line on stderr and exit code 2, quickly, before a model
is built or memory allocated for the absurd value.
"""

import struct
import subprocess
import sys
import time
import zlib

import pytest
import torch

from vqdraw import VQDraw
from vqdraw.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("boundary") / "model"
    torch.manual_seed(0)
    VQDraw.from_preset("mnist", options=4, stages=2, segment=2).save(path)
    return path


def huge_png(path, width=20_000, height=20_000):
    """A PNG whose header declares width x height pixels (a few hundred bytes on disk)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert "Traceback" not in err[0]
    return err[0]


# (argv with {M} = a model folder, {D} = an existing folder, {F} = an existing file, {P} = a huge PNG;
#  a piece of the expected message)
REPRODUCERS = [
    (["sample", "{M}", "-n", "1000000000000"], "at most"),
    (["sample", "-m", "{M}", "-n", "0"], "at least 1"),
    (["encode", "{M}", "{F}", "-o", "{D}/x.vqd", "--beam", "1000000"], "at most"),
    (["sample", "{M}", "-o", "{D}"], "is a folder"),
    (["encode", "{M}", "{F}", "-o", "{D}"], "is a folder"),
    (["sample", "{M}", "--device", "foo"], "unknown device"),
    (["sample", "{M}", "--device", "cuda:99"], "cuda"),
    (["reconstruct", "{M}", "--count", "-6"], "at least 1"),
    (["reconstruct", "{M}", "--count", "0"], "at least 1"),
    (["reconstruct", "{M}", "--count", "-1"], "at least 1"),
    (["stages", "{M}", "--count", "-6"], "at least 1"),
    (["stages", "{M}", "--count", "0"], "at least 1"),
    (["stages", "{M}", "--count", "-1"], "at least 1"),
    (["train", "--lr", "nan"], "finite"),
    (["train", "--lr", "0"], "greater than 0"),
    (["train", "--alpha", "nan"], "finite"),
    (["train", "--alpha", "inf"], "finite"),
    (["train", "--batch", "1e12"], "whole number"),
    (["train", "--batch", "1000000000000"], "at most"),
    (["train", "--options", "1e9"], "whole number"),
    (["train", "--options", "1000000000"], "at most"),
    (["train", "--run", "{F}"], "not a folder"),
    (["distill", "{M}", "--train-images", "-1"], "at least 1"),
    (["baseline", "vqvae", "--latent-dim", "-1"], "at least 1"),
    (["probe", "{M}", "--train-count", "-1"], "at least 1"),
    (["eval-samples", "{M}", "--count", "0"], "at least 1"),
    (["decode", "{M}", "{F}", "-o", "{F}"], "not a folder"),
    (["encode", "{M}", "{P}", "-o", "{D}/x.vqd"], "too large"),
    (["reconstruct", "{M}", "{P}"], "too large"),
]


@pytest.mark.parametrize("argv,needle", REPRODUCERS, ids=[" ".join(a) for a, _ in REPRODUCERS])
def test_bad_numbers_paths_and_devices_end_in_one_line(argv, needle, model_dir, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "a.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(a_file)
    big = huge_png(tmp_path / "huge.png")
    argv = [a.format(M=model_dir, D=folder, F=a_file, P=big) for a in argv]
    start = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - start < 5
    assert needle in one_error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it(model_dir, capsys):
    assert main(["sample", str(model_dir), "--device", "cuda"]) == 2
    assert "--device cpu" in one_error_line(capsys)


def test_model_positional_or_option_and_both(model_dir, tmp_path, capsys):
    for argv in (["sample", str(model_dir)], ["sample", "-m", str(model_dir)], ["sample", "--model", str(model_dir)],
                 ["sample", str(model_dir), "-m", str(model_dir)]):
        assert main([*argv, "-n", "2", "-o", str(tmp_path / "s.png")]) == 0, argv
    assert (tmp_path / "s.png").exists()
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    assert main(["sample", str(other), "-m", str(model_dir)]) == 2
    assert "two different models" in one_error_line(capsys)
    assert main(["sample"]) == 2
    assert "no model given" in one_error_line(capsys)


def test_encode_and_decode_take_model_either_way(model_dir, tmp_path, capsys):
    from PIL import Image

    for i in range(2):
        Image.new("L", (28, 28), 40 * i).save(tmp_path / f"{i}.png")
    images = [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    assert main(["encode", str(model_dir), *images, "-o", str(tmp_path / "a.vqd")]) == 0
    assert main(["encode", "-m", str(model_dir), *images, "-o", str(tmp_path / "b.vqd")]) == 0
    assert (tmp_path / "a.vqd").read_bytes() == (tmp_path / "b.vqd").read_bytes()
    assert main(["decode", str(model_dir), str(tmp_path / "a.vqd"), "-o", str(tmp_path / "out1")]) == 0
    assert main(["decode", "-m", str(model_dir), str(tmp_path / "a.vqd"), "-o", str(tmp_path / "out2")]) == 0
    assert sorted(p.name for p in (tmp_path / "out1").iterdir()) == ["000000.png", "000001.png"]
    capsys.readouterr()
    assert main(["encode", str(model_dir), "-o", str(tmp_path / "c.vqd")]) == 2
    assert "no images" in one_error_line(capsys)


def test_missing_baselines_extra_is_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "vector_quantize_pytorch", None)  # as if not installed
    assert main(["baseline", "vqvae", "--steps", "1", "--run", str(tmp_path / "vq"), "--no-progress"]) == 2
    assert 'pip install "vqdraw[baselines]"' in one_error_line(capsys)


def test_missing_svhn_extra_is_named(monkeypatch, tmp_path):
    from vqdraw.data import DatasetError
    from vqdraw.data.svhn import read_svhn_mat

    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DatasetError, match=r'pip install "vqdraw\[svhn\]"'):
        read_svhn_mat(tmp_path / "train_32x32.mat")


def test_first_run_error_names_download_and_the_embedded_digits(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VQDRAW_DATA", str(tmp_path / "empty"))
    assert main(["train", "--run", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert "--download" in line and "--dataset mnist-embedded" in line


def test_train_help_shows_the_presets_values(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: None)" not in out
    assert "mnist 10, mnist-10min 10, fashion 10, svhn 20, cifar10 100, celeba 100" in " ".join(out.split())


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_help_and_version_import_neither_torch_nor_verbs():
    out = run_python(
        "import sys, contextlib, io\n"
        "from vqdraw.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as f:\n"
        "    assert main(['--help']) == 0\n"
        "    assert main(['--version']) == 0\n"
        "text = f.getvalue()\n"
        "verbs = [m for m in sys.modules if m.startswith('vqdraw.cli.')]\n"
        "print('torch' in sys.modules, verbs, 'eval-samples' in text, 'vqdraw 0.' in text)\n")
    assert out.split() == ["False", "[]", "True", "True"]


def test_every_verbs_help_imports_no_torch():
    """Building every verb's parser (what `vqdraw VERB --help` needs) stays light: flags built from
    config dataclasses read configs that import no torch."""
    out = run_python("import sys\nfrom vqdraw.cli import build_parser\nbuild_parser('*')\n"
                     "print('torch' in sys.modules)\n")
    assert out.split() == ["False"]


def test_python_m_vqdraw_and_lazy_package():
    out = subprocess.run([sys.executable, "-m", "vqdraw", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("vqdraw ")
    out = run_python("import sys, vqdraw\nprint('torch' in sys.modules)\n"
                     "from vqdraw import VQDraw, fit, ConfigError\n"
                     "print(sorted(vqdraw.__all__) == sorted(n for n in vqdraw.__all__ if hasattr(vqdraw, n)))")
    assert out.split() == ["False", "True"]
    with pytest.raises(AttributeError):
        import vqdraw

        vqdraw.not_a_name  # noqa: B018


def test_decode_rate_is_refused_for_a_model_that_writes_no_waveforms(model_dir, tmp_path, capsys):
    from vqdraw.compress.codec import compress

    model = VQDraw.load(model_dir)
    vqd = tmp_path / "x.vqd"
    vqd.write_bytes(compress(model, torch.rand(2, 1, 28, 28)))
    assert main(["decode", str(model_dir), str(vqd), "-o", str(tmp_path / "out"), "--rate", "16000"]) == 2
    assert "--rate is for audio and speech models; this model makes image data" in one_error_line(capsys)
