"""Training: eq. 3 lowers the test error on real digits; checkpoints save, load and resume exactly."""

import json

import pytest
import torch

from vqdraw import CheckpointError, TrainConfig, VQDraw, fit
from vqdraw.data import load_dataset
from vqdraw.training.train import batch_indices, evaluate, train_step


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist-embedded", "train"), load_dataset("mnist-embedded", "test")


def small_cfg(**kw):
    base = dict(steps=6, batch=8, eval_every=3, save_every=3, log_every=1, eval_size=32, seed=3,
                dataset="mnist-embedded")
    return TrainConfig(**{**base, **kw})


def tiny(seed=0):
    torch.manual_seed(seed)
    return VQDraw.from_preset("mnist", options=8, stages=3, segment=2)


def test_batch_indices_is_a_pure_function_of_step():
    n = 10
    seen = torch.cat([batch_indices(s, 4, n, seed=1) for s in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(3, 4, n, seed=1), batch_indices(3, 4, n, seed=1))
    assert not torch.equal(batch_indices(0, 10, n, seed=1), batch_indices(0, 10, n, seed=2))


def test_micro_batches_accumulate_to_the_full_batch_gradient(mnist):
    images = mnist[0].batch(range(8))
    results = []
    for micro in (8, 2):
        model = tiny()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train_step(model, opt, images, TrainConfig(batch=8, micro_batch=micro))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)


@pytest.mark.slow
def test_short_real_run_lowers_test_mse_by_a_large_margin(mnist, tmp_path, all_cores):
    """The mnist preset (K=64; 4 stages to keep it short) on the embedded digits, 80 steps."""
    model = VQDraw.from_preset("mnist", stages=4, segment=4)
    test_images = mnist[1].batch(range(200))
    before = evaluate(model.eval(), test_images)["test_mse"]
    cfg = TrainConfig(steps=80, batch=32, eval_every=80, save_every=80, eval_size=200, dataset="mnist-embedded")
    result = fit(model, mnist[0], mnist[1], cfg, tmp_path / "run", progress=False, pictures=False)
    after = result.metrics[-1]["test_mse"]
    assert after < 0.7 * before, (before, after)
    # entropy and option usage are logged (mini-batch entropy is at most ln K)
    assert 0 < result.metrics[-1]["entropy"] <= torch.log(torch.tensor(64.0)).item() + 1e-6
    assert 1 <= result.metrics[-1]["used"] <= 64


def test_save_load_identical_outputs(tmp_path, digits):
    model = tiny().eval()
    model.save(tmp_path / "m")
    loaded = VQDraw.load(tmp_path / "m").eval()
    assert loaded.config == model.config
    assert torch.equal(loaded.encode(digits), model.encode(digits))
    codes = model.encode(digits)
    assert torch.equal(loaded.decode(codes), model.decode(codes))
    assert loaded.fingerprint() == model.fingerprint()
    with torch.no_grad():
        next(loaded.parameters()).add_(1e-3)
    assert loaded.fingerprint() != model.fingerprint()


def test_run_folder_layout_and_pictures(mnist, tmp_path):
    run = tmp_path / "run"
    fit(tiny(), mnist[0], mnist[1], small_cfg(steps=3), run, progress=False)
    for name in ("LATEST", "metrics.jsonl", "train.json", "samples.png", "reconstructions.png",
                 "stages.png", "curves.png"):
        assert (run / name).exists(), name
    ckpt = run / (run / "LATEST").read_text().strip()
    assert {p.name for p in ckpt.iterdir()} == {"config.json", "model.safetensors",
                                                 "optimizer.safetensors", "state.json"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert "test_mse" in rows[-1] and "test_mse" not in rows[0]
    for key in ("loss", "chosen", "all", "final", "entropy", "used", "lr"):
        assert key in rows[0]
    # The run folder is the model.
    assert VQDraw.load(run).config == tiny().config
    # Optimizer state loads with weights_only torch.load semantics: no pickle at all.
    from safetensors.torch import load_file

    assert load_file(str(ckpt / "optimizer.safetensors"))


def test_resume_reaches_the_same_parameters(mnist, tmp_path):
    cfg = small_cfg()
    straight = fit(tiny(), mnist[0], mnist[1], cfg, tmp_path / "a", progress=False, pictures=False)
    fit(tiny(), mnist[0], mnist[1], cfg, tmp_path / "b", progress=False, pictures=False, stop_after=4)
    # a fresh process would rebuild the model from the run folder: use different init to prove it
    resumed = fit(tiny(seed=123), mnist[0], mnist[1], cfg, tmp_path / "b", resume=True,
                  progress=False, pictures=False)
    assert resumed.step == straight.step == 6
    a, b = VQDraw.load(tmp_path / "a"), VQDraw.load(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    la = [json.loads(x)["loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert la == lb


def test_existing_run_needs_resume_and_missing_run_cannot_resume(mnist, tmp_path):
    fit(tiny(), mnist[0], mnist[1], small_cfg(steps=1), tmp_path / "r", progress=False, pictures=False)
    with pytest.raises(CheckpointError, match="--resume"):
        fit(tiny(), mnist[0], mnist[1], small_cfg(steps=1), tmp_path / "r", progress=False, pictures=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        fit(tiny(), mnist[0], mnist[1], small_cfg(), tmp_path / "empty", resume=True, progress=False)


def test_lr_anneal():
    from vqdraw.training.train import learning_rate

    cfg = TrainConfig(steps=100, lr=1e-3, lr_final=1e-4)
    # the author's schedule: step s of S (1-based) at frac s/S, so the last step runs at lr_final
    assert learning_rate(cfg, 0) == pytest.approx(1e-3 - 9e-4 / 100)
    assert learning_rate(cfg, 49) == pytest.approx(5.5e-4)
    assert learning_rate(cfg, 99) == pytest.approx(1e-4)
    assert learning_rate(TrainConfig(steps=100), 50) == 1e-3
    assert learning_rate(TrainConfig(steps=100, lr_final=0.0, paper_lr=True), 99) == 1e-3
