"""The Latent ODE classifier: labels of series, or of observation times, from the latent state."""

from __future__ import annotations

import torch
import xarray as xr
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ._base import PREDICT_CHUNK, LabelledSeriesMixin, serialised, with_parameter
from ._validation import integer, real
from .latent_ode import PARAMETERS, LatentODE

__all__ = ["LatentODEClassifier"]

_N_SAMPLES = integer("n_samples", low=1)


class LatentODEClassifier(LabelledSeriesMixin, ClassifierMixin, LatentODE):
    """Latent ODE with a classifier, trained jointly with the ELBO.

    With one label per series the generative model gains a site
    ``label ~ Categorical(logits=head(z0))`` (Rubanova et al. 2019: in-hospital mortality on
    PhysioNet); with one label per observation time (``fit(X, y)`` with an array of labels per
    series) the head reads the latent state at each time, ``label_t ~ Categorical(logits=
    head(z(t)))`` (human activity). The labels' log-likelihood, multiplied by
    ``label_weight``, joins the ELBO, so the recognition network learns a ``z0`` that both
    explains the series and predicts its labels. Takes every parameter of :class:`LatentODE`,
    plus:

    Parameters
    ----------
    label_weight : float, default 100.0
        Weight of the label's log-likelihood against the series' (a series has many
        observations and one label).

    Attributes
    ----------
    classes_ : ndarray of shape (classes,)
        The labels seen in ``fit``, sorted.
    label_per_time_ : bool
        Whether ``fit`` was given one label per observation time.

    Examples
    --------
    >>> from latentode import LatentODEClassifier
    >>> from latentode.datasets import make_spirals
    >>> data = make_spirals(n_series=40, n_obs=20, random_state=0)
    >>> clf = LatentODEClassifier(max_epochs=2, random_state=0)
    >>> clf.fit(data.train, data.clockwise_train).predict_proba(data.test).shape
    (8, 2)
    """

    def __init__(self, *, label_weight: float = 100.0, **params):
        super().__init__(**params)
        self.label_weight = label_weight

    # scikit-learn reads parameters from the signature: show LatentODE's and label_weight
    __init__.__signature__ = with_parameter(LatentODE.__init__, "label_weight", 100.0)

    _parameter_constraints = (*PARAMETERS, real("label_weight", low=0, low_open=True))

    def _head_kwargs(self) -> dict:
        return {
            "n_classes": len(self.classes_),
            "label_weight": float(self.label_weight),
            "label_per_time": bool(self.label_per_time_),
        }

    @serialised
    def fit(self, X, y, **kwargs):
        """Fit on series ``X`` with labels ``y``; see :meth:`LatentODE.fit`.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        y : labels, one of
            - one label per series: array-like of shape (series,), or a pandas Series indexed
              by series id;
            - one label per observation time (``label_per_time_`` becomes True): a list with,
              for each series, an array of shape (n_obs_i,) in the order of its sorted times
              (None or NaN where a time has no label), or a pandas Series indexed by
              (series id, time).
        **kwargs
            ``validation_data`` (``X_val``, or ``(X_val, y_val)`` so that the validation loss
            includes the labels with their training weight), ``checkpoint``,
            ``checkpoint_every``, ``resume``.

        Returns
        -------
        self
        """
        return super().fit(X, y, **kwargs)

    def _probabilities(self, data, t, n_samples: int) -> torch.Tensor:
        """Class probabilities averaged over draws of z0: (series, classes) or (series, t, c)."""
        module, gen, out = self.model_, self._generator(self.device_), []
        query = None if t is None else self._model_times(t, self.device_)
        with torch.no_grad():
            for i in range(0, len(data), PREDICT_CHUNK):
                batch = self._batch(data[i : i + PREDICT_CHUNK], self.device_)
                static = batch.context
                z0 = module.posterior_z0(
                    batch.times,
                    batch.values,
                    batch.mask,
                    n_samples=n_samples,
                    generator=gen,
                    static=static,
                )
                h = z0 if query is None else module.solve(z0, query)[0]
                out.append(torch.softmax(module.classify(h, static), dim=-1).mean(0).cpu())
        return torch.cat(out).double()

    @serialised
    def predict_proba(self, X, *, times=None, n_samples: int = 32):
        """Class probabilities, averaged over posterior draws of ``z0``.

        Parameters
        ----------
        X : IrregularDataset, DataFrame or list of (times, values)
        times : array-like of shape (time,), optional
            Per-time classifiers only: where to classify (default the union of the series'
            observation times; later times classify the extrapolated state).
        n_samples : int, default 32

        Returns
        -------
        ndarray of shape (series, classes)
            For one label per series; columns in the order of ``classes_``.
        xarray.DataArray of shape (series, time, class)
            For per-time labels, with series ids, times and ``classes_`` as coordinates.
        """
        check_is_fitted(self)
        _N_SAMPLES.check(n_samples)
        data = self._check_data(X)
        if not self.label_per_time_:
            if times is not None:
                raise ValueError(
                    "times= is for per-time classifiers; this one was fitted with one label per "
                    "series."
                )
            return self._probabilities(data, None, n_samples).numpy()
        t = self._check_times(times, data)
        coords = self._coords(data, t)
        del coords["feature"]
        coords["class"] = self.classes_
        return xr.DataArray(
            self._probabilities(data, t, n_samples).numpy(),
            dims=("series", "time", "class"),
            coords=coords,
            name="probability",
        )

    @serialised
    def predict_series(self, X, *, times=None, n_samples: int = 32) -> xr.DataArray:
        """Posterior mean of the series (what :meth:`LatentODE.predict` returns)."""
        return LatentODE.predict(self, X, times=times, n_samples=n_samples)
