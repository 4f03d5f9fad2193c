"""The runtime (device, precision, compile, data parallelism) is resolved once, by Runtime.resolve,
and fit takes it whole or as its four parts, never both."""

from __future__ import annotations

import pytest
import torch

from vqdraw import TrainConfig, VQDraw, fit
from vqdraw.data import load_dataset
from vqdraw.errors import ConfigError
from vqdraw.training.runtime import Runtime


def test_resolve_names_a_device_and_a_concrete_precision():
    rt = Runtime.resolve("cpu", "auto")
    assert rt.device == torch.device("cpu") and rt.precision in ("fp32", "bf16")
    assert rt.main and not rt.dist.enabled
    assert rt.local_slice(32) == slice(0, 32)
    assert rt.describe() == f"cpu ({rt.precision})"
    assert Runtime.resolve("cpu", "bf16").precision == "bf16"


def test_an_unknown_precision_is_one_line():
    with pytest.raises(ConfigError, match="precision must be one of") as info:
        Runtime.resolve("cpu", "fp8")
    assert "\n" not in str(info.value)


def test_distributed_without_a_process_group_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="no process group"):
        Runtime.resolve("cpu", distributed=True)


def test_fit_takes_a_runtime_and_refuses_it_twice(tmp_path):
    train, test = load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")
    cfg = TrainConfig(steps=2, batch=4, eval_every=2, eval_size=8, dataset="mnist-embedded")
    torch.manual_seed(0)
    model = VQDraw.from_preset("mnist", options=8, stages=2, segment=2)
    with pytest.raises(ConfigError, match="not both"):
        fit(model, train, test, cfg, tmp_path / "twice", runtime=Runtime.resolve("cpu"), device="cpu",
            progress=False, pictures=False)
    assert not (tmp_path / "twice").exists()
    result = fit(model, train, test, cfg, tmp_path / "run", runtime=Runtime.resolve("cpu"),
                 progress=False, pictures=False)
    assert result.step == 2


def test_fit_takes_options_or_their_keywords_and_warns_on_runtime_keywords(tmp_path):
    from vqdraw import FitOptions

    train, test = load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")
    cfg = TrainConfig(steps=2, batch=4, eval_every=2, eval_size=8, dataset="mnist-embedded")
    torch.manual_seed(0)
    model = VQDraw.from_preset("mnist", options=8, stages=2, segment=2)
    result = fit(model, train, test, cfg, tmp_path / "a", options=FitOptions(progress=False, pictures=False))
    assert result.step == 2
    with pytest.warns(DeprecationWarning, match="runtime=Runtime.resolve"):
        result = fit(model, train, test, cfg, tmp_path / "b", precision="fp32", progress=False, pictures=False)
    assert result.step == 2
    with pytest.raises(ConfigError, match="not both"):
        fit(model, train, test, cfg, tmp_path / "c", options=FitOptions(), progress=False)
    with pytest.raises(TypeError, match="no_such_option"):
        fit(model, train, test, cfg, tmp_path / "d", no_such_option=1)
