"""Hostile paths and run folders: outputs never destroy, inputs never hang, numbers never NaN.

Each reproducer ends in one line on stderr and exit code 2 (or a typed error from the Python
API), quickly, with nothing outside written and nothing left behind (docs/robustness.md).
"""

import json
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vqdraw import VQDraw
from vqdraw.cli import main
from vqdraw.core.config import TrainConfig
from vqdraw.data import load_dataset
from vqdraw.errors import CheckpointError, ConfigError, InputError, PathError, TrainingDiverged, VQDrawError
from vqdraw.training.train import fit

pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")

CFG = dict(steps=4, batch=8, eval_size=8, save_every=2, eval_every=2, log_every=1, dataset="mnist-embedded")


def _sets():
    return load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")


def _model():
    torch.manual_seed(0)
    return VQDraw.from_preset("mnist", options=4, stages=2, segment=2)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A finished 4-step run (checkpoints at steps 2 and 4) and a saved model folder."""
    root = tmp_path_factory.mktemp("hostile_io")
    fit(_model(), *_sets(), TrainConfig(**CFG), root / "run", progress=False, pictures=False)
    _model().save(root / "model")
    from PIL import Image

    Image.new("L", (28, 28), 0).save(root / "d0.png")
    return root


@pytest.fixture
def w(pristine, tmp_path):
    """A fresh copy of the run, the model folder and an image, in tmp_path."""
    shutil.copytree(pristine / "run", tmp_path / "run")
    shutil.copytree(pristine / "model", tmp_path / "model")
    (tmp_path / "imgs").mkdir()
    shutil.copy(pristine / "d0.png", tmp_path / "imgs" / "d1.png")
    shutil.copy(pristine / "d0.png", tmp_path / "d0.png")
    os.mkfifo(tmp_path / "f.png")
    os.mkfifo(tmp_path / "f.vqd")
    return tmp_path


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert "Traceback" not in err[0] and "error:" in err[0]
    return err[0]


def _ckpt(w) -> str:
    return (w / "run" / "LATEST").read_text().strip()


# (argv with {W} = the work folder, {C} = the newest checkpoint's name; a piece of the message)
OUTPUTS = [
    (["sample", "{W}/model", "-n", "2", "-o", "/dev/full"], "not a regular file"),
    (["sample", "{W}/model", "-n", "2", "-o", "{W}/f.png"], "not a regular file"),
    (["encode", "{W}/model", "{W}/d0.png", "-o", "/dev/null"], "not a regular file"),
    (["reconstruct", "{W}/model", "{W}/d0.png", "-o", "{W}/f.png"], "not a regular file"),
    (["stages", "{W}/model", "{W}/d0.png", "-o", "/dev/full"], "not a regular file"),
    (["sample", "{W}/run", "-n", "1", "-o", "{W}/run/{C}/model.safetensors"], "files of the model"),
    (["sample", "{W}/model", "-n", "1", "-o", "{W}/model/config.json"], "files of the model"),
    (["encode", "{W}/run", "{W}/d0.png", "-o", "{W}/run/LATEST"], "files of the model"),
    (["encode", "{W}/run", "{W}/d0.png", "-o", "{W}/run/metrics.jsonl"], "files of the model"),
    (["encode", "{W}/run/{C}", "{W}/d0.png", "-o", "{W}/run/train.json"], "files of the model"),
    (["encode", "{W}/model", "{W}/imgs/d1.png", "-o", "{W}/imgs/d1.png"], "also an input"),
    (["encode", "{W}/model", "{W}/imgs", "-o", "{W}/imgs/../imgs/d1.png"], "also an input"),
    (["reconstruct", "{W}/model", "{W}/d0.png", "-o", "{W}/d0.png"], "also an input"),
    (["decode", "{W}/run", "{W}/f.vqd", "-o", "{W}/run/{C}"], "inside a checkpoint"),
]


@pytest.mark.parametrize("argv,needle", OUTPUTS, ids=[" ".join(a) for a, _ in OUTPUTS])
def test_outputs_never_destroy(argv, needle, w, capsys):
    before = {p: (p.lstat().st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else None)
              for p in [*w.rglob("*"), Path("/dev/full"), Path("/dev/null")]}
    start = time.perf_counter()
    assert main([a.format(W=w, C=_ckpt(w)) for a in argv]) == 2
    assert time.perf_counter() - start < 10
    assert needle in one_error_line(capsys)
    after = {p: (p.lstat().st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else None)
             for p in before}
    assert after == before  # nothing replaced, not even the device nodes or FIFOs
    assert set(w.rglob("*")) == {p for p in before if str(p).startswith(str(w))}


INPUTS = [
    (["encode", "{W}/model", "{W}/f.png", "-o", "{W}/o.vqd"], "not a regular file"),
    (["reconstruct", "{W}/model", "{W}/f.png", "-o", "{W}/o.png"], "not a regular file"),
    (["stages", "{W}/model", "{W}/f.png", "-o", "{W}/o.png"], "not a regular file"),
    (["decode", "{W}/model", "/dev/zero", "-o", "{W}/out"], "not a regular file"),
    (["decode", "{W}/model", "{W}/f.vqd", "-o", "{W}/out"], "not a regular file"),
    (["sample", "{W}/model", "-n", "1", "-o", "{W}/" + "x" * 300 + ".png"], "File name too long"),
    (["sample", "{W}/model", "-n", "1", "-o", "{W}/d0.png/under.png"], "is a file"),
]


@pytest.mark.parametrize("argv,needle", INPUTS, ids=[" ".join(a) for a, _ in INPUTS])
def test_inputs_never_hang_and_os_errors_are_one_line(argv, needle, w, capsys):
    start = time.perf_counter()
    assert main([a.format(W=w) for a in argv]) == 2
    assert time.perf_counter() - start < 10
    assert needle in one_error_line(capsys)
    assert not (w / "out").exists() and not (w / "o.vqd").exists() and not (w / "o.png").exists()


def test_a_full_disk_after_the_work_is_one_line(w, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    monkeypatch.setattr(os, "fsync", full)
    assert main(["sample", str(w / "model"), "-n", "2", "-o", str(w / "s.png")]) == 2
    assert "No space left on device" in one_error_line(capsys)
    assert not (w / "s.png").exists() and not list(w.glob(".s.png*"))


# (what to make unreadable (mode 0) or read-only (0o500), argv, a piece of the message)
PERMISSIONS = [
    ("model/model.safetensors", ["sample", "{W}/model", "-n", "1", "-o", "{W}/s.png"],
     "model.safetensors: unreadable weights (Permission denied)"),
    ("model", ["sample", "{W}/model", "-n", "1", "-o", "{W}/s.png"], "model/config.json: Permission denied"),
    ("d0.png", ["encode", "{W}/model", "{W}/d0.png", "-o", "{W}/x.vqd"], "d0.png: not a readable image"),
    ("x.vqd", ["decode", "{W}/model", "{W}/x.vqd", "-o", "{W}/out"], "x.vqd: Permission denied"),
    ("ro", ["sample", "{W}/model", "-n", "1", "-o", "{W}/ro/s.png"], "ro/s.png: Permission denied"),
    ("ro", ["encode", "{W}/model", "{W}/d0.png", "-o", "{W}/ro/x.vqd"], "ro/x.vqd: cannot write"),
    ("ro", ["decode", "{W}/model", "{W}/x.vqd", "-o", "{W}/ro/out"], "ro/out: cannot create"),
]

_DRIVER = """
import contextlib, io, json, os, sys
from vqdraw.cli import main
results = []
for target, mode, argv in json.loads(sys.argv[1]):
    before = os.stat(target).st_mode
    os.chmod(target, mode)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    finally:
        os.chmod(target, before)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""

_NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def _without_permission_override() -> list[str]:
    """A command prefix under which file permissions apply: none for a user; for root, dropping
    the capabilities that let root read and write through them (setpriv); skip where impossible."""
    if os.geteuid() != 0:
        return []
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            done = subprocess.run([*_NO_DAC, "cat", str(probe)], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            pytest.skip("root, and setpriv cannot drop the permission override here")
        if done.returncode == 0:
            pytest.skip("root, and dropping CAP_DAC_OVERRIDE does not make permissions apply here")
    return _NO_DAC


def test_unreadable_inputs_and_unwritable_outputs_are_one_line(w):
    """Permission errors as a user meets them; run as root too, with root's override dropped."""
    import subprocess

    prefix = _without_permission_override()
    assert main(["encode", str(w / "model"), str(w / "d0.png"), "-o", str(w / "x.vqd")]) == 0
    (w / "ro").mkdir()
    cases = [(w / target, [a.format(W=w) for a in argv], needle) for target, argv, needle in PERMISSIONS]
    jobs = [(str(target), 0o500 if target.name == "ro" else 0, argv) for target, argv, _ in cases]
    before = sorted(str(p) for p in w.rglob("*"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    # one process for all the cases (the import is paid once); it sets and restores each mode itself
    done = subprocess.run([*prefix, sys.executable, "-c", _DRIVER, json.dumps(jobs)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == len(cases)
    for (target, argv, needle), (code, err) in zip(cases, results):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (argv, err)
        assert "Traceback" not in lines[0] and "error:" in lines[0] and needle in lines[0], (argv, err)
    assert sorted(str(p) for p in w.rglob("*")) == before  # nothing written, nothing left behind


def test_killed_decode_debris_is_cleaned_by_the_next_decode(w, capsys):
    assert main(["encode", str(w / "model"), str(w / "d0.png"), "-o", str(w / "x.vqd")]) == 0
    dead = w / ".out.999999999.abc.tmp"  # a pid that cannot exist
    dead.mkdir()
    (dead / "000000.png").write_bytes(b"half")
    live = w / f".out.{os.getpid()}.abc.tmp"  # a running decode's folder is left alone
    live.mkdir()
    assert main(["decode", str(w / "model"), str(w / "x.vqd"), "-o", str(w / "out")]) == 0
    assert not dead.exists() and live.exists()
    assert (w / "out" / "000000.png").is_file()


# ------------------------------------------------------------------ run folders
def _resume(w, **over):
    return fit(_model(), *_sets(), TrainConfig(**{**CFG, "steps": 6, **over}), w / "run", resume=True,
               progress=False, pictures=False)


def test_a_symlinked_metrics_file_is_never_followed_out(w, tmp_path_factory):
    victim = tmp_path_factory.mktemp("outside") / "victim"
    victim.write_text("precious\n")
    (w / "run" / "metrics.jsonl").unlink()
    (w / "run" / "metrics.jsonl").symlink_to(victim)
    train_json = (w / "run" / "train.json").read_bytes()
    with pytest.raises(PathError, match="symbolic link"):
        _resume(w)
    assert victim.read_text() == "precious\n"
    assert (w / "run" / "train.json").read_bytes() == train_json  # a refused resume changes nothing


@pytest.mark.parametrize("make", ["fifo", "folder", "lock-link"])
def test_special_run_files_are_refused(make, w, tmp_path_factory):
    run = w / "run"
    if make == "fifo":
        (run / "metrics.jsonl").unlink()
        os.mkfifo(run / "metrics.jsonl")
    elif make == "folder":
        (run / "metrics.jsonl").unlink()
        (run / "metrics.jsonl").mkdir()
    else:
        target = tmp_path_factory.mktemp("outside") / "lock"
        target.write_text("")
        (run / ".lock").unlink(missing_ok=True)
        (run / ".lock").symlink_to(target)
    start = time.perf_counter()
    with pytest.raises(PathError):
        _resume(w)
    assert time.perf_counter() - start < 10


def test_hostile_metrics_lines_are_dropped(w):
    path = w / "run" / "metrics.jsonl"
    good = path.read_text()
    bad = ['{"step": "abc", "loss": 1}', '{"step": null}', "[1, 2, 3]", "[" * 100_000 + "]" * 100_000,
           '{"step": 1, "loss": "x"}', '{"step": true}', '{"step": 1e400}', '{"step": -5}', "null", "7"]
    path.write_text("\n".join(bad) + "\n" + good)
    result = _resume(w)
    assert result.step == 6
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(isinstance(r["step"], int) and r["step"] >= 1 for r in rows)
    assert [r["step"] for r in rows] == list(range(1, 7))


def _state(w):
    return w / "run" / _ckpt(w) / "state.json"


STATES = [
    ("step", 10**18, "step"),
    ("step", 2.5, "step"),
    ("step", True, "step"),
    ("step", -5, "step"),
    ("betas", [2.0, 0.5], "betas"),
    ("eps", 0, "eps"),
    ("time_spent", -1, "time_spent"),
]


@pytest.mark.parametrize("key,value,needle", STATES, ids=[f"{k}={v}" for k, v, _ in STATES])
def test_state_json_is_validated(key, value, needle, w):
    state = json.loads(_state(w).read_text())
    if key in ("betas", "eps"):
        state["optimizer"]["param_groups"][0][key] = value
    else:
        state[key] = value
    _state(w).write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=needle):
        _resume(w)


def test_state_json_as_a_device_is_refused_quickly(w):
    _state(w).unlink()
    _state(w).symlink_to("/dev/zero")
    start = time.perf_counter()
    with pytest.raises(CheckpointError):
        _resume(w)
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("damage", ["empty", "wrong-shape", "wrong-name"])
def test_optimizer_state_is_validated(damage, w):
    from safetensors.torch import load_file, save_file

    path = w / "run" / _ckpt(w) / "optimizer.safetensors"
    tensors = load_file(str(path))
    if damage == "empty":
        tensors = {}
    elif damage == "wrong-shape":
        name = next(k for k in tensors if k.endswith("exp_avg"))
        tensors[name] = torch.zeros(3, 3)
    else:
        tensors["999.exp_avg"] = torch.zeros(1)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="optimizer|parameter|moments"):
        _resume(w)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float64])
def test_stored_weights_of_another_dtype_are_refused(dtype, w):
    from safetensors.torch import load_file, save_file

    path = w / "model" / "model.safetensors"
    tensors = load_file(str(path))
    name = next(iter(sorted(tensors)))
    tensors[name] = tensors[name].to(dtype)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="stored as"):
        VQDraw.load(w / "model")


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(w, monkeypatch):
    import vqdraw.training.train as train_module

    real = train_module.train_step
    calls = [0]

    def poisoned(*args, **kwargs):
        calls[0] += 1
        out = real(*args, **kwargs)
        return {**out, "loss": float("nan")} if calls[0] == 2 else out

    monkeypatch.setattr(train_module, "train_step", poisoned)
    latest = _ckpt(w)
    with pytest.raises(TrainingDiverged, match=f"step 6.*{latest}"):
        fit(_model(), *_sets(), TrainConfig(**{**CFG, "steps": 8}), w / "run", resume=True, progress=False,
            pictures=False)
    assert _ckpt(w) == latest and sorted(p.name for p in (w / "run").glob("ckpt-*"))[-1] == latest


def test_a_failed_first_start_leaves_nothing(tmp_path, monkeypatch, capsys):
    import vqdraw.training.train as train_module

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "run" / "x"))

    monkeypatch.setattr(train_module, "train_step", broken)
    argv = ["train", "--dataset", "mnist-embedded", "--options", "4", "--stages", "2", "--segment", "2",
            "--steps", "2", "--batch", "4", "--eval-size", "4", "--no-progress", "--run", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "No space left on device" in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    assert main(argv) == 0  # a plain retry is not refused


# ------------------------------------------------------------------ numbers and the API
TRAIN_NUMBERS = [
    ({"final_coeff": float("nan")}, "final_coeff"),
    ({"final_coeff": float("inf")}, "final_coeff"),
    ({"final_coeff": 1e308}, "final_coeff"),
    ({"alpha": 1e308}, "alpha"),
    ({"lr_final": 1e308}, "lr_final"),
    ({"adam_eps": float("inf")}, "adam_eps"),
    ({"adam_eps": float("nan")}, "adam_eps"),
    ({"adam_betas": (float("nan"), 0.9)}, "adam_betas"),
    ({"seed": 2**63 - 1}, "seed"),
    ({"time_budget": float("inf")}, "time_budget"),
]


@pytest.mark.parametrize("over,needle", TRAIN_NUMBERS, ids=[str(o) for o, _ in TRAIN_NUMBERS])
def test_absurd_training_numbers_are_refused(over, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(**over)


CLI_NUMBERS = [
    (["--final-coeff", "1e308"], "--final-coeff: must be at most"),
    (["--adam-eps", "nan"], "--adam-eps: must be a finite number"),
    (["--seed", str(2**63 - 1)], "seed"),
    (["--stages", "65535"], "parameters"),
    (["--data-shape", "1", "100000", "100000"], "--data-shape: must be at most"),
]


@pytest.mark.parametrize("extra,needle", CLI_NUMBERS, ids=[" ".join(e) for e, _ in CLI_NUMBERS])
def test_absurd_training_flags_are_one_line(extra, needle, tmp_path, capsys):
    start = time.perf_counter()
    argv = ["train", "--dataset", "mnist-embedded", "--steps", "2", "--no-progress", "--run", str(tmp_path / "r"),
            *extra]
    assert main(argv) == 2
    assert time.perf_counter() - start < 20
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def _api_cases(m):
    x = torch.rand(2, 1, 28, 28)
    from vqdraw.compress import codec

    return {
        "decode(None)": lambda: m.decode(None),
        "sample(-1)": lambda: m.sample(-1),
        "sample(2.5)": lambda: m.sample(2.5),
        "from_preset(options=10**9)": lambda: VQDraw.from_preset("mnist", options=10**9),
        "from_preset(data_shape=huge)": lambda: VQDraw.from_preset("mnist", data_shape=(1, 100000, 100000)),
        "load(None)": lambda: VQDraw.load(None),
        "encode(beam=True)": lambda: m.encode(x, beam=True),
        "encode(stages=True)": lambda: m.encode(x, stages=True),
        "reconstruct(beam=True)": lambda: m.reconstruct(x, beam=True),
        "encode(meta)": lambda: m.encode(torch.empty(2, 1, 28, 28, device="meta")),
        "encode(sparse)": lambda: m.encode(x.to_sparse()),
        "encode(float8)": lambda: m.encode(x.to(torch.float8_e4m3fn)),
        "decompress(batch_size=2.5)": lambda: codec.decompress(m, codec.compress(m, x), batch_size=2.5),
        "VQDraw(None)": lambda: VQDraw(None),
        # issue 35: every bad argument typed, sizes bounded before anything is allocated
        "from_pretrained(None)": lambda: VQDraw.from_pretrained(None),
        "from_pretrained(5)": lambda: VQDraw.from_pretrained(5),
        "encode(beam=10**9)": lambda: m.encode(x[:1], beam=10**9),
        "encode(beam=2.0**70)": lambda: m.encode(x[:1], beam=2.0**70),
        "reconstruct(beam=10**6)": lambda: m.reconstruct(x[:1], beam=10**6),
        "beam_search(beam=10**9)": lambda: _search().beam_search(m, x[:1], 10**9),
        "sample(10**9)": lambda: m.sample(10**9),
        "load_prior(None)": lambda: _prior_module().load_prior(None),
        "load_prior(5)": lambda: _prior_module().load_prior(5),
        "find_prior(None)": lambda: _prior_module().find_prior(None),
        "Prior.sample(-1)": lambda: _tiny_prior().sample(-1),
        "Prior.sample(2.5)": lambda: _tiny_prior().sample(2.5),
        "Prior.sample(10**9)": lambda: _tiny_prior().sample(10**9),
        "Prior.sample(stages=True)": lambda: _tiny_prior().sample(2, stages=True),
        "Prior.sample(temperature=True)": lambda: _tiny_prior().sample(2, temperature=True),
        "load_distilled(None)": lambda: _distill().load_distilled(None),
    }


def _prior_module():
    import vqdraw.prior as prior

    return prior


def _tiny_prior():
    prior = _prior_module()
    return prior.Prior(prior.PriorNet(prior.PriorConfig(4, 2, embed=4, hidden=4)))


def _search():
    import vqdraw.core.search as search

    return search


def _distill():
    import vqdraw.training.distill as distill

    return distill


@pytest.mark.parametrize("name", list(_api_cases(None)))
def test_python_api_raises_typed_errors(name):
    m = _model().eval()
    start = time.perf_counter()
    with pytest.raises(VQDrawError):
        _api_cases(m)[name]()
    assert time.perf_counter() - start < 5


# ------------------------------------------------------------------ voxel files
def _npz_with_member(path, header_shape, payload: bytes, dtype="|b1"):
    header = {"descr": dtype, "fortran_order": False, "shape": header_shape}
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + payload
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("voxels.npy", npy)
    return path


def test_npz_members_are_sized_before_inflating(tmp_path, monkeypatch):
    from vqdraw.data import voxels
    from vqdraw.data.base import DatasetError

    lying = _npz_with_member(tmp_path / "lying.npz", (100_000, 64, 64, 64), b"\0" * 512)
    with pytest.raises(DatasetError, match="declares shape"):
        voxels.read_grids(lying)
    monkeypatch.setattr(voxels, "MAX_NPZ_MEMBER_BYTES", 1 << 20)
    bomb = _npz_with_member(tmp_path / "bomb.npz", (4, 64, 64, 64), b"\0" * (4 << 18) + b"\0" * (2 << 20))
    with pytest.raises(DatasetError, match="more than"):
        voxels.read_grids(bomb)
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8, 8), bool))
    with pytest.raises(DatasetError, match="no grids"):
        voxels.read_grids(tmp_path / "empty.npy")
    os.mkfifo(tmp_path / "f.npy")
    with pytest.raises(DatasetError, match="not a regular file"):
        voxels.read_grids(tmp_path / "f.npy")


def _npy_declaring(path, header_shape, payload: bytes = b"\0" * 512, dtype="|b1"):
    header = {"descr": dtype, "fortran_order": False, "shape": header_shape}
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + payload)
    return path


NPY_HEADERS = {  # issue 35: the shape a .npy header declares, and what the one line says
    "(-1, 8, 8, 8)": ((-1, 8, 8, 8), "negative"),
    "(2**62, 8, 8, 8)": ((2**62, 8, 8, 8), "declares shape"),
    "(2**40, 2**40, 8, 8)": ((2**40, 2**40, 8, 8), "declares shape"),
    "(2, 8, 8, 8) with 512 bytes": ((2, 8, 8, 8), "declares shape"),
}


@pytest.mark.parametrize("name", list(NPY_HEADERS))
def test_npy_headers_are_checked_before_mapping(name, tmp_path, capsys):
    from vqdraw.data import voxels
    from vqdraw.data.base import DatasetError

    shape, needle = NPY_HEADERS[name]
    path = _npy_declaring(tmp_path / "grids.npy", shape)
    with _no_warnings():
        with pytest.raises(DatasetError, match=needle):
            voxels.read_grids(path)
    torch.manual_seed(0)
    model = VQDraw.from_preset("voxels32", data_shape=(1, 8, 8, 8), stages=1, segment=1, options=4)
    model.save(tmp_path / "model")
    with _no_warnings():
        rc = main(["encode", str(tmp_path / "model"), str(path), "-o", str(tmp_path / "o.vqd")])
    assert rc == 2 and needle in one_error_line(capsys)
    assert not (tmp_path / "o.vqd").exists()


def _no_warnings():
    import warnings

    class Catch(warnings.catch_warnings):
        def __exit__(self, *exc):
            caught = self.log if hasattr(self, "log") else []
            out = super().__exit__(*exc)
            assert not caught, [str(w.message) for w in caught]
            return out

        def __enter__(self):
            self.log = super().__enter__()
            warnings.simplefilter("always")
            return self.log

    return Catch(record=True)


def test_nan_pixels_in_a_float_tiff_are_refused(w, capsys):
    from PIL import Image

    arr = np.full((28, 28), 0.5, np.float32)
    arr[3, 4] = np.nan
    Image.fromarray(arr, mode="F").save(w / "nan.tif")
    assert main(["encode", str(w / "model"), str(w / "nan.tif"), "-o", str(w / "o.vqd")]) == 2
    assert "NaN" in one_error_line(capsys)
    assert not (w / "o.vqd").exists()


def test_fuzzed_state_json_and_metrics_rows_give_only_typed_errors(pristine):
    """A seeded fuzz of state.json values and metrics rows: check_state raises only
    CheckpointError, and a row is kept only with a whole step and numeric values."""
    import random

    from vqdraw import runs

    ckpt = runs.read_latest(pristine / "run")
    good = json.loads((ckpt / "state.json").read_text())
    runs.check_state(good, "state.json")
    rng = random.Random(0)
    junk = [None, True, -1, 2.5, 10**30, "x", [], {}, [1, 2, 3], {"a": 1}, 1e300, -0.0, 0]
    refused = 0
    for _ in range(400):
        state = json.loads(json.dumps(good))
        group = state["optimizer"]["param_groups"][0]
        target, key = rng.choice([(state, "step"), (state, "time_spent"), (state, "optimizer"),
                                  (group, "betas"), (group, "eps"), (group, "lr"), (group, "params"),
                                  (group, "weight_decay"), (state["optimizer"], "scalars")])
        target[key] = rng.choice(junk)
        try:
            runs.check_state(state, "state.json")
        except CheckpointError as exc:
            assert "\n" not in str(exc)
            refused += 1
    assert refused > 200
    for _ in range(400):
        row = {"step": rng.choice(junk), "loss": rng.choice(junk)}
        kept = runs._metrics_row(row)
        assert kept == (isinstance(row["step"], int) and not isinstance(row["step"], bool)
                        and 0 <= row["step"] <= runs.MAX_STEP
                        and isinstance(row["loss"], (int, float)) and not isinstance(row["loss"], bool))


def test_beam_search_of_many_images_runs_in_chunks_with_the_same_result(monkeypatch):
    from vqdraw.core import search

    m = _model().eval()
    x = load_dataset("mnist-embedded", "test").batch(range(5))
    whole = search.beam_search(m, x, 4)
    monkeypatch.setattr(search, "MAX_CANVASES", 8)  # two images at a time
    parts = search.beam_search(m, x, 4)
    assert torch.equal(whole.codes, parts.codes)
    torch.testing.assert_close(whole.reconstruction, parts.reconstruction)
    torch.testing.assert_close(whole.losses, parts.losses)
