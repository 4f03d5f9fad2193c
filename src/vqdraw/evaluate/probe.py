"""Probes (paper §6): how much label information do the codes carry, and how accessibly?

A code (c_1 .. c_N), c_i in [0, K), is turned into features by one-hot encoding every stage and
concatenating: x = [onehot(c_1), .., onehot(c_n)] in {0, 1}^(n*K) for the prefix of n stages.
Two classifiers are trained on the training split's codes and scored on the test split's:

    linear   softmax regression on x
    mlp      one hidden layer (256 ReLU units) on x

The same two classifiers on raw pixels (flattened, in [0, 1]) give the reference. Accuracy is
reported for every prefix n (or a chosen subset): how label information accumulates stage by
stage. Chance is the frequency of the most common test label.

Both classifiers use one fixed recipe (Adam, mini-batches of 128, a fixed number of epochs,
small weight decay) so that the numbers compare representations, not tuning effort.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("linear", "mlp")


@dataclass(frozen=True)
class ProbeRecipe:
    epochs: int = 20
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 256
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def one_hot_codes(codes, options: int, stages: int | None = None) -> torch.Tensor:
    """Codes (M, N) -> float features (M, n*K): one-hot per stage of the first n stages."""
    c = torch.as_tensor(codes).long()
    n = c.shape[1] if stages is None else int(stages)
    return F.one_hot(c[:, :n], options).flatten(1).float()


def _classifier(kind: str, dim: int, classes: int, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(dim, classes)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    raise ValueError(f"unknown probe kind {kind!r}; use one of {KINDS}")


def fit_classifier(x: torch.Tensor, y: torch.Tensor, kind: str, classes: int,
                   recipe: ProbeRecipe = ProbeRecipe()) -> nn.Module:
    """Train a `kind` classifier on features x (M, d) and labels y (M,); seeded, CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = _classifier(kind, x.shape[1], classes, recipe.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    net.train()
    for _ in range(recipe.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for idx in perm.split(recipe.batch):
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(1) == y).double().mean()) if len(y) else 0.0


def probe_features(train_x, train_y, test_x, test_y, classes: int | None = None,
                   kinds=KINDS, recipe: ProbeRecipe = ProbeRecipe()) -> dict:
    """{kind: {"test": accuracy, "train": accuracy}} for each classifier kind."""
    train_x, test_x = torch.as_tensor(train_x).float(), torch.as_tensor(test_x).float()
    train_y, test_y = torch.as_tensor(train_y).long(), torch.as_tensor(test_y).long()
    classes = classes or int(max(train_y.max(), test_y.max())) + 1
    out = {}
    for kind in kinds:
        net = fit_classifier(train_x, train_y, kind, classes, recipe)
        out[kind] = {"test": accuracy(net, test_x, test_y), "train": accuracy(net, train_x, train_y)}
    return out


def default_prefixes(stages: int) -> list[int]:
    """Every prefix up to 16 stages; beyond that 1, 2, 4, 8, … and the full code."""
    if stages <= 16:
        return list(range(1, stages + 1))
    out = [1 << i for i in range(int(math.log2(stages)) + 1)]
    return sorted(set(out + [stages]))


def probe_codes(train_codes, train_labels, test_codes, test_labels, options: int,
                prefixes: list[int] | None = None, kinds=KINDS,
                recipe: ProbeRecipe = ProbeRecipe()) -> list[dict]:
    """Probe accuracy for each code prefix: [{"stages": n, "bits": .., kind: {test, train}}]."""
    train_codes, test_codes = torch.as_tensor(train_codes).long(), torch.as_tensor(test_codes).long()
    n_total = train_codes.shape[1]
    prefixes = prefixes or default_prefixes(n_total)
    bad = [p for p in prefixes if not 1 <= p <= n_total]
    if bad:
        from ..errors import InputError

        raise InputError(f"prefixes must be between 1 and {n_total}; got {bad}")
    train_labels = torch.as_tensor(np.asarray(train_labels)).long()
    test_labels = torch.as_tensor(np.asarray(test_labels)).long()
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    rows = []
    for n in prefixes:
        res = probe_features(one_hot_codes(train_codes, options, n), train_labels,
                             one_hot_codes(test_codes, options, n), test_labels,
                             classes=classes, kinds=kinds, recipe=recipe)
        rows.append({"stages": n, "bits": n * math.log2(options), **res})
    return rows


def chance_accuracy(labels) -> float:
    """Accuracy of always predicting the most frequent label."""
    counts = np.bincount(np.asarray(labels).astype(np.int64))
    return float(counts.max() / counts.sum()) if counts.sum() else 0.0


def probe_model(model, train_set, test_set, prefixes: list[int] | None = None, *,
                recipe: ProbeRecipe = ProbeRecipe(), train_limit: int | None = None,
                pixels: bool = True) -> dict:
    """Encode both splits with `model` and probe its codes (and, for reference, raw pixels)."""
    from .codestats import encode_images
    from ..data import DatasetError

    if train_set.labels is None or test_set.labels is None:
        raise DatasetError(f"dataset {train_set.name!r} has no labels; probes need labels")
    if train_limit is not None and train_limit < len(train_set):
        # A seeded random subset: dataset files may be sorted by label (the embedded MNIST is).
        keep = np.sort(np.random.default_rng(recipe.seed).permutation(len(train_set))[:train_limit])
        train_set = train_set.subset(keep)
    n_train = len(train_set)
    train_codes = encode_images(model, train_set)
    test_codes = encode_images(model, test_set)
    train_y = torch.from_numpy(train_set.labels)
    test_y = torch.from_numpy(test_set.labels)
    result = {
        "options": model.options,
        "stages": model.stages,
        "bits_per_stage": math.log2(model.options),
        "train_images": n_train,
        "test_images": len(test_set),
        "chance": chance_accuracy(test_set.labels),
        "recipe": recipe.to_dict(),
        "prefixes": probe_codes(train_codes, train_y, test_codes, test_y, model.options, prefixes,
                                recipe=recipe),
    }
    if pixels:
        result["pixels"] = probe_features(train_set.batch(range(n_train)).flatten(1), train_y,
                                          test_set.batch(range(len(test_set))).flatten(1), test_y,
                                          recipe=recipe)
    return result


def save_probe_plot(result: dict, path: str | Path, title: str = "") -> Path:
    """Test accuracy against code bits (prefix length), pixel probes as horizontal lines."""
    from .plots import figure, save_figure

    fig = figure(5.6, 3.6, dpi=100)
    ax = fig.add_subplot()
    bits = [r["bits"] for r in result["prefixes"]]
    colors = {"linear": "tab:blue", "mlp": "tab:orange"}
    for kind in KINDS:
        if kind in result["prefixes"][0]:
            ax.plot(bits, [r[kind]["test"] for r in result["prefixes"]], marker="o", ms=3,
                    color=colors[kind], label=f"{kind} on codes")
        if "pixels" in result and kind in result["pixels"]:
            ax.axhline(result["pixels"][kind]["test"], color=colors[kind], ls="--", lw=1,
                       label=f"{kind} on pixels")
    ax.axhline(result["chance"], color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("code prefix (bits)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
