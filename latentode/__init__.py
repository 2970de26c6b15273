"""latentode: Latent ODEs for irregularly sampled time series, with Pyro."""

from importlib.metadata import PackageNotFoundError, version

from .baselines import ODERNNBaseline, ODERNNClassifier, RNNBaseline
from .estimator import LatentODE, LatentODEClassifier
from .solvers import ODESolver, SolverError

try:
    __version__ = version("latentode")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "LatentODE",
    "LatentODEClassifier",
    "ODERNNBaseline",
    "ODERNNClassifier",
    "ODESolver",
    "RNNBaseline",
    "SolverError",
    "__version__",
]
