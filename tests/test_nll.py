"""Log-likelihood bounds (issue 12): marginal <= single at every prefix, never looser with a wider
beam (nested ladder of searches), the single bound by hand, the eval-nll CLI and its error line."""

import json
import math

import pytest
import torch

from vqdraw import VQDraw
from vqdraw.cli import main
from vqdraw.core.config import RefinerConfig
from vqdraw.evaluate.nll import ladder, mse_sigmas, nll_bounds
from vqdraw.core.search import search_stages
from vqdraw.core.stageloop import run_inference

SMALL = RefinerConfig(down=(8,), body=(8,), up=(8,))


def tiny(likelihood, shape=(1, 8, 8), **kw):
    return VQDraw.from_preset("mnist", data_shape=shape, options=4, stages=3, segment=3, refiner=SMALL,
                              likelihood=likelihood, **kw).eval()


def data(likelihood, n=5):
    x = torch.randint(0, 256, (n, 1, 8, 8)).float() / 255
    return (x > 0.5).float() if likelihood == "bernoulli" else x


def test_ladder():
    assert ladder(1) == [1] and ladder(8) == [1, 2, 4, 8] and ladder(5) == [1, 2, 3, 5]
    assert set(ladder(8)) <= set(ladder(64))


@pytest.mark.parametrize("likelihood", ["mse", "gaussian", "discretized-logistic", "categorical", "bernoulli"])
def test_marginal_never_above_single_and_tighter_with_beam(likelihood):
    model = tiny(likelihood)
    x = data(likelihood)
    by_beam = {b: nll_bounds(model, x, beam=b) for b in (1, 2, 4)}
    for b, rows in by_beam.items():
        assert [r["stages"] for r in rows] == [1, 2, 3]
        for r in rows:
            assert r["bits_per_dim_marginal"] <= r["bits_per_dim_single"]
            assert r["nats_marginal"] <= r["nats_single"]
            assert r["beam"] == b and r["count"] == len(x)
            assert r["bits_per_dim_single"] == pytest.approx(r["nats_single"] / (64 * math.log(2)))
    for r in by_beam[1]:  # greedy alone: S = {c*}
        assert r["nats_marginal"] == pytest.approx(r["nats_single"], abs=1e-9)
    for wide, narrow in ((2, 1), (4, 2)):
        for rw, rn in zip(by_beam[wide], by_beam[narrow]):
            assert rw["nats_marginal"] <= rn["nats_marginal"] + 1e-9
            assert rw["codes_in_S"] >= rn["codes_in_S"]


def test_single_bound_by_hand():
    model = tiny("mse")
    x = data("mse")
    rows = nll_bounds(model, x, beam=1)
    sigmas = mse_sigmas(model, x)
    for beams in search_stages(model, x, 1):
        n = beams.stage
        trace = run_inference(model.refiner, model.likelihood, n, codes=beams.codes[:, 0])
        logp = model.likelihood.discrete_log_prob(trace.canvas, x, sigma=sigmas[n - 1])
        expect = (n * math.log(4) - logp).mean().item()
        assert rows[n - 1]["nats_single"] == pytest.approx(expect, rel=1e-6)
        err = (model.to_data(trace.canvas) - x).pow(2).mean().sqrt().item()
        assert sigmas[n - 1] == pytest.approx(max(err, 1 / (255 * math.sqrt(12))), rel=1e-5)


def _mnist_model(tmp_path, likelihood):
    model = VQDraw.from_preset("mnist", stages=2, segment=2, likelihood=likelihood,
                               refiner=RefinerConfig(down=(4, 4), body=(4,), up=(4, 4)))
    path = model.save(tmp_path / likelihood)
    (path / "train.json").write_text(json.dumps({"train": {"dataset": "mnist-embedded"}, "model": {}}))
    return path


def test_cli_eval_nll_writes_json_and_png(tmp_path, capsys):
    path = _mnist_model(tmp_path, "mse")
    rc = main(["eval-nll", str(path), "--count", "3", "--beam", "2", "-o", str(tmp_path / "out")])
    assert rc == 0
    report = json.loads((tmp_path / "out" / "nll.json").read_text())
    keys = {"stages", "bits_per_dim_single", "bits_per_dim_marginal", "nats_single", "nats_marginal", "beam", "count"}
    assert [r["stages"] for r in report["rows"]] == [1, 2] and keys <= set(report["rows"][0])
    assert (tmp_path / "out" / "nll.png").stat().st_size > 0
    assert "bits/dim" in capsys.readouterr().out


def test_cli_eval_nll_without_discretisation_rule_is_one_line(tmp_path, capsys):
    path = _mnist_model(tmp_path, "bernoulli")  # 8-bit test digits, no binarisation: no rule
    rc = main(["eval-nll", str(path), "--count", "3", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "discretisation rule" in err
    assert main(["eval-nll", str(path), "--count", "3", "--binarize", "threshold", "-o", str(tmp_path / "o2")]) == 0
