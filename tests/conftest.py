import os

import numpy as np
import pyro
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Seed every RNG and clear Pyro's global param store around each test."""
    pyro.set_rng_seed(0)
    np.random.seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def spirals_small():
    from latentode.datasets import make_spirals

    return make_spirals(n_series=60, n_obs=20, random_state=0)
