"""Training and evaluation: the SVI loop, ELBO evaluation, export to ArviZ."""

from .arviz import make_inference_data
from .svi import TrainingHistory, kl_weight, per_series_elbo, svi_loss, train_svi

__all__ = [
    "TrainingHistory",
    "make_inference_data",
    "kl_weight",
    "per_series_elbo",
    "svi_loss",
    "train_svi",
]
