"""TensorBoard logging: every number fit logs becomes a scalar at its step (the writer injected)."""

import pytest
import torch

from vqdraw import TrainConfig, VQDraw, fit
from vqdraw.data import load_dataset
from vqdraw.training.tensorboard import TensorBoardLog


class FakeWriter:
    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False

    def add_scalar(self, key, value, step):
        self.scalars.append((key, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_fit_logs_every_number_at_its_step(tmp_path, fast_embedded_mnist):
    train, test = load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")
    torch.manual_seed(0)
    model = VQDraw.from_preset("mnist", options=8, stages=2, segment=2)
    cfg = TrainConfig(steps=4, batch=4, log_every=2, eval_every=4, eval_size=8, dataset="mnist-embedded")
    with TensorBoardLog(tmp_path / "tb", writer_factory=FakeWriter) as log:
        result = fit(model, train, test, cfg, tmp_path / "run", progress=False, pictures=False, on_log=log)
    assert log.writer.closed and log.writer.log_dir == str(tmp_path / "tb")
    logged = {(k, s): v for k, v, s in log.writer.scalars}
    for record in result.metrics:  # the same records as metrics.jsonl
        for key in ("loss", "lr"):
            assert logged[(key, record["step"])] == pytest.approx(record[key])
    assert ("test_mse", 4) in logged and ("test_mse", 2) not in logged  # evaluated at step 4 only


def test_missing_tensorboard_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    from vqdraw.cli import main

    code = main(["train", "--preset", "mnist", "--dataset", "mnist-embedded", "--steps", "1", "--options", "8",
                 "--stages", "2", "--segment", "2", "--batch", "2", "--run", str(tmp_path / "run"),
                 "--tensorboard", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and 'vqdraw[tensorboard]' in err[-1]
