"""The README's Python snippets run, in order, as written (vector-quantize-pytorch's test_readme).

Only what would take minutes is changed, by the substitutions below; each must still match the
README, so a snippet that drifts from this test fails it. The model folder the snippets load
(`runs/mnist`) is made first: a small model and a distilled encoder trained for a few steps.
"""

import os
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

# README text -> what the test runs instead (each must occur in the README's Python blocks)
SUBSTITUTIONS = {
    'TrainConfig(steps=1000, dataset="mnist-embedded")':
        'TrainConfig(steps=2, eval_every=2, eval_size=16, dataset="mnist-embedded")',
}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture()
def readme_folder(tmp_path, fast_embedded_mnist):
    """A working folder holding runs/mnist: a small trained-for-nothing model plus a distilled encoder."""
    from vqdraw import VQDraw
    from vqdraw.data import load_dataset
    from vqdraw.training.distill import distill

    torch.manual_seed(0)
    model = VQDraw.from_preset("mnist", options=8, stages=4, segment=2)
    model.save(tmp_path / "runs" / "mnist")
    train, test = load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")
    distill(model, train, test, steps=2, batch=8, out_dir=tmp_path / "runs" / "mnist", progress=False,
            train_limit=16, test_limit=8)
    return tmp_path


def test_readme_python_snippets_run(readme_folder, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2, "the README's Python API section is missing"
    code = "\n".join(blocks)
    for old, new in SUBSTITUTIONS.items():
        assert old in code, f"README no longer contains {old!r}: update tests/test_readme.py"
        code = code.replace(old, new)
    monkeypatch.chdir(readme_folder)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (our own README)
    # what the snippets promise in their comments
    model, images, codes = namespace["model"], namespace["images"], namespace["codes"]
    assert codes.shape == (images.shape[0], model.stages)
    assert torch.equal(namespace["recon"], namespace["res"].reconstruction)
    assert torch.equal(namespace["decoded"], model.decode(codes))
    for name in ("beam_codes", "fast_codes"):
        assert namespace[name].shape == codes.shape
    assert namespace["vol_codes"].shape == (2, namespace["vol"].stages)
    assert namespace["occupancy"].shape == namespace["voxels"].shape
    assert os.path.isdir("runs/api") and os.path.isdir("my-model")


def test_readme_first_command_runs(tmp_path, monkeypatch):
    """The newcomer's first command, as the README writes it, cut to 2 steps: it trains, evaluates
    and writes its run folder."""
    import shlex

    from vqdraw.cli import main

    block = re.search(r"## Two commands.*?```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    lines = [line for line in block.replace("\\\n", " ").splitlines() if line.startswith("vqdraw train")]
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0])[1:]
    assert "--preset" in argv
    monkeypatch.chdir(tmp_path)
    extra = ["--steps", "2", "--eval-every", "2", "--eval-size", "16", "--save-every", "2", "--no-progress"]
    assert main(argv + extra) == 0
    run = tmp_path / argv[argv.index("--run") + 1]
    assert (run / "LATEST").is_file() and (run / "samples.png").is_file()
