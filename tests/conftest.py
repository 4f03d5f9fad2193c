import os

import pytest
import torch

from vqdraw import VQDraw


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seeded, single-threaded: tiny models run faster on one thread (and do not fight over cores)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture
def all_cores():
    """For tests that run real-size convolutions: use up to two threads."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def fast_embedded_mnist():
    """For modules of tiny nets: one intra-op thread (faster for them, and far faster on a busy
    machine), and the embedded MNIST file parsed once for the module instead of once per
    load_dataset call. Use with ``pytestmark = pytest.mark.usefixtures("fast_embedded_mnist")``."""
    import functools

    import vqdraw.data as data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    original = data.LOADERS["mnist-embedded"]
    data.LOADERS["mnist-embedded"] = functools.cache(lambda split, data_dir=None: original(split))
    yield
    data.LOADERS["mnist-embedded"] = original
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_briefly():
    """train_briefly(model, train_set, steps, batch=16, lr=3e-3): a few seeded Adam steps of eq. 3
    on random batches (generator seed 0), for tests that need a model past initialisation."""

    def run(model, train_set, steps: int, batch: int = 16, lr: float = 3e-3):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(0)
        for _ in range(steps):
            x = train_set.batch(torch.randint(0, len(train_set), (batch,), generator=gen))
            opt.zero_grad()
            model.loss(x)["loss"].backward()
            opt.step()
        return model

    return run


@pytest.fixture
def tiny_model():
    """A small untrained mnist-shaped model: K=8, N=4 in two segments of 2 stages."""
    torch.manual_seed(0)
    return VQDraw.from_preset("mnist", options=8, stages=4, segment=2).eval()


@pytest.fixture
def digits():
    from vqdraw.data import load_dataset

    return load_dataset("mnist-embedded", "test").batch(range(16))
