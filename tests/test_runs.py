"""Model and run folders (vqdraw.runs): one save/load for the four kinds of network, the run lock,
hostile folders (LATEST, NaN weights), crash debris, metrics.jsonl rewritten atomically, and the
training loop's progress output (vqdraw.loop)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import torch

from vqdraw import runs
from vqdraw.core.config import ModelConfig, RefinerConfig, TrainConfig
from vqdraw.errors import CheckpointError, ConfigError, VQDrawError
from vqdraw.core.model import VQDraw
from vqdraw.training.train import fit

pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")

TINY = ModelConfig((1, 28, 28), options=4, stages=2, segment=2,
                   refiner=RefinerConfig(down=(8, 8), body=(8,), up=(8, 8)))


@pytest.fixture(scope="module")
def data():
    from vqdraw.data import load_dataset

    return (load_dataset("mnist-embedded", "train").subset(range(64)),
            load_dataset("mnist-embedded", "test").subset(range(16)))


def cfg(**kw):
    base = dict(steps=2, batch=8, eval_every=2, save_every=1, log_every=1, eval_size=16, seed=0,
                dataset="mnist-embedded")
    return TrainConfig(**{**base, **kw})


def tiny(seed=0):
    torch.manual_seed(seed)
    return VQDraw(TINY)


def train(data, run, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("pictures", False)
    return fit(tiny(kw.pop("seed", 0)), data[0], data[1], kw.pop("config", cfg()), run, **kw)


def steps_logged(run):
    return [json.loads(x)["step"] for x in (run / runs.METRICS_FILE).read_text().splitlines()]


# ---------------------------------------------------------------------- the lock
def test_a_second_writer_is_refused_and_told_who_holds_the_folder(tmp_path, data):
    run = tmp_path / "run"
    with runs.RunLock(run):
        with pytest.raises(VQDrawError, match=f"pid {os.getpid()} on .*started"):
            runs.RunLock(run).acquire()
        with pytest.raises(VQDrawError, match="in use by another vqdraw process"):
            train(data, run)
    assert not runs.holds_run(run)  # the refused fit wrote nothing


def test_the_cli_prints_one_line_and_exits_2_when_the_run_is_locked(tmp_path, capsys):
    from vqdraw.cli import main

    run = tmp_path / "run"
    with runs.RunLock(run):
        code = main(["train", "--run", str(run), "--dataset", "mnist-embedded", "--steps", "1", "--batch", "4", "--options", "4",
                     "--stages", "2", "--segment", "2", "--eval-size", "8", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the one-line description of the run
    assert last.startswith("vqdraw train: error: ") and f"pid {os.getpid()}" in last


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vqdraw.runs import RunLock; "
         f"RunLock({str(run)!r}).acquire(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(VQDrawError, match=f"pid {holder.pid} "):
            runs.RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    with runs.RunLock(run):  # the kernel dropped the dead holder's lock; its .lock file remains
        assert str(os.getpid()) in (run / runs.LOCK_FILE).read_text()


def test_the_lock_is_released_after_an_exception(tmp_path, data):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with runs.RunLock(run):
            raise RuntimeError("boom")
    train(data, run)
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(data, run)  # fails inside the lock ...
    runs.RunLock(run).acquire().release()  # ... and released it


def test_a_file_is_not_a_run_folder(tmp_path, data):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        train(data, f)


# ---------------------------------------------------------------------- a run already there
def test_an_existing_run_needs_resume_or_overwrite(tmp_path, data):
    run = tmp_path / "run"
    train(data, run)
    first = VQDraw.load(run).fingerprint()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="--resume.*--overwrite"):
        train(data, run, seed=1)
    assert VQDraw.load(run).fingerprint() == first
    result = train(data, run, seed=1, overwrite=True, config=cfg(steps=1))
    assert result.step == 1 and steps_logged(run) == [1]
    assert [p.name for p in runs.checkpoints(run)] == ["ckpt-00000001"]
    assert VQDraw.load(run).fingerprint() != first
    assert (run / "notes.txt").read_text() == "mine"  # only what a run writes is removed


def test_a_folder_with_only_metrics_counts_as_a_run(tmp_path, data):
    run = tmp_path / "run"
    run.mkdir()
    (run / runs.METRICS_FILE).write_text('{"step": 1}\n')
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(data, run)


# ---------------------------------------------------------------------- hostile folders
@pytest.fixture
def run_with_outside(tmp_path):
    """run/ckpt-00000001 (a model) and outside/ (another model), LATEST naming the checkpoint."""
    run, outside = tmp_path / "run", tmp_path / "outside"
    tiny().save(run / "ckpt-00000001")
    tiny(1).save(outside)
    (run / runs.LATEST_FILE).write_text("ckpt-00000001\n")
    return run, outside


def test_latest_naming_a_checkpoint_inside_loads(run_with_outside):
    run, _ = run_with_outside
    assert VQDraw.load(run).fingerprint() == tiny().fingerprint()


@pytest.mark.parametrize("content", ["ABSOLUTE", "../outside", "ckpt-00000001/../../outside", "", "..", "a\\b"])
def test_latest_may_not_name_anything_outside(run_with_outside, content):
    run, outside = run_with_outside
    (run / runs.LATEST_FILE).write_text(str(outside) if content == "ABSOLUTE" else content)
    with pytest.raises(CheckpointError, match="LATEST"):
        VQDraw.load(run)


def test_latest_may_not_follow_a_symlink_out(run_with_outside):
    run, outside = run_with_outside
    (run / "ckpt-evil").symlink_to(outside, target_is_directory=True)
    (run / runs.LATEST_FILE).write_text("ckpt-evil\n")
    with pytest.raises(CheckpointError, match="outside"):
        VQDraw.load(run)


@pytest.mark.parametrize("kind", ["directory", "huge", "not utf-8"])
def test_a_malformed_latest_is_one_clear_error(run_with_outside, kind):
    run, _ = run_with_outside
    latest = run / runs.LATEST_FILE
    latest.unlink()
    if kind == "directory":
        latest.mkdir()
    elif kind == "huge":
        latest.write_text("ckpt-00000001" + " " * 10_000)
    else:
        latest.write_bytes(b"ckpt-\xff\xfe")
    with pytest.raises(CheckpointError, match="LATEST"):
        VQDraw.load(run)


def test_the_cli_reports_a_hostile_latest_in_one_line(run_with_outside, capsys):
    from vqdraw.cli import main

    run, _ = run_with_outside
    (run / runs.LATEST_FILE).write_text("../outside")
    assert main(["sample", "--model", str(run), "-n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LATEST" in err[0]


def test_nan_weights_or_normalisation_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    tiny().save(folder)
    weights = load_file(str(folder / runs.WEIGHTS_FILE))
    name = sorted(weights)[0]
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(folder / runs.WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="NaN"):
        VQDraw.load(folder)

    tiny().save(folder)
    meta = json.loads((folder / runs.CONFIG_FILE).read_text())
    meta["model"]["mean"] = [float("nan")]
    (folder / runs.CONFIG_FILE).write_text(json.dumps(meta))  # json writes NaN as a bare NaN
    with pytest.raises((CheckpointError, ConfigError)):
        VQDraw.load(folder)


def test_format_and_version_are_checked(tmp_path):
    folder = tmp_path / "m"
    tiny().save(folder)
    meta = json.loads((folder / runs.CONFIG_FILE).read_text())
    for bad, needle in (({**meta, "version": 99}, "newer"), ({**meta, "version": "1"}, "integer"),
                        ({**meta, "format": "other"}, "not a vqdraw"), ({**meta, "model": []}, "not a vqdraw"),
                        ([1, 2], "not a vqdraw")):
        (folder / runs.CONFIG_FILE).write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=needle):
            VQDraw.load(folder)


# ---------------------------------------------------------------------- crash debris
def test_crash_debris_is_cleaned_and_a_finished_checkpoint_adopted(tmp_path, data):
    config = cfg(steps=4, save_every=2, eval_every=4)
    straight = train(data, tmp_path / "a", config=config)
    run = tmp_path / "b"
    train(data, run, config=config, stop_after=2)
    train(data, run, config=config, resume=True, stop_after=2)
    assert runs.read_latest(run).name == "ckpt-00000004"
    # a kill after ckpt-4 was renamed into place but before LATEST switched to it, and debris
    (run / runs.LATEST_FILE).write_text("ckpt-00000002\n")
    (run / ".ckpt-00000006.x1y2").mkdir()
    (run / ".ckpt-00000006.x1y2" / "model.safetensors").write_bytes(b"half")
    (run / ".LATEST.abc.tmp").write_text("ckpt-0000")
    resumed = train(data, run, config=config, resume=True, seed=5)
    assert resumed.step == straight.step == 4  # nothing left to train: ckpt-4 was adopted
    assert runs.read_latest(run).name == "ckpt-00000004"
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != runs.LOCK_FILE]
    assert steps_logged(run) == steps_logged(tmp_path / "a") == [1, 2, 3, 4]
    assert VQDraw.load(run).fingerprint() == VQDraw.load(tmp_path / "a").fingerprint()


def test_a_broken_newer_checkpoint_is_not_adopted(run_with_outside):
    run, _ = run_with_outside
    broken = run / "ckpt-00000009"
    tiny().save(broken)
    (broken / runs.WEIGHTS_FILE).write_bytes(b"\x00garbage")
    assert runs.clean_debris(run, verify=VQDraw.load) is None
    assert runs.read_latest(run).name == "ckpt-00000001" and not broken.exists()


# ---------------------------------------------------------------------- metrics.jsonl
def test_metrics_are_truncated_by_write_then_rename(tmp_path, monkeypatch):
    run = tmp_path
    text = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo'
    path = run / runs.METRICS_FILE
    path.write_text(text)

    def killed(*args):
        raise KeyboardInterrupt  # a kill at the moment of the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        runs.read_metrics(run, upto=3)
    assert path.read_text() == text  # untouched: never emptied, never half-written
    assert [p.name for p in run.iterdir()] == [runs.METRICS_FILE]  # no temporary file left
    monkeypatch.undo()
    inode = path.stat().st_ino
    rows = runs.read_metrics(run, upto=3)
    assert [r["step"] for r in rows] == [1, 2, 3] == steps_logged(run)
    assert path.stat().st_ino != inode  # a new file renamed into place, not rewritten in place


# ---------------------------------------------------------------------- one save/load, four kinds
def test_vqdraw_round_trip(tmp_path, digits):
    model = tiny().eval()
    model.save(tmp_path / "m")
    loaded = VQDraw.load(tmp_path / "m")
    assert loaded.config == model.config and loaded.fingerprint() == model.fingerprint()
    assert model.fingerprint() == runs.fingerprint(model.config.to_dict(), model.state_dict())
    assert torch.equal(loaded.encode(digits), model.encode(digits))


def test_distilled_encoder_round_trip(tmp_path, digits):
    from vqdraw.training.distill import DistilledConfig, DistilledEncoder

    enc = DistilledEncoder(DistilledConfig.for_model(tiny(), channels=(4, 8), hidden=16))
    enc.save(tmp_path, {"model_fingerprint": "x"})
    loaded = DistilledEncoder.load(tmp_path)
    assert loaded.config == enc.config and loaded.meta["model_fingerprint"] == "x"
    assert torch.equal(loaded.predict(digits), enc.predict(digits))
    with pytest.raises(CheckpointError):
        VQDraw.load(tmp_path)  # no config.json: not a VQ-DRAW model folder


def test_vqvae_round_trip(tmp_path, data, digits):
    from vqdraw.baselines.vqvae import VQVAE, build_vqvae

    model = build_vqvae(data[0], codebook=2, channels=(4, 8), latent_dim=2)
    model.train()
    model.loss(digits)  # the first forward initialises the codebook
    model.eval()
    model.save(tmp_path)
    loaded = VQVAE.load(tmp_path)
    assert loaded.config == model.config
    assert torch.equal(loaded.encode(digits), model.encode(digits))
    with pytest.raises(CheckpointError, match="not a vqdraw"):
        VQDraw.load(tmp_path)


def test_feature_net_round_trip(tmp_path, digits):
    from vqdraw.evaluate.metrics.features import FeatureNet, FeatureRecipe, read_feature_net, save_feature_net

    net = FeatureNet(FeatureRecipe(width=4, feature_dim=8)).eval()
    save_feature_net(net, tmp_path, "mnist-embedded", {"test_accuracy": 0.5})
    loaded, meta = read_feature_net(tmp_path)
    assert loaded.recipe == net.recipe and meta["dataset"] == "mnist-embedded" and meta["test_accuracy"] == 0.5
    assert torch.equal(loaded.features(digits), net.features(digits))
    meta["version"] = 1  # an older cache format is no longer read
    (tmp_path / "features.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no longer readable"):
        read_feature_net(tmp_path)


# ---------------------------------------------------------------------- progress output
def test_progress_off_a_terminal_is_plain_lines():
    from vqdraw.cli.progress import TerminalProgress

    out = io.StringIO()
    bar = TerminalProgress(total=100, desc="train", stream=out, every=25)
    for i in range(100):
        bar.update(1, {"loss": f"{1 / (i + 1):.3f}"})
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue()
    assert lines[-1].startswith("train: 100/100 steps, loss 0.010")


@pytest.fixture
def reporter():
    """The command's progress display installed for one test (the library itself is silent)."""
    from vqdraw import progress
    from vqdraw.cli.progress import TerminalProgress

    previous = progress.set_reporter(TerminalProgress)
    yield
    progress.set_reporter(previous)


def test_fit_with_progress_into_a_pipe_writes_no_carriage_returns(tmp_path, data, capsys, reporter):
    train(data, tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    assert "train: 2/2 steps" in err and "\r" not in err


def test_the_library_reports_progress_to_a_callback_and_prints_nothing(tmp_path, data, capsys):
    from vqdraw import progress

    events = []

    class Record:
        def __init__(self, **job):
            events.append(("start", job["desc"], job["total"]))

        def set_total(self, total):
            events.append(("total", total))

        def update(self, n, postfix):
            events.append(("update", n))

        def close(self):
            events.append(("close",))

    previous = progress.set_reporter(None)
    try:
        train(data, tmp_path / "silent", progress=True)
        assert capsys.readouterr() == ("", "")
        progress.set_reporter(Record)
        train(data, tmp_path / "reported", progress=True)
        assert capsys.readouterr() == ("", "")
    finally:
        progress.set_reporter(previous)
    assert events[0] == ("start", "train", 2) and events.count(("update", 1)) == 2 and events[-1] == ("close",)


# ---------------------------------------------------------------------- priors and rotation (issue 35)
def test_rotation_keeps_a_checkpoint_holding_a_prior(tmp_path, data):
    from vqdraw.prior import Prior, PriorConfig, PriorNet, load_prior

    run = tmp_path / "run"
    train(data, run)  # save_every 1, keep 2: ckpt 1 and 2
    first = run / "ckpt-00000001"
    model = VQDraw.load(first)
    Prior(PriorNet(PriorConfig(4, 2, 4, 4)), model.fingerprint()).save(first)
    assert runs.holds_keepsakes(first) and not runs.holds_keepsakes(run / "ckpt-00000002")
    train(data, run, config=cfg(steps=5), resume=True)
    names = [p.name for p in runs.checkpoints(run)]
    assert names == ["ckpt-00000001", "ckpt-00000004", "ckpt-00000005"]  # the rest rotated as before
    assert load_prior(first, VQDraw.load(first)).model_fingerprint == model.fingerprint()
    train(data, run, config=cfg(steps=2), overwrite=True)  # --overwrite still clears everything
    assert [p.name for p in runs.checkpoints(run)] == ["ckpt-00000001", "ckpt-00000002"]
    assert not (run / "ckpt-00000001" / "prior.json").exists()


def test_prior_refuses_a_run_that_is_training(tmp_path, data, capsys):
    from vqdraw.cli import main

    run = tmp_path / "run"
    train(data, run)
    with runs.RunLock(run):  # what a training process holds for as long as it runs
        rc = main(["prior", str(run), "--steps", "1", "--train-items", "20", "--test-items", "10",
                   "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "in use by another vqdraw process" in err[-1] and "Traceback" not in "".join(err), err
    assert not any((p / "prior.json").exists() for p in runs.checkpoints(run))
