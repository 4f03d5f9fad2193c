"""Code statistics against hand counts, and `vqdraw code-stats` on a tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vqdraw.evaluate.codestats import code_statistics, distinct_codes, save_heatmap


def h(*p):
    return -sum(x * math.log2(x) for x in p if x > 0)


def test_counts_entropy_unused_match_hand_counts():
    codes = torch.tensor([[0, 1], [0, 2], [1, 2], [0, 2]])
    s = code_statistics(codes, options=3)
    assert s.counts.tolist() == [[3, 1, 0], [0, 1, 3]]
    assert s.images == 4 and s.stages == 2 and s.options == 3
    assert s.entropy_bits == pytest.approx([h(3 / 4, 1 / 4), h(1 / 4, 3 / 4)])
    assert s.perplexity == pytest.approx(2 ** np.array([h(3 / 4, 1 / 4)] * 2))
    assert s.unused == [[2], [0]]
    d = s.to_dict()
    assert d["unused_total"] == 2 and d["used_per_stage"] == [2, 2]
    assert d["never_used_anywhere"] == []  # pooled counts are [3, 2, 3]
    assert d["pooled_entropy_bits"] == pytest.approx(h(3 / 8, 2 / 8, 3 / 8))
    assert d["max_entropy_bits"] == pytest.approx(math.log2(3))
    assert distinct_codes(codes) == 3


def test_uniform_and_constant_stages():
    codes = torch.tensor([[0, 0], [1, 0], [2, 0], [3, 0]])
    s = code_statistics(codes, options=4)
    assert s.entropy_bits.tolist() == [2.0, 0.0]
    assert s.unused == [[], [1, 2, 3]]
    assert s.to_dict()["never_used_anywhere"] == []


def test_bad_codes_raise():
    with pytest.raises(ValueError):
        code_statistics(torch.tensor([[0, 3]]), options=3)
    with pytest.raises(ValueError):
        code_statistics(torch.tensor([0, 1]), options=3)


def test_heatmap_png(tmp_path):
    s = code_statistics(torch.tensor([[0, 1], [0, 2]]), options=3)
    path = save_heatmap(s, tmp_path / "h.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_code_stats_cli(tmp_path):
    from vqdraw import VQDraw
    from vqdraw.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model_dir = VQDraw.from_preset("mnist", options=8, stages=3, segment=3).save(tmp_path / "m")
        assert main(["code-stats", "--model", str(model_dir), "--dataset", "mnist-embedded",
                     "--device", "cpu", "-o", str(tmp_path / "o")]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads((tmp_path / "o" / "code-stats.json").read_text())
    counts = np.array(res["counts"])
    assert counts.shape == (3, 8) and (counts.sum(1) == 500).all()
    assert res["images"] == 500 and len(res["entropy_bits"]) == 3
    assert sum(len(u) for u in res["unused"]) == res["unused_total"] == int((counts == 0).sum())
    assert (tmp_path / "o" / "code-stats.png").exists()
