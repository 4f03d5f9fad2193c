"""Probes: chance on random codes, near-perfect on label-carrying codes, the `vqdraw probe` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vqdraw.evaluate.probe import (
    ProbeRecipe,
    chance_accuracy,
    default_prefixes,
    one_hot_codes,
    probe_codes,
)

FAST = ProbeRecipe(epochs=5, batch=64, hidden=64)


pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")


def test_one_hot_codes():
    x = one_hot_codes(torch.tensor([[1, 0, 2], [2, 2, 0]]), options=3, stages=2)
    assert x.tolist() == [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 1]]


def test_default_prefixes():
    assert default_prefixes(10) == list(range(1, 11))
    assert default_prefixes(49) == [1, 2, 4, 8, 16, 32, 49]


def test_random_codes_are_at_chance():
    g = np.random.default_rng(0)
    train_codes, test_codes = g.integers(0, 8, (600, 4)), g.integers(0, 8, (1000, 4))
    train_y, test_y = g.integers(0, 10, 600), g.integers(0, 10, 1000)
    rows = probe_codes(train_codes, train_y, test_codes, test_y, options=8, prefixes=[1, 4], recipe=FAST)
    assert [r["stages"] for r in rows] == [1, 4] and rows[1]["bits"] == 12
    for r in rows:
        for kind in ("linear", "mlp"):
            # chance is 0.1; the std of an accuracy over 1000 test points is about 0.01
            assert abs(r[kind]["test"] - 0.1) < 0.05, rows


def test_codes_that_carry_the_label_are_probed_well():
    g = np.random.default_rng(1)
    train_y, test_y = g.integers(0, 10, 600), g.integers(0, 10, 200)

    def codes(y):
        noise = g.integers(0, 10, (len(y), 2))
        return np.concatenate([noise[:, :1], y[:, None], noise[:, 1:]], 1)  # stage 2 = the label

    rows = probe_codes(codes(train_y), train_y, codes(test_y), test_y, options=10, prefixes=[1, 2, 3],
                       recipe=ProbeRecipe(epochs=10, batch=64, hidden=64, lr=1e-2))
    assert rows[0]["linear"]["test"] < 0.3  # stage 1 is noise
    assert rows[1]["linear"]["test"] > 0.95 and rows[2]["mlp"]["test"] > 0.95


def test_chance_accuracy():
    assert chance_accuracy([0, 0, 1, 2]) == 0.5


def test_probe_cli(tmp_path):
    from vqdraw import VQDraw
    from vqdraw.cli import main

    torch.manual_seed(0)
    model_dir = VQDraw.from_preset("mnist", options=8, stages=3, segment=3).save(tmp_path / "m")
    out = tmp_path / "o"
    assert main(["probe", str(model_dir), "--dataset", "mnist-embedded", "--train-count", "200",
                 "--epochs", "15", "--prefixes", "1", "3", "--device", "cpu", "-o", str(out)]) == 0
    res = json.loads((out / "probe.json").read_text())
    assert [r["stages"] for r in res["prefixes"]] == [1, 3]
    assert res["chance"] == pytest.approx(0.1) and res["train_images"] == 200
    for kind in ("linear", "mlp"):
        assert 0 <= res["prefixes"][-1][kind]["test"] <= 1
        assert res["pixels"][kind]["test"] > 0.4  # pixels of digits are informative
    assert (out / "probe.png").exists()
    assert main(["probe", str(model_dir), "--dataset", "mnist-embedded", "--prefixes", "4",
                 "--device", "cpu", "-o", str(out)]) == 2
