"""Quality per minute: step-size schedules, the time budget (fake clock), the weight average (EMA)
in checkpoints and exact resumption, and the choice of bf16 autocast."""

import itertools
import math

import pytest
import torch

from vqdraw import TrainConfig, VQDraw
from vqdraw.core.config import ModelConfig, RefinerConfig
from vqdraw.errors import ConfigError
from vqdraw.runs import TRAINING_WEIGHTS_FILE, load_training_weights, read_latest
from vqdraw.training.schedule import TimeBudget, learning_rate
from vqdraw.training.train import fit, resolve_precision

pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")


def small_model(seed=0):
    torch.manual_seed(seed)
    refiner = RefinerConfig(down=(8,), body=(8,), up=(8,))
    return VQDraw(ModelConfig((1, 28, 28), options=4, stages=2, segment=2, refiner=refiner))


def small_cfg(**kw):
    base = dict(steps=6, batch=4, eval_every=3, save_every=3, log_every=1, eval_size=8, seed=3)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def digits():
    from vqdraw.data import load_dataset

    return load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")


# ---------------------------------------------------------------------- schedules
def test_warmup_rises_linearly_then_holds():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup=10)
    assert learning_rate(cfg, 0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 4) == pytest.approx(5e-4)
    assert learning_rate(cfg, 9) == pytest.approx(1e-3)
    assert learning_rate(cfg, 10) == learning_rate(cfg, 99) == 1e-3


def test_linear_anneal_without_warmup_is_the_authors_formula():
    cfg = TrainConfig(steps=200, lr=1e-3, lr_final=1e-4)
    for step in (0, 50, 199):  # step s+1 of S: lr + (lr_final - lr) (s+1)/S; the last one at lr_final
        assert learning_rate(cfg, step) == pytest.approx(1e-3 + (1e-4 - 1e-3) * (step + 1) / 200)
    assert learning_rate(TrainConfig(steps=200, lr=1e-3, lr_final=1e-4, paper_lr=True), 199) == 1e-3


def test_cosine_anneal_after_warmup():
    cfg = TrainConfig(steps=110, lr=2e-3, lr_final=0.0, warmup=10, anneal="cosine")
    assert learning_rate(cfg, 9) == pytest.approx(2e-3)  # the warm-up ends at the peak
    assert learning_rate(cfg, 59) == pytest.approx(1e-3)  # halfway: half the peak
    assert learning_rate(cfg, 34) == pytest.approx(1e-3 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(cfg, 109) == pytest.approx(0.0)  # the last step runs at lr_final
    # a projected total (the time budget's) stretches or shrinks the same curve
    assert learning_rate(cfg, 29, total=50) == pytest.approx(1e-3)


def test_schedule_fields_are_checked():
    with pytest.raises(ConfigError, match="anneal"):
        TrainConfig(anneal="step")
    with pytest.raises(ConfigError, match="ema"):
        TrainConfig(ema=1.0)
    with pytest.raises(ConfigError, match="time_budget"):
        TrainConfig(time_budget=0)
    with pytest.raises(ConfigError, match="warmup"):
        TrainConfig(warmup=-1)


def test_new_fields_default_to_the_old_behaviour():
    """A train.json written before these fields loads to the same config (resume unchanged)."""
    old = {k: v for k, v in TrainConfig().to_dict().items()
           if k not in ("warmup", "anneal", "ema", "time_budget")}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.warmup, cfg.anneal, cfg.ema, cfg.time_budget) == (0, "linear", 0.0, None)
    assert [learning_rate(cfg, s) for s in (0, 10, 1000)] == [cfg.lr] * 3


# ---------------------------------------------------------------------- time budget
def test_time_budget_projects_and_stops_within_one_step():
    now = [0.0]
    budget = TimeBudget(10.0, max_steps=1000, clock=lambda: now[0])
    assert budget.total(0) == 1000  # nothing measured yet
    steps = 0
    while True:
        now[0] += 0.3
        steps += 1
        if budget.tick():
            break
        assert abs(budget.total(steps) - 33) <= 1  # 10 s / 0.3 s
    assert abs(steps * 0.3 - 10.0) <= 0.3 and steps * 0.3 <= 10.0 + 1e-9


def test_fit_with_a_time_budget_ends_on_time_and_anneals_to_the_end(digits, tmp_path):
    """A fake clock that advances 1.5 s each time it is read: 30 s fits 20 steps; the clock is
    read once per step (and once at the start) so the run stops at 20 ± 1."""
    ticks = itertools.count()
    clock = lambda: 1.5 * next(ticks)  # noqa: E731
    cfg = small_cfg(steps=1000, time_budget=0.5, lr_final=0.0, warmup=2, eval_every=1000,
                    save_every=1000, log_every=1)
    result = fit(small_model(), *digits, cfg, tmp_path / "run", progress=False, pictures=False,
                 clock=clock)
    assert abs(result.step - 20) <= 1, result.step
    lrs = [m["lr"] for m in result.metrics]
    assert lrs[0] == pytest.approx(cfg.lr / 2) and lrs[1] == pytest.approx(cfg.lr)
    assert lrs[-1] < 0.1 * cfg.lr  # the anneal was fitted to the budget, not to steps=1000
    assert "test_mse" in result.metrics[-1]  # the last step is evaluated and saved
    assert read_latest(tmp_path / "run").name == f"ckpt-{result.step:08d}"


# ---------------------------------------------------------------------- EMA
def _params(model):
    return {k: v.clone() for k, v in model.named_parameters()}


def test_ema_checkpoint_holds_the_average_and_resume_is_exact(digits, tmp_path):
    cfg = small_cfg(ema=0.9)
    straight = small_model()
    fit(straight, *digits, cfg, tmp_path / "a", progress=False, pictures=False)
    ckpt = read_latest(tmp_path / "a")
    saved = VQDraw.load(ckpt)
    raw = load_training_weights(ckpt)
    # the saved model is the average, not the raw weights training ended on
    assert (ckpt / TRAINING_WEIGHTS_FILE).exists()
    for name, p in straight.named_parameters():
        assert torch.equal(raw[name], p.detach())
    differs = [n for n, p in saved.named_parameters() if not torch.equal(p, raw[n])]
    assert differs

    interrupted = small_model()
    fit(interrupted, *digits, cfg, tmp_path / "b", progress=False, pictures=False, stop_after=3)
    fit(small_model(1), *digits, cfg, tmp_path / "b", progress=False, pictures=False, resume=True)
    ckpt_b = read_latest(tmp_path / "b")
    for name, value in load_training_weights(ckpt_b).items():
        assert torch.equal(value, raw[name]), name
    for (name, p), q in zip(VQDraw.load(ckpt_b).named_parameters(), saved.parameters()):
        assert torch.equal(p, q), name


def test_ema_is_what_gets_evaluated(digits, tmp_path):
    """The logged test error is the average's: evaluating the saved model gives it again."""
    from vqdraw.training.train import evaluate

    cfg = small_cfg(ema=0.5, steps=3, eval_every=3)
    result = fit(small_model(), *digits, cfg, tmp_path / "run", progress=False, pictures=False)
    saved = VQDraw.load(read_latest(tmp_path / "run")).eval()
    images = digits[1].batch(range(cfg.eval_size))
    assert evaluate(saved, images)["test_mse"] == pytest.approx(result.metrics[-1]["test_mse"], rel=1e-6)


def test_without_ema_no_raw_weights_file(digits, tmp_path):
    fit(small_model(), *digits, small_cfg(steps=3), tmp_path / "run", progress=False, pictures=False)
    assert load_training_weights(read_latest(tmp_path / "run")) is None


# ---------------------------------------------------------------------- precision
def test_auto_precision_is_bf16_only_with_native_bf16():
    assert resolve_precision("auto", "cpu", cpu_flags={"avx512f", "amx_bf16", "amx_tile"}) == "bf16"
    assert resolve_precision("auto", "cpu", cpu_flags={"avx512f", "avx512_bf16"}) == "bf16"
    assert resolve_precision("auto", "cpu", cpu_flags={"avx512f", "avx2"}) == "fp32"
    assert resolve_precision("auto", "cpu", cpu_flags=set()) == "fp32"
    # a GPU: bf16 exactly where torch says it is supported (never on a machine without CUDA)
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert resolve_precision("auto", "cuda", cpu_flags={"amx_bf16"}) == ("bf16" if cuda_bf16 else "fp32")
    assert resolve_precision("fp32", "cpu", cpu_flags={"amx_bf16"}) == "fp32"
    assert resolve_precision("bf16", "cpu", cpu_flags=set()) == "bf16"
    with pytest.raises(ConfigError):
        resolve_precision("fp16", "cpu")


def test_library_default_stays_fp32():
    from vqdraw.training.runtime import Runtime

    assert Runtime.resolve("cpu").precision == "fp32"  # fit's runtime when none is given
