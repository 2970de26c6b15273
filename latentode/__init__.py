"""latentode: Latent ODEs for irregularly sampled time series, with Pyro."""

from importlib.metadata import PackageNotFoundError, version

from .baselines import ODERNNBaseline, ODERNNClassifier, RNNBaseline
from .classifier import LatentODEClassifier
from .latent_ode import LatentODE
from .naive import FeatureMean, LastValue, LinearInterpolation, SummaryLogisticRegression
from .solvers import ODESolver, SolverError, SolverSettings

try:
    __version__ = version("latentode")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "FeatureMean",
    "LastValue",
    "LinearInterpolation",
    "LatentODE",
    "LatentODEClassifier",
    "ODERNNBaseline",
    "ODERNNClassifier",
    "ODESolver",
    "RNNBaseline",
    "SolverError",
    "SolverSettings",
    "SummaryLogisticRegression",
    "__version__",
]
