"""Posterior predictive draws: the model's generative mode, vectorised over draws of ``z0``."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from ..solvers import SolverError, raised_error

__all__ = ["PREDICTIVE_SITES", "posterior_predictive"]

#: Sites the generative mode of :meth:`latentode.models.LatentODEModel.model` can return.
PREDICTIVE_SITES = ("z0", "z", "mean", "intensity", "obs", "label")


def posterior_predictive(
    module,
    times,
    values,
    mask,
    query_times,
    *,
    n_samples: int,
    sites=("z0", "mean", "obs"),
    static=None,
    n_proposals: int = 0,
    proposal_block: int | None = None,
    query_index=None,
    wanted=None,
) -> dict[str, torch.Tensor]:
    """Draws of ``z0`` given the observed series carried through the model to the query times.

    The guide reads the observed series and gives ``q(z0 | x)``; its draws are used as they
    are or, with ``n_proposals``, as proposals reweighted by the model and resampled
    (:meth:`~latentode.models.LatentODEModel.importance_z0`). The model, in its generative
    mode, solves each draw of ``z0`` to ``query_times`` and draws the observations there.
    Draws are vectorised (one solve for all of them, in a plate of draws outside the series
    plate) and use Pyro's (torch's) global random stream. The model and guide run once each:
    :class:`pyro.infer.Predictive` would run each twice more, one draw per series, to find
    the plates and the sites' shapes, which this module knows (one series plate at dim -1),
    and every run solves the ODE.

    Parameters
    ----------
    module : latentode.models.LatentODEModel
    times : Tensor of shape (time,)
        The batch's union grid, model units.
    values, mask : Tensor of shape (batch, time, features)
    query_times : Tensor of shape (query,)
        Increasing, non-negative, model units.
    n_samples : int
    sites : sequence of str, default ("z0", "mean", "obs")
        Any of :data:`PREDICTIVE_SITES`; ``intensity`` needs a Poisson model and ``label``
        a classifier.
    static : Tensor of shape (batch, 2 * n_static), optional
        The batch's static covariates (:attr:`latentode.datasets.Batch.context`), for models
        built with them.
    n_proposals : int, default 0
        Draws of ``q(z0 | x)`` importance-weighted to give the ``n_samples`` draws of
        ``z0``; 0 draws ``z0`` from ``q`` itself.
    proposal_block : int, optional
        Proposals decoded and scored at once (bounds the widest tensor, the decoder's hidden
        layer over proposals x batch x times); default all.
    query_index : LongTensor of shape (batch, own), optional
        Each series' positions on ``query_times`` (its own times, padded with any position):
        the draws are then made there only, and ``query`` below is ``own``.
    wanted : BoolTensor of shape (batch, query, features), optional
        The entries whose draws the caller uses (``query`` as above): observation noise
        is drawn there only (``obs`` is NaN elsewhere) and a model with a same-time readout
        reads there only (see :meth:`~latentode.models.LatentODEModel.model`). Default: all
        entries.

    Returns
    -------
    dict of str to Tensor
        ``z0 (n_samples, batch, latent)``, ``z (n_samples, batch, query, latent)``,
        ``mean``, ``obs`` and ``intensity`` ``(n_samples, batch, query, features)``,
        ``label (n_samples, batch)``, or ``(n_samples, batch, query)`` for per-time labels; in
        model units.
    """
    unknown = [s for s in sites if s not in PREDICTIVE_SITES]
    if unknown:
        raise ValueError(f"sites {unknown} are not predictive sites; use {PREDICTIVE_SITES}.")
    args = (times, values, mask)
    # inputs were validated at the estimator's gate: skip the distributions' per-call argument
    # checks (a fifth of a prediction's time); a path that turns non-finite stops the solver
    # with a SolverError that says what to change
    with torch.no_grad(), pyro.validation_enabled(False):
        if n_proposals:
            z0, _ = module.importance_z0(
                *args,
                n_samples=n_samples,
                n_proposals=n_proposals,
                static=static,
                block=proposal_block,
            )
        else:
            z0 = _vectorised_trace(module.guide, n_samples, {}, *args, static=static)
            z0 = z0.nodes["z0"]["value"]
        unused = {"obs", "label"} - set(sites)
        query = {"query_times": query_times, "static": static, "query_index": query_index}
        if wanted is not None:
            query["wanted"] = wanted
        try:
            with _NotDrawn(unused):  # sites not asked for are not drawn (obs: the noise)
                trace = _vectorised_trace(
                    module.model,
                    n_samples,
                    {"z0": z0},
                    *args,
                    **query,
                )
        except SolverError as err:
            cause = raised_error(err)  # the solver's own error, not Pyro's copy of it
            raise QueryPathsError(str(cause), reason=cause.reason or str(cause)) from err
    draws = {s: trace.nodes[s]["value"] for s in sites if s in trace.nodes}
    missing = [s for s in sites if s not in draws]
    if missing:
        raise ValueError(
            f"the model has no sites {missing} (intensity needs poisson=True, label a classifier)."
        )
    return {
        s: draws[s].reshape((n_samples,) + draws[s].shape[-_event_rank(s, module) - 1 :])
        for s in sites
    }


class QueryPathsError(SolverError):
    """The latent paths of the draws could not be solved to the query times (the draws of
    ``z0`` were made): raised by :func:`posterior_predictive` in place of the solver's error,
    which it carries as ``reason``."""


class _NotDrawn(Messenger):
    """Leaves the named sample sites undrawn: each takes its distribution's mean in place of a
    draw, as if observed, so no random numbers (or noise tensors) are spent on it."""

    def __init__(self, names):
        super().__init__()
        self.names = frozenset(names)

    def _pyro_sample(self, msg):
        if msg["name"] in self.names and not msg["is_observed"]:
            try:
                msg["value"] = msg["fn"].mean  # no draw: the mean, shaped and placed like one
            except NotImplementedError:  # a distribution without a mean is drawn after all
                return
            msg["is_observed"] = True


def _vectorised_trace(program, n_samples: int, given: dict, *args, **kwargs):
    """One run of a model or guide with its sites drawn ``n_samples`` times at once (a plate
    at dim -2, outside the series plate) and the ``given`` sites fixed to draws of that shape."""
    draws = pyro.plate("_predictive_draws", n_samples, dim=-2)
    return poutine.trace(poutine.condition(draws(program), given)).get_trace(*args, **kwargs)


def _event_rank(site: str, module) -> int:
    """Dims after the series dim in the returned draws of ``site``."""
    if site == "label":
        return 1 if getattr(module, "label_per_time", False) else 0
    return 1 if site == "z0" else 2
