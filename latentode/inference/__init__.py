"""Training and evaluation: the SVI loop, ELBO evaluation."""

from .svi import TrainingHistory, kl_weight, per_series_elbo, svi_loss, train_svi

__all__ = ["TrainingHistory", "kl_weight", "per_series_elbo", "svi_loss", "train_svi"]
