"""Evaluate a model's samples (uniform prior) and reconstructions in the feature-net space.

    real      = `count` test images of the dataset, class-balanced (seeded; :func:`vqdraw.data.balanced_subset`)
    samples   = `count` images decoded from uniformly random codes (seeded)
    recon     = the reconstructions of `real`
    floor     = `count` training images (a seeded random subset) against `real`: the value of each
                metric for a perfect generator at this sample size (FID is biased upwards at small n)

Besides FID / KID / precision / recall, the classifier itself rates the samples
(:func:`classifier_summary`: an Inception Score computed with the feature net, and the fraction of
confidently classified samples); ``real_vs_real.classifier`` rates the test images for reference.
"""

from __future__ import annotations


import numpy as np
import torch

from .fid import compare
from .distortion import psnr_from_mse


@torch.no_grad()
def classifier_summary(net, images: torch.Tensor, batch: int = 500, confident: float = 0.9) -> dict:
    """How the feature net's classifier sees a set of images.

    ``score`` is the Inception Score computed with this classifier (Salimans et al. 2016):
    exp(E_x KL(p(y|x) || p(y))), between 1 and the number of classes; high when each image is
    classified confidently and the classes are balanced. ``confident``: the fraction of images
    whose top class has probability above 0.9. ``classes``: histogram of the top class.
    """
    net.eval()
    device = next(net.parameters()).device
    p = torch.cat([torch.softmax(net(x.to(device)), 1).cpu().double() for x in images.split(batch)])
    py = p.mean(0, keepdim=True)
    kl = (p * (p.clamp_min(1e-12).log() - py.clamp_min(1e-12).log())).sum(1)
    return {
        "score": float(kl.mean().exp()),
        "confident": float((p.max(1).values > confident).double().mean()),
        "classes": torch.bincount(p.argmax(1), minlength=p.shape[1]).tolist(),
    }


def _chunked(fn, n: int, chunk: int) -> torch.Tensor:
    return torch.cat([fn(min(chunk, n - start)) for start in range(0, n, chunk)])


@torch.no_grad()
def draw_samples(model, count: int, seed: int = 0, chunk: int = 250) -> torch.Tensor:
    """`count` samples (CPU) from uniformly random codes, drawn `chunk` at a time from one generator."""
    g = torch.Generator().manual_seed(seed)
    return _chunked(lambda n: model.sample(n, generator=g).cpu(), count, chunk)


@torch.no_grad()
def draw_prior_samples(model, prior, count: int, seed: int = 0, temperature: float = 1.0,
                       chunk: int = 250) -> torch.Tensor:
    """`count` samples (CPU) decoded from codes drawn from a learned prior (:mod:`vqdraw.prior`)."""
    g = torch.Generator().manual_seed(seed)
    return _chunked(lambda n: model.decode(prior.sample(n, temperature, generator=g).to(model.device)).cpu(),
                    count, chunk)


@torch.no_grad()
def reconstruct_all(model, images: torch.Tensor, chunk: int = 250) -> torch.Tensor:
    return torch.cat([model.reconstruct(x.to(model.device)).cpu() for x in images.split(chunk)])


def evaluate_samples(
    model,
    dataset: str,
    *,
    count: int = 500,
    seed: int = 0,
    data_dir=None,
    features=None,
    kid_subsets: int = 100,
    progress: bool = False,
    prior=None,
    temperature: float = 1.0,
) -> tuple[dict, torch.Tensor]:
    """Returns (metrics dict, the samples (count, C, H, W) on the CPU). With ``prior`` (a
    :class:`vqdraw.prior.Prior`) the dict also holds ``prior_samples``: the same metrics for
    samples drawn from it (at ``temperature``), in the same feature space.

    ``features``: the feature space, a :class:`~vqdraw.evaluate.metrics.features.FeatureRecipe`
    (the net trained by that recipe, or its cached copy; None: the default recipe) or a trained
    net, alone or as ``(net, meta)`` with its metadata (``test_accuracy``...)."""
    from .features import FeatureRecipe

    feature_net, feature_meta, feature_recipe = None, None, None
    if features is None or isinstance(features, FeatureRecipe):
        feature_recipe = features
    elif isinstance(features, tuple):
        feature_net, feature_meta = features
    else:
        feature_net = features
    from ...data import balanced_subset, load_dataset_for
    from ...errors import InputError
    from .features import features_dir, load_feature_net

    if count < 4:
        raise InputError("--count must be at least 4 (k-NN precision/recall uses k = 3)")
    test = load_dataset_for(model.config, dataset, "test", data_dir)
    train = load_dataset_for(model.config, dataset, "train", data_dir)
    if test.data_shape != tuple(model.config.data_shape):
        raise InputError(f"dataset {dataset} has images of shape {test.data_shape}, the model "
                         f"makes {tuple(model.config.data_shape)}")
    if feature_net is None:
        feature_net, feature_meta = load_feature_net(dataset, data_dir, recipe=feature_recipe,
                                                     progress=progress, train_set=train, test_set=test)
    feature_meta = feature_meta or {}
    real = test.batch(balanced_subset(test.labels, count, seed=seed, size=len(test)))
    perm = np.random.default_rng(seed).permutation(len(train))[: min(count, len(train))]
    floor_images = train.batch(np.sort(perm))
    samples = draw_samples(model, count, seed)
    recon = reconstruct_all(model, real)

    f_real = feature_net.features(real)
    kw = {"kid_subsets": kid_subsets, "seed": seed}
    sample_metrics = compare(f_real, feature_net.features(samples), **kw)
    recon_metrics = compare(f_real, feature_net.features(recon), **kw)
    floor_metrics = compare(f_real, feature_net.features(floor_images), **kw)
    mse = (recon - real).pow(2).flatten(1).mean(1).mean().item()
    sample_metrics["classifier"] = classifier_summary(feature_net, samples)
    prior_metrics = None
    if prior is not None:
        drawn = draw_prior_samples(model, prior, count, seed, temperature)
        prior_metrics = {"temperature": float(temperature), **compare(f_real, feature_net.features(drawn), **kw),
                         "classifier": classifier_summary(feature_net, drawn)}
    floor_metrics["classifier"] = classifier_summary(feature_net, real)  # the test images themselves
    result = {
        "dataset": dataset,
        "count": count,
        "seed": seed,
        "bits_per_image": float(model.config.code_bits),
        **sample_metrics,
        "reconstruction": {"mse": mse, "psnr": psnr_from_mse(mse), **recon_metrics},
        "real_vs_real": floor_metrics,
        **({"prior_samples": prior_metrics} if prior_metrics is not None else {}),
        "feature_net_test_accuracy": feature_meta.get("test_accuracy"),
        "feature_net": {
            "dir": str(features_dir(dataset, data_dir)),
            "test_accuracy": feature_meta.get("test_accuracy"),
            "train_accuracy": feature_meta.get("train_accuracy"),
            "feature_dim": feature_net.feature_dim,
            "recipe": feature_net.recipe.to_dict(),
        },
    }
    return result, samples
