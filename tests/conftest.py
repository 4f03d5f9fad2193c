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


@pytest.fixture
def tiny_model():
    """A small untrained mnist-shaped model: K=8, N=4 in two segments of 2 stages."""
    torch.manual_seed(0)
    return VQDraw.from_preset("mnist", options=8, stages=4, segment=2).eval()


@pytest.fixture
def digits():
    from vqdraw.data import load_dataset

    return load_dataset("mnist-embedded", "test").batch(range(16))
