"""Training and evaluation: the SVI loop, data-parallel training, ELBO evaluation, posterior
predictive, ArviZ export."""

from .arviz import make_inference_data
from .distributed import DataParallel
from .predictive import PREDICTIVE_SITES, posterior_predictive
from .svi import (
    BatchStream,
    TrainingConfig,
    TrainingHistory,
    kl_weight,
    per_series_elbo,
    svi_loss,
    train_svi,
)

__all__ = [
    "BatchStream",
    "DataParallel",
    "PREDICTIVE_SITES",
    "TrainingConfig",
    "TrainingHistory",
    "make_inference_data",
    "kl_weight",
    "per_series_elbo",
    "posterior_predictive",
    "svi_loss",
    "train_svi",
]
