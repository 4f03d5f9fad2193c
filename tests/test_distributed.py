"""Data-parallel training (torchrun, gloo on CPU) matches one process with the same global batch.

Runs the real command line: ``torchrun --standalone --nproc_per_node=2 -m vqdraw.cli train`` and
``python -m vqdraw.cli train``, one thread per process, a tiny model and a few steps.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vqdraw import VQDraw
from vqdraw.training.distributed import DistInfo, init_from_env, local_slice

MODEL = ["--preset", "mnist", "--options", "8", "--stages", "3", "--segment", "2"]
TRAIN = ["--dataset", "mnist-embedded", "--batch", "8", "--micro-batch", "2", "--log-every", "1",
         "--eval-every", "100", "--save-every", "3", "--eval-size", "16", "--seed", "1",
         "--no-progress", "--device", "cpu",
         "--paper-lr"]  # a constant step size: the runs compared here have different step totals


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _train(run: Path, steps: int, nproc: int = 1, resume: bool = False) -> None:
    cli = ["vqdraw.cli", "train", *TRAIN, "--steps", str(steps), "--run", str(run)]
    cli += ["--resume"] if resume else MODEL  # a resumed run takes its model from the run folder
    if nproc > 1:
        # "--" after -m: torchrun's own parser would otherwise take --run for its --run-path
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "--", *cli]
    else:
        cmd = [sys.executable, "-m", *cli]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]


def _losses(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _close_runs(a: Path, b: Path, step: int) -> None:
    """Same logged terms for steps 1..step, same parameters at checkpoint `step`."""
    la = [r for r in _losses(a) if r["step"] <= step]
    lb = [r for r in _losses(b) if r["step"] <= step]
    assert [r["step"] for r in la] == [r["step"] for r in lb] == list(range(1, step + 1))
    for ra, rb in zip(la, lb):
        for key in ("loss", "chosen", "all", "final", "entropy"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra["step"], key)
        assert ra["used"] == rb["used"]
    ckpt = f"ckpt-{step:08d}"
    ma, mb = VQDraw.load(a / ckpt), VQDraw.load(b / ckpt)
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.allclose(pa, pb, rtol=1e-4, atol=1e-5), name


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, 5 steps (checkpoints at steps 3 and 5)."""
    run = tmp_path_factory.mktemp("single") / "run"
    _train(run, steps=5)
    return run


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Two processes (torchrun, gloo), 3 steps."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    _train(run, steps=3, nproc=2)
    return run


def test_two_processes_match_one_process(single, two):
    # rank 0 alone wrote the run folder: one line per step, a checkpoint, pictures
    assert [r["step"] for r in _losses(two)] == [1, 2, 3]
    assert (two / "samples.png").exists() and (two / "LATEST").exists()
    _close_runs(single, two, step=3)


def test_resume_across_world_sizes(single, two, tmp_path):
    """Two processes for 3 steps, then one process resumes to 5: the same run as one process."""
    run = tmp_path / "mixed"
    shutil.copytree(two, run)
    _train(run, steps=5, resume=True)
    _close_runs(single, run, step=5)


def test_single_process_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env("cpu") == DistInfo()
    assert local_slice(8, DistInfo()) == slice(0, 8)
    assert local_slice(8, DistInfo(rank=1, world_size=2)) == slice(4, 8)
    with pytest.raises(ValueError, match="divisible"):
        local_slice(9, DistInfo(rank=0, world_size=2))


# ---------------------------------------------------------------- hostile launch variables (issue 35)
LAUNCH_ENVS = {  # variables -> the variable the one line names
    "WORLD_SIZE=abc": ({"WORLD_SIZE": "abc"}, "WORLD_SIZE"),
    "WORLD_SIZE=0": ({"WORLD_SIZE": "0"}, "WORLD_SIZE"),
    "WORLD_SIZE=-2": ({"WORLD_SIZE": "-2"}, "WORLD_SIZE"),
    "no RANK": ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "RANK"),
    "RANK=x": ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK"),
    "RANK=5 of 2": ({"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, "RANK=5"),
    "RANK=-1": ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK"),
    "LOCAL_RANK=y": ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "y"}, "LOCAL_RANK"),
    "no MASTER_ADDR": ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR"),
    "no MASTER_PORT": ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT"),
    "MASTER_PORT=99999": ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "99999"},
                          "MASTER_PORT"),
}


@pytest.mark.parametrize("name", list(LAUNCH_ENVS))
def test_launch_variables_are_checked_in_one_place(name, monkeypatch, tmp_path, capsys):
    from vqdraw.cli import main
    from vqdraw.errors import ConfigError
    from vqdraw.training.distributed import launch_env

    env, variable = LAUNCH_ENVS[name]
    with pytest.raises(ConfigError, match=variable) as info:
        launch_env(env)
    assert "\n" not in str(info.value)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=variable):
        init_from_env("cpu")
    rc = main(["train", *MODEL, *TRAIN, "--steps", "1", "--run", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and variable in err, err
    assert not (tmp_path / "run").exists()


def test_single_process_variables_need_nothing_else():
    from vqdraw.training.distributed import LaunchEnv, launch_env

    assert launch_env({}) == launch_env({"WORLD_SIZE": "1", "RANK": "junk"}) == LaunchEnv()
    assert launch_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
                       "MASTER_PORT": "29500"}) == LaunchEnv(2, 1, 1, "h", 29500)


def test_a_missing_peer_is_announced_then_times_out_in_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(_env(), WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cmd = [sys.executable, "-m", "vqdraw.cli", "train", *MODEL, *TRAIN, "--steps", "1",
           "--run", str(tmp_path / "run"), "--dist-timeout", "3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "waiting for the other ranks at 127.0.0.1" in proc.stderr and "3 s" in lines[0], proc.stderr
    assert "error:" in lines[-1] and "MASTER_PORT" in lines[-1] and "Traceback" not in proc.stderr
