import pytest

from latentode.datasets import make_spirals


@pytest.fixture(scope="session")
def data():
    """48 training and 12 test spirals, 15 observations each."""
    return make_spirals(n_series=60, n_obs=15, random_state=0)


@pytest.fixture(scope="session")
def small():
    """A Latent ODE small enough to fit in about a second."""
    return dict(
        max_epochs=3,
        batch_size=20,
        latent_dim=3,
        ode_hidden_dim=16,
        encoder_hidden_dim=16,
        decoder_hidden_dim=16,
        random_state=0,
    )
