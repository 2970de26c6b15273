"""One small adapter to ArviZ's container, for arviz 0.x (InferenceData) and 1.x (DataTree)."""

from __future__ import annotations

import warnings
from importlib.metadata import version

import xarray as xr

__all__ = ["make_inference_data"]


def _arviz_major() -> int:
    return int(version("arviz").split(".")[0])


def make_inference_data(groups: dict[str, xr.Dataset]):
    """ArviZ's container for named groups of draws.

    Parameters
    ----------
    groups : dict of str to xarray.Dataset
        Group name (``"posterior"``, ``"posterior_predictive"``, ``"observed_data"``,
        ``"log_likelihood"``) to its data set; draws carry the dims ``chain`` and ``draw``.

    Returns
    -------
    arviz.InferenceData (arviz < 1) or xarray.DataTree (arviz >= 1)
    """
    if _arviz_major() >= 1:
        return xr.DataTree.from_dict(dict(groups))
    with warnings.catch_warnings():  # arviz 0.x announces its refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

    return az.InferenceData(**groups)
