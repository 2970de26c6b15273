"""The Latent ODE estimator: parameters, solver settings and fitting.

:class:`LatentODE` ties the data containers, the Pyro model, the solver and the SVI loop
together behind ``fit``; prediction and scoring come from
:class:`~latentode._posterior.PosteriorPredictiveMixin`, validation, scaling and files from
:class:`~latentode._base.IrregularSeriesEstimator`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings

import numpy as np
import torch

from ._base import (
    PREDICT_CHUNK,
    IrregularSeriesEstimator,
    batch_labels,
    resolve_device,
    seed_from,
    serialised,
)
from ._io import content_digest, data_fingerprint, read_checkpoint, write_checkpoint
from ._posterior import PosteriorPredictiveMixin
from ._validation import choice, custom, flag, integer, real
from .datasets import as_dataset
from .datasets.parquet import ParquetSeries
from .inference import DataParallel, TrainingConfig, train_svi
from .inference.svi import ELBOS, BatchStream
from .models import (
    ANCHORS,
    ENCODER_SOLVERS,
    ENCODERS,
    LIKELIHOODS,
    POSTERIORS,
    PRECISIONS,
    LatentODEModel,
)
from .solvers import BACKENDS, SolverSettings

__all__ = ["LatentODE", "OBS_WEIGHTINGS"]

#: Weightings of the observations in the training likelihood (see ``LatentODE``).
OBS_WEIGHTINGS = ("point", "series_feature")


def _positive_stds(value) -> bool:
    std = np.asarray(value, dtype=float)
    return std.ndim <= 1 and std.size > 0 and bool(np.all(np.isfinite(std) & (std > 0)))


def _log_features_ok(value) -> bool:
    if isinstance(value, str):
        return value == "auto"
    return isinstance(value, (list, tuple)) and all(isinstance(f, str) for f in value)


#: What each parameter of :class:`LatentODE` may be (the solver's settings are checked by
#: :class:`~latentode.solvers.SolverSettings`).
PARAMETERS = (
    integer("latent_dim", low=1),
    integer("ode_hidden_dim", low=1),
    integer("ode_layers", low=1),
    choice("encoder", ENCODERS),
    choice("guide", POSTERIORS),
    integer("importance_samples", low=0),
    integer("encoder_hidden_dim", low=1),
    choice("encoder_solver", ENCODER_SOLVERS),
    integer("decoder_hidden_dim", low=1),
    choice("anchor", ANCHORS),
    custom(
        "obs_std",
        _positive_stds,
        "a positive number, or a list of positive numbers (one per feature)",
        none=True,
        hint="None learns the noise.",
    ),
    choice("likelihood", LIKELIHOODS),
    integer("noise_rank", low=0),
    real("condition_limit", low=0, low_open=True, none=True, hint="None conditions exactly."),
    integer("same_time_readout", low=0, hint="0 leaves it out; 64 is a reasonable width."),
    flag("heteroscedastic"),
    custom(
        "log_features",
        _log_features_ok,
        '"auto" or a list of feature names',
        none=True,
        hint='"auto" takes every feature that is never negative.',
    ),
    choice("solver_backend", BACKENDS),
    real("kinetic_weight", low=0),
    real("jacobian_weight", low=0),
    choice("precision", PRECISIONS),
    integer("max_nfe", low=1, none=True),
    integer("max_epochs", low=1),
    real("max_time", low=0, low_open=True, none=True),
    integer("batch_size", low=1),
    real("lr", low=0, low_open=True),
    real("lr_decay", low=0, low_open=True, high=1),
    integer("average_epochs", low=0, high="max_epochs"),
    flag("average_from_best"),
    integer("num_particles", low=1),
    choice("elbo", tuple(ELBOS)),
    integer("kl_anneal_epochs", low=0),
    real("kl_weight", low=0, low_open=True, hint="1 gives the ELBO."),
    choice("obs_weighting", OBS_WEIGHTINGS),
    real("clip_norm", low=0, low_open=True, none=True),
    real("subsample", low=0, low_open=True, high=1),
    real("encode_fraction", low=0, low_open=True, high=1),
    real("hide_fraction", low=0, high=1, high_open=True),
    integer("patience", low=1, none=True),
    real("validation_fraction", low=0, high=1, high_open=True),
)
#: Fewest series from which ``fit`` holds out ``validation_fraction`` of its own accord.
AUTO_VALIDATION_SERIES = 200
_CHECKPOINT_EVERY = integer("checkpoint_every", low=1)
_CHECKPOINT_STEPS = integer("checkpoint_steps", low=1)


class LatentODE(PosteriorPredictiveMixin, IrregularSeriesEstimator):
    """Latent ODE for irregularly sampled series, fitted by stochastic variational inference.

    The model of Chen et al. (2018) and Rubanova et al. (2019): a recognition network reads a
    series backwards in time and gives ``q(z0 | x)``; a latent ODE ``dz/dt = f(z)`` carries
    ``z0`` to every query time; a decoder maps ``z(t)`` to the observations. Optionally a
    Poisson process scores *when* observations were taken.

    Parameters
    ----------
    latent_dim : int, default 4
        Size of the latent state.
    ode_hidden_dim : int, default 50
        Width of the dynamics MLP.
    ode_layers : int, default 3
        Linear layers of the dynamics MLP.
    encoder : {"gru", "rnn", "odernn"}, default "gru"
        Recognition network run backwards in time: a GRU over (values, mask, time gaps); a
        plain ``tanh`` RNN over the same inputs, as in Chen et al. (2018) — cheaper than the
        GRU, for series without long-range dependencies; or the ODE-RNN
        of Rubanova et al. (2019), whose state follows an ODE between observations and takes a
        mask-aware GRU update at each.
    guide : {"normal", "cnf"}, default "normal"
        Family of the variational posterior ``q(z0 | x)``: the encoder's diagonal Gaussian, or
        that Gaussian pushed through a continuous normalizing flow shared by all series
        (:class:`latentode.flows.CNF`), for posteriors that are skewed, curved or multimodal.
        The flow's solves make training several times slower.
    importance_samples : int, default 256
        How predictions draw ``z0`` given a series (:meth:`predict`, :meth:`sample`, the
        quantiles, :meth:`calibrate`): this many draws of the encoder's ``q(z0 | x)`` are
        weighted by how well each explains the series' own observations, ``p(z0) p(x | z0) /
        q(z0 | x)``, and the draws are taken from them in proportion to their weights
        (sampling importance resampling, :meth:`~latentode.models.LatentODEModel.importance_z0`).
        The encoder is amortised over all series, so its ``q`` is wider and less centred than
        the posterior of any one series; the weights correct both. It cuts forecast and
        imputation errors (measured on the benchmarks page) for one extra solve of this many
        draws over the observed times. 0 draws ``z0`` from ``q`` itself, as trained. A
        prediction setting: changing it on a fitted model needs no refit, but
        :meth:`calibrate` again after changing it.
    encoder_hidden_dim : int, default 50
        Width of the recognition network's state.
    encoder_solver : {"rk4", "euler"}, default "rk4"
        With ``encoder="odernn"``: how the encoder's state is carried between observations —
        RK4 steps of at most 0.05 (time scaled to [0, 1]), or Euler steps of at most 0.02 as
        in Rubanova et al.'s code, about a third cheaper per epoch at an equal fit (measured
        on the benchmarks page). Other encoders have no ODE and refuse ``"euler"``.
    decoder_hidden_dim : int, default 50
        Width of the decoder MLP.
    poisson : bool, default False
        Add the Poisson-process likelihood of the observation times.
    anchor : {False, True, "path"}, default False
        Blend each forecast mean with the feature's nearest observations before and after
        that time, by weights learned per feature that decay with the distance (GRU-D's decay,
        Che et al. 2018, on the output; :class:`~latentode.nn.Anchor`): levels of slowly
        varying features persist and gaps are bridged while the latent path carries the
        change. ``"path"`` carries each nearby observation along the decoded path from its
        time before blending (by a share learned per feature), so the observation sets the
        level and the path the trend. The latent path is trained as in the plain model and
        the blend on top of it, so anchoring never takes the dynamics' place. Measured on the
        benchmarks page.
    obs_std : float, list of float or None, default None
        Fixed observation standard deviation in the data's units: one number for every
        feature, or a list with one per feature (e.g. known measurement noise); None learns
        one per feature.
    likelihood : {"normal", "student_t"}, default "normal"
        Observation noise: Gaussian, or Student-t with degrees of freedom learned per feature
        (above 2; one for all with ``noise_rank``), for data with gross entry errors;
        ``obs_std`` is then its scale.
    noise_rank : int, default 0
        Correlated observation noise across features: the features observed at one time share
        ``noise_rank`` noise components besides their own (covariance ``diag(σ²) + U Uᵀ``,
        learned), as blood pressures measured together err together. Predictions at a time
        where some features are observed then condition each other feature on them — a
        hidden diastolic pressure on the systolic and mean pressures of the same time —
        never a feature on its own value. With ``likelihood="student_t"`` the features of a
        time are jointly Student-t (one degrees of freedom, learned): a gross error — a
        monitor reading 0 — then neither inflates the scales nor bends the components that
        tie the features together, and the draws are conditionally t. 0 keeps each feature's
        noise independent. Learned scales only (not with ``obs_std`` or
        ``obs_weighting="series_feature"``); draws are conditionally Gaussian (or t) per
        feature.
    condition_limit : float or None, default 4.0
        With ``noise_rank``: in that conditioning, a seen value further than this many of its
        feature's noise scales from the model's mean counts as that many (winsorised), so
        one gross entry — a pH recorded as 94 — does not drag the other features of its
        time with it (it otherwise moves a hidden respiratory rate by hundreds of SDs).
        Values within the limit condition exactly. None conditions on the values as they
        are. Read when the model is built; ``model_.condition_limit`` changes it on a fitted
        model. Measured on the benchmarks page. It also bounds the inputs of
        ``same_time_readout``.
    same_time_readout : int, default 0
        Width of a learned same-time readout (0: none). At a time where some features are
        observed, each other feature is then read from them by a small network of their
        values, their residuals from the decoded means (in noise scales), which were seen
        and the decoded means — linear or not, without the floor of each feature's own
        noise that a shared-noise conditional has — with a scale of its own (the noise
        family's: Student-t with the model's degrees of freedom under
        ``likelihood="student_t"``). With ``noise_rank`` it corrects that conditional's
        mean (an untrained readout leaves it as it is); without, it shifts the decoded mean.
        It is trained beside the model on each observed value from the others seen at its
        time — with ``hide_fraction``, on the values hidden from the encoder only, as at
        prediction — its inputs without gradient, so the latent model is fitted as without
        it. A value never enters its own readout. For channels of one time that are tied —
        a derived channel, a monitor's channels recorded together; it costs a hidden layer
        per feature and time. Measured on the benchmarks page.
    heteroscedastic : bool, default False
        Let each feature's noise scale vary with the latent state: its learned SD is
        multiplied by a factor between 1/20 and 20 that a small network reads from ``z(t)``
        (starting at 1), so bands widen where a series is in an unsettled state and narrow
        where it is calm, and the fit weighs observations by how noisy their state is.
        Gaussian or Student-t noise with learned scales (not with ``obs_std`` or
        ``noise_rank``). Measured on the benchmarks page.
    log_features : "auto", list of str or None, default None
        Features modelled on a log scale, ``log(x + c)``: skewed positive quantities
        (concentrations, counts, lab values) get multiplicative noise, and no draw, band or
        forecast of them goes below zero. ``c`` is half the feature's smallest positive value
        in the training data (so that a later 0 stays finite on the log scale). ``"auto"``
        takes every feature that is never negative in the training data; a list names them
        (each must be never negative). Data given later must not be negative there either.
        ``predict`` then gives, for these features, the back-transformed mean on the log
        scale (the predictive median when the log values' spread is symmetric); ``sample``
        and the quantiles are exact transforms of the draws.
    method : str, default "dopri5"
        ODE solver (see :data:`latentode.solvers.SOLVER_METHODS`). ``method``, ``rtol``,
        ``atol``, ``solver_options``, ``adjoint``, ``solver_backend`` and ``max_nfe`` make
        the model's :class:`~latentode.solvers.SolverSettings` (:meth:`solver_settings`).
    rtol, atol : float, default 1e-3, 1e-4
        Solver tolerances (on the internally standardised scale).
    solver_options : dict, optional
        Passed to the solver, e.g. ``{"step_size": 0.05}`` (fixed-step methods) or
        ``{"max_num_steps": 1000}``.
    adjoint : {False, True, "checkpoint"}, default False
        How gradients go through the solves: False backpropagates through the solver; True
        uses the continuous adjoint (memory flat in the number of solver steps, slower);
        ``"checkpoint"`` recomputes one step at a time in the backward pass (memory of one
        state per step, backward cost about one forward). See
        :class:`~latentode.solvers.SolverSettings`.
    kinetic_weight, jacobian_weight : float, default 0.0
        Regularise the dynamics in training by the integrated kinetic energy and Jacobian
        Frobenius norm of the latent paths (Finlay et al. 2020; computed along the same
        solve): straighter, smoother paths that the adaptive solver crosses in fewer steps.
        Typical weights 0.01–0.1; ``history_.nfe_forward`` shows the effect.
    solver_backend : {"auto", "native", "torchdiffeq"}, default "auto"
        ``"auto"`` uses this package's Dormand–Prince loop for ``method="dopri5"`` (faster
        for these small networks) and torchdiffeq otherwise; ``"torchdiffeq"`` forces the
        reference implementation.
    precision : {"32", "bf16-mixed"}, default "32"
        ``"bf16-mixed"``: the recognition network, decoder and classifier compute in bfloat16
        under ``torch.autocast`` (a speed-up on GPUs with bfloat16 units; none on most CPUs),
        while the ODE solves, likelihoods, parameters and gradients stay float32. See
        :class:`~latentode.models.LatentODEModel`.
    max_nfe : int or None, default 10000
        Cap on function evaluations of one ODE solve; a solve that needs more (stiff or
        exploding dynamics) fails with :class:`~latentode.SolverError` instead of running on.
    max_epochs : int, default 100
    max_time : float or None, default None
        A training budget in seconds of wall time: :meth:`fit` stops before an epoch that,
        as long as the last one, would end past it (at least one epoch runs; a resumed fit
        counts from its resumption). ``history_.out_of_time`` then says so. None: no limit.
    batch_size : int, default 50
    lr : float, default 1e-2
        Adam learning rate.
    lr_decay : float, default 0.99
        Learning-rate factor per epoch.
    average_epochs : int, default 0
        Weight averaging: the fitted parameters are the mean of those at the end of each of
        the last ``average_epochs`` epochs trained (Izmailov et al. 2018), which evens out
        the noise of the last stochastic steps — the last before whatever ends the fit:
        ``max_epochs``, ``max_time`` or early stopping. 0 keeps the last epoch's. With
        validation data the average is kept only if it scores no worse than the best epoch.
        Its effect on PhysioNet is measured on the documentation's benchmarks page.
    average_from_best : bool, default False
        With validation data (``validation_data``, or the share ``validation_fraction``
        holds out): the fitted parameters are the mean of those at the end of the best
        validated epoch and of every epoch trained after it — with ``patience=p``, the
        ``p + 1`` epochs up to the early stop. The best epoch alone carries the noise of its
        last stochastic steps; the average of its neighbourhood can generalise better (its
        effect on the classifier is measured on the documentation's benchmarks page). Not
        with ``average_epochs``.
    num_particles : int, default 1
        ``z0`` samples per series in each ELBO estimate.
    elbo : {"analytic_kl", "sampled_kl"}, default "analytic_kl"
        How training estimates the ELBO: with the KL divergence of ``z0``'s posterior from its
        prior in closed form (Normal guide; no sampling noise in that term), or from the
        sampled ``z0`` (always the case for ``guide="cnf"``). Both estimate the same objective.
    kl_anneal_epochs : int, default 0
        Epochs over which the weight of the KL term rises linearly to ``kl_weight``.
    kl_weight : float, default 1.0
        Weight of the KL term once annealing is over. 1 maximises the ELBO. Below 1 (a
        beta-VAE's weighting) the posterior ``q(z0 | x)`` may sit tighter than the prior
        allows, which sharpens reconstructions and forecasts at the cost of calibration: the
        credible bands of :meth:`predict` narrow, and the training loss is no longer a bound on
        the data's likelihood. Rubanova et al. (2019) trained their PhysioNet models so: a
        weight of 0 for 50 epochs, then ``1 - 0.993 ** (epoch - 50)``, at most 0.30 after
        100 epochs. Validation always scores the full ELBO.
    obs_weighting : {"point", "series_feature"}, default "point"
        How the training likelihood weighs observations. ``"point"``: each observed value
        counts once (the ELBO). ``"series_feature"``: each observed (series, feature) pair
        counts the same in total (scaled by the training data's mean number of observations
        per pair), as in :func:`latentode.metrics.series_feature_mse` and the training loss of
        Rubanova et al. (2019). Not the ELBO; validation and :meth:`score` use the ELBO. It
        trades the error per observed value for the error per pair (measured on the
        benchmarks page): choose the weighting of the metric that matters.
    clip_norm : float or None, default 10.0
        Gradient-norm clipping.
    subsample : float, default 1.0
        Fraction of each training series' observed time points kept in each mini-batch, drawn
        afresh every time (data augmentation as in Rubanova et al. 2019); 1 keeps all.
    encode_fraction : float, default 1.0
        Below 1, forecast training: in each mini-batch the encoder reads each series only up to
        a random fraction ``u ~ Uniform(encode_fraction, 1)`` of its observed span while the
        likelihood scores all of it, so that ``z0`` inferred from early observations must
        explain later ones. Helps long extrapolation; 1 encodes everything.
    hide_fraction : float, default 0.0
        Imputation training: in each mini-batch this share of the observed values, drawn
        afresh at random, is hidden from the encoder (and from the anchor's nearest
        observations) while the likelihood scores every value, so the model learns to fill
        in values it does not see, as it must when imputing. Each series keeps at least one
        value visible. 0 hides nothing. On PhysioNet's hourly imputation benchmark 0.2
        neither helped nor hurt with independent noise; with ``noise_rank=8,
        likelihood="student_t"`` it imputed with MAE 0.222, against 0.230 without it in an
        earlier sitting at the same number of epochs (docs: benchmarks).
        ``same_time_readout`` learns from the hidden values, as at prediction.
    patience : int or None, default None
        Early stopping on validation data given to :meth:`fit`.
    validation_fraction : float in [0, 1), default 0.1
        When :meth:`fit` is given no ``validation_data`` and the series are in memory,
        unlabelled and at least 200 of them, this share of them (whole series, at random) is
        held out of training and used as validation data: the best epoch is kept,
        ``patience`` applies, and the predictive is calibrated on them, so that bands cover
        what they claim by default. Their ids are in ``validation_ids_``. The draw follows
        ``random_state`` (a fixed draw when it is None, so that a resumed fit holds out the
        same series). 0 trains on every series; smaller data sets always do (pass
        ``validation_data`` or call :meth:`calibrate` on series kept aside).
    device : {"auto", "cpu", "cuda"}, default "auto"
    random_state : int or None, default None
        Seeds initialisation, shuffling and sampling; the same value gives the same results
        (bit for bit on the CPU with the same number of threads, see :meth:`fit`).
    verbose : bool or "force", default True
        Progress bar during fit: shown when standard error is a terminal (a long fit is never
        silent there; logs, notebooks and CI stay clean), always with "force", never with
        False.

    Attributes
    ----------
    model_ : LatentODEModel
        The fitted Pyro model and guide.
    history_ : TrainingHistory
    feature_names_in_ : ndarray of str, shape (features,)
    n_features_in_ : int
    value_mean_, value_scale_ : ndarray of shape (features,)
        Per-feature standardisation fitted on the training data (of the log values for
        log features).
    value_shift_ : ndarray of shape (features,)
        The shift ``c`` of each log feature's ``log(x + c)``; NaN for the others.
    time_origin_, time_scale_ : float
        Model time is ``(t - time_origin_) / time_scale_``; ``z0`` is the state at the origin.
    static_names_ : ndarray of str, shape (n_static,)
        The static covariates the training series carried
        (:meth:`~latentode.datasets.IrregularDataset.with_static`), empty without. The
        recognition network reads them, standardised (``static_mean_``, ``static_scale_``)
        with an indicator of which are known, so ``q(z0 | x, s)``; so does a classifier's
        head. Data given to a fitted model must carry the same ones.
    device_ : torch.device

    Examples
    --------
    >>> from latentode import LatentODE
    >>> from latentode.datasets import make_spirals
    >>> data = make_spirals(n_series=40, n_obs=20, random_state=0)
    >>> model = LatentODE(max_epochs=2, random_state=0).fit(data.train)
    >>> model.predict(data.test, times=data.test_extrapolation_times).dims
    ('series', 'time', 'feature')
    """

    _reads_static = True
    # parameters added since: the values that reproduce older files (importance resampling;
    # the automatic validation split)
    _OLDER_FILES = {"importance_samples": 0, "validation_fraction": 0.0, "heteroscedastic": False}

    def __init__(
        self,
        *,
        latent_dim: int = 4,
        ode_hidden_dim: int = 50,
        ode_layers: int = 3,
        encoder: str = "gru",
        guide: str = "normal",
        importance_samples: int = 256,
        encoder_hidden_dim: int = 50,
        encoder_solver: str = "rk4",
        decoder_hidden_dim: int = 50,
        poisson: bool = False,
        anchor: bool | str = False,
        obs_std: float | None = None,
        likelihood: str = "normal",
        noise_rank: int = 0,
        condition_limit: float | None = 4.0,
        same_time_readout: int = 0,
        heteroscedastic: bool = False,
        log_features: str | list | None = None,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        solver_options: dict | None = None,
        adjoint: bool | str = False,
        solver_backend: str = "auto",
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        precision: str = "32",
        max_nfe: int | None = 10_000,
        max_epochs: int = 100,
        max_time: float | None = None,
        batch_size: int = 50,
        lr: float = 1e-2,
        lr_decay: float = 0.99,
        average_epochs: int = 0,
        average_from_best: bool = False,
        num_particles: int = 1,
        elbo: str = "analytic_kl",
        kl_anneal_epochs: int = 0,
        kl_weight: float = 1.0,
        obs_weighting: str = "point",
        clip_norm: float | None = 10.0,
        subsample: float = 1.0,
        encode_fraction: float = 1.0,
        hide_fraction: float = 0.0,
        patience: int | None = None,
        validation_fraction: float = 0.1,
        device: str = "auto",
        random_state: int | None = None,
        verbose: bool | str = True,
    ):
        self.latent_dim = latent_dim
        self.ode_hidden_dim = ode_hidden_dim
        self.ode_layers = ode_layers
        self.encoder = encoder
        self.guide = guide
        self.importance_samples = importance_samples
        self.encoder_hidden_dim = encoder_hidden_dim
        self.encoder_solver = encoder_solver
        self.decoder_hidden_dim = decoder_hidden_dim
        self.poisson = poisson
        self.anchor = anchor
        self.obs_std = obs_std
        self.likelihood = likelihood
        self.noise_rank = noise_rank
        self.condition_limit = condition_limit
        self.same_time_readout = same_time_readout
        self.heteroscedastic = heteroscedastic
        self.log_features = log_features
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.solver_options = solver_options
        self.adjoint = adjoint
        self.solver_backend = solver_backend
        self.kinetic_weight = kinetic_weight
        self.jacobian_weight = jacobian_weight
        self.precision = precision
        self.max_nfe = max_nfe
        self.max_epochs = max_epochs
        self.max_time = max_time
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.average_epochs = average_epochs
        self.average_from_best = average_from_best
        self.num_particles = num_particles
        self.elbo = elbo
        self.kl_anneal_epochs = kl_anneal_epochs
        self.kl_weight = kl_weight
        self.obs_weighting = obs_weighting
        self.clip_norm = clip_norm
        self.subsample = subsample
        self.encode_fraction = encode_fraction
        self.hide_fraction = hide_fraction
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    _parameter_constraints = PARAMETERS

    def solver_settings(self) -> SolverSettings:
        """The :class:`~latentode.solvers.SolverSettings` of the parameters (validated).

        Returns
        -------
        SolverSettings
        """
        return SolverSettings(
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
            options=self.solver_options,
            adjoint=self.adjoint,
            max_nfe=self.max_nfe,
            backend=self.solver_backend,
        )

    def _fitted_state(self) -> dict:
        held = getattr(self, "validation_ids_", None)
        return {
            **super()._fitted_state(),
            "validation_ids_": None if held is None else [_json_id(i) for i in held],
        }

    def _set_fitted_state(self, state: dict) -> None:
        super()._set_fitted_state(state)
        self.validation_ids_ = state.get("validation_ids_")  # older files: None

    def _validate_params(self) -> None:
        super()._validate_params()
        self.solver_settings()
        if self.average_from_best and self.average_epochs:
            raise ValueError(
                f"average_epochs={self.average_epochs} and average_from_best=True are two "
                "windows of weight averaging; set average_epochs=0 or average_from_best=False."
            )
        if self.heteroscedastic:
            clash = {"obs_std": self.obs_std is not None, "noise_rank": self.noise_rank > 0}
            clash = [name for name, bad in clash.items() if bad]
            if clash:
                raise ValueError(
                    "heteroscedastic=True learns each feature's noise scale as a function of "
                    f"the latent state; it cannot be combined with {clash} set as they are: "
                    "reset those or set heteroscedastic=False."
                )
        if self.noise_rank:
            clash = {
                "obs_std": self.obs_std is not None,
                "obs_weighting": self.obs_weighting != "point",
            }
            clash = [name for name, bad in clash.items() if bad]
            if clash:
                raise ValueError(
                    f"noise_rank={self.noise_rank} scores the features of a time jointly with "
                    f"learned scales; it cannot be combined with {clash} set as they are: "
                    "reset those or set noise_rank=0."
                )

    def _build_module(self) -> LatentODEModel:
        obs_std = None
        if self.obs_std is not None and self._logged() is not None:
            raise ValueError(
                "obs_std is in the data's units, but log_features models some features on a "
                "log scale; drop one of the two (obs_std=None learns the noise)."
            )
        if self.obs_std is not None:
            std = np.asarray(self.obs_std, dtype=float)
            if std.ndim == 1 and std.size != self.n_features_in_:
                raise ValueError(
                    f"obs_std has {std.size} values but the data have {self.n_features_in_} "
                    f"features ({list(self.feature_names_in_)}); give one per feature or one "
                    "number for all."
                )
            obs_std = torch.as_tensor(std / self.value_scale_, dtype=torch.float32)
        return LatentODEModel(
            self.n_features_in_,
            latent_dim=self.latent_dim,
            ode_hidden_dim=self.ode_hidden_dim,
            ode_layers=self.ode_layers,
            encoder=self.encoder,
            encoder_hidden_dim=self.encoder_hidden_dim,
            encoder_solver=self.encoder_solver,
            decoder_hidden_dim=self.decoder_hidden_dim,
            poisson=self.poisson,
            anchor=self.anchor,
            obs_std=obs_std,
            likelihood=self.likelihood,
            noise_rank=self.noise_rank,
            condition_limit=self.condition_limit,
            same_time_readout=self.same_time_readout,
            heteroscedastic=self.heteroscedastic,
            posterior=self.guide,
            kinetic_weight=self.kinetic_weight,
            jacobian_weight=self.jacobian_weight,
            precision=self.precision,
            solver=self.solver_settings(),
            n_static=len(getattr(self, "static_names_", ())),
            **self._head_kwargs(),
        )

    def _head_kwargs(self) -> dict:
        """Extra arguments of the Pyro module (a classifier head in subclasses)."""
        return {}

    @serialised
    def fit(
        self,
        X,
        y=None,
        *,
        validation_data=None,
        checkpoint=None,
        checkpoint_every: int = 10,
        checkpoint_steps: int | None = None,
        resume: bool = False,
    ):
        """Fit the model to irregular series.

        Parameters
        ----------
        X : IrregularDataset, DataFrame indexed by (series id, time), list of (times, values), \
or ParquetSeries
            Training series; NaN marks unobserved values. A
            :class:`~latentode.datasets.ParquetSeries` is streamed from its files in shuffled
            windows (data larger than memory; see its ``window`` and ``workers``).
        y : None
            Ignored (unsupervised).
        validation_data : same types as ``X``, optional
            Held-out series; the parameters of the epoch with the best validation ELBO are
            kept, ``patience`` stops training early, and the predictive is calibrated on them
            (:meth:`calibrate`, when at least 50 values can be held out). Without it, a share
            of ``X`` is held out for this when ``X`` is large enough (``validation_fraction``).
        checkpoint : str or path-like, optional
            File to which the whole training state (parameters, optimiser, random streams,
            history) is written every ``checkpoint_every`` epochs, at the end and on
            ``KeyboardInterrupt``. Each write goes to a temporary file that is then renamed, so
            a killed process leaves the previous checkpoint intact.
        checkpoint_every : int, default 10
        checkpoint_steps : int, optional
            Also write ``checkpoint`` every this many optimisation steps inside an epoch, so
            that a resumed fit continues from that step (for long epochs over large data).
            A failed step then rolls back to the last such point.
        resume : bool, default False
            Continue from ``checkpoint`` if it exists (else start afresh). The data and the
            parameters must be those of the interrupted fit, except ``max_epochs``,
            ``max_time``, ``patience``, ``verbose`` and ``device``. A seeded fit resumed on the
            CPU ends with exactly the parameters of an uninterrupted one when both run with
            the same number of threads (``torch.get_num_threads()``): the order of
            floating-point reductions, and so the last digits, depend on it.

        Returns
        -------
        self

        Notes
        -----
        A step whose loss or gradients are not finite, or whose ODE solve fails, is rolled
        back to the start of its epoch and retried with half the learning rate (three times at
        most, with a ``RuntimeWarning``); then :class:`FloatingPointError` is raised and the
        estimator keeps what it held before ``fit``. ``KeyboardInterrupt`` (Ctrl-C) ends
        training at the last completed epoch with a warning: the estimator is fitted and
        usable, and ``history_.interrupted`` is True.
        """
        self._validate_params()
        _CHECKPOINT_EVERY.check(checkpoint_every)
        if checkpoint_steps is not None:
            _CHECKPOINT_STEPS.check(checkpoint_steps)
        if resume and checkpoint is None:
            raise ValueError("resume=True needs checkpoint=<path of the checkpoint file>.")
        if checkpoint is not None:
            _check_folder(checkpoint)
        if isinstance(X, ParquetSeries):
            if y is not None:
                raise ValueError(
                    "y: a fit streamed from a ParquetSeries is unsupervised; fit labelled "
                    "series from memory (an IrregularDataset, e.g. ParquetSeries.head(n))."
                )
            data = X
        else:
            data = as_dataset(X, name="X")
        with self._keep_state_on_failure():
            labels = self._check_labels(y, data)
            self.validation_ids_ = None
            if validation_data is None and y is None:
                data, validation_data = self._split_validation(data)
            if self.average_from_best and validation_data is None:
                held_out = (
                    "validation_data=(X_val, y_val)"
                    if y is not None
                    else "validation_data=X_val, or fit at least "
                    f"{AUTO_VALIDATION_SERIES} in-memory series with validation_fraction > 0"
                )
                raise ValueError(
                    "average_from_best=True averages from the best validated epoch on, but "
                    f"this fit has no validation data: pass {held_out}, or set "
                    "average_from_best=False."
                )
            every = (checkpoint_every, checkpoint_steps)
            self._fit(data, validation_data, checkpoint, every, resume, labels=labels)
        if self.history_.interrupted:
            warnings.warn(
                f"fit was interrupted after {len(self.history_.loss)} epochs; the estimator "
                "holds the parameters of the last completed (or best validated) epoch"
                + (
                    " and can continue with fit(..., checkpoint=..., resume=True)."
                    if checkpoint is not None
                    else "."
                ),
                RuntimeWarning,
                stacklevel=2,
            )
        return self

    def _split_validation(self, data):
        """``(train, validation)`` of in-memory ``data`` by ``validation_fraction``, or
        ``(data, None)`` when nothing is held out; sets ``validation_ids_``."""
        if (
            isinstance(data, ParquetSeries)
            or not self.validation_fraction
            or len(data) < AUTO_VALIDATION_SERIES
        ):
            return data, None
        seed = 0 if self.random_state is None else seed_from(self.random_state)
        order = np.random.default_rng([seed, len(data)]).permutation(len(data))
        n_held = max(1, int(round(self.validation_fraction * len(data))))
        held, kept = np.sort(order[:n_held]), np.sort(order[n_held:])
        self.validation_ids_ = [data.ids[i] for i in held]
        return data[kept], data[held]

    def _fit(
        self, data, validation_data, checkpoint, checkpoint_every, resume, *, labels=None
    ) -> None:
        """Fit on validated ``data``; ``checkpoint_every`` is (epochs, steps or None).

        ``labels`` is None, a LongTensor of shape (series,), or for per-time labels a list of
        LongTensors of shape (n_obs_i,) (``-1`` = no label).
        """
        seed = seed_from(self.random_state)
        self.device_ = _process_device(resolve_device(self.device))
        parallel = DataParallel.from_environment(self.device_)
        if parallel is not None:  # every process starts from rank 0's seed
            seed = parallel.broadcast_int(seed)
        self._fit_scaling(data)
        validation = None
        if validation_data is not None:
            validation = _validation_batches(self, validation_data, labels is not None)
        resume_from, write = None, None
        if checkpoint is not None:  # the data's fingerprint is needed only to checkpoint
            resume_from, write = _checkpointing(self, checkpoint, data, labels, resume)
        if parallel is not None and not parallel.is_main:
            write = None  # only rank 0 writes checkpoints
        with self._seeded(seed, self.device_):
            module = self._build_module().to(self.device_)
            generator = torch.Generator().manual_seed(seed)  # shuffles: the same everywhere
            draws = generator
            if parallel is not None:  # each process draws its own noise for its own series
                draws = torch.Generator().manual_seed(seed + 1 + parallel.rank)
                torch.manual_seed(seed + 1 + parallel.rank)
            verbose = self.verbose if parallel is None or parallel.is_main else False
            if isinstance(data, ParquetSeries):
                batches = _StreamedBatches(self, data, draws, seed, parallel)
            else:
                batches = _BatchMaker(self, list(data), labels, draws)
            self.history_ = train_svi(
                module,
                batches,
                len(data),
                _training_config(self, *checkpoint_every, verbose),
                validation=validation,
                generator=generator,
                checkpoint=write,
                resume_from=resume_from,
                parallel=parallel,
            )
        self.model_, self.calibration_ = module, None
        if validation_data is not None:  # held-out series: calibrate the bands on them
            self._calibrate_if_possible(_series_of(validation_data, labels is not None))


def _json_id(series_id):
    """A series id as JSON holds it: numbers and strings as they are, others as text."""
    if isinstance(series_id, np.generic):
        series_id = series_id.item()
    return series_id if isinstance(series_id, (int, float, str)) else str(series_id)


def _series_of(validation_data, labelled: bool):
    """The series of ``validation_data`` (X_val, or X_val of a pair (X_val, y_val))."""
    return (
        validation_data[0] if labelled and isinstance(validation_data, tuple) else validation_data
    )


def _process_device(device: torch.device) -> torch.device:
    """``device``, or under torchrun with an unnumbered CUDA device, this process's GPU."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def _training_config(est, checkpoint_every: int, checkpoint_steps, verbose) -> TrainingConfig:
    """The SVI loop's settings from the estimator's parameters."""
    return TrainingConfig(
        max_epochs=est.max_epochs,
        max_time=est.max_time,
        batch_size=est.batch_size,
        lr=est.lr,
        lr_decay=est.lr_decay,
        num_particles=est.num_particles,
        elbo=est.elbo,
        kl_anneal_epochs=est.kl_anneal_epochs,
        kl_final=float(est.kl_weight),
        clip_norm=est.clip_norm,
        patience=est.patience,
        verbose=verbose,
        checkpoint_every=checkpoint_every,
        checkpoint_steps=checkpoint_steps,
        average_epochs=est.average_epochs,
        average_from_best=est.average_from_best,
    )


def _checkpointing(est, checkpoint, data, labels, resume: bool):
    """The state to resume from (or None) and the function that writes checkpoints."""
    if isinstance(data, ParquetSeries):
        fingerprint = data.fingerprint()
    else:
        fingerprint = data_fingerprint(data)
    if labels is not None:
        flat = torch.cat(labels) if isinstance(labels, list) else labels
        fingerprint += ":" + content_digest(flat)
    identity = dict(cls_name=type(est).__name__, params=est.get_params(deep=False))
    resume_from = None
    if resume:
        resume_from = read_checkpoint(checkpoint, fingerprint=fingerprint, **identity)
    write = functools.partial(
        write_checkpoint, os.fspath(checkpoint), fingerprint=fingerprint, **identity
    )
    return resume_from, write


def _check_folder(path) -> None:
    """Raise ValueError unless the folder of the file ``path`` exists and is writable."""
    if os.path.isdir(os.fspath(path)):
        raise ValueError(
            f"checkpoint={os.fspath(path)!r} is a folder; give a file name inside it, e.g. "
            f"{os.path.join(os.fspath(path), 'fit.ckpt')!r}."
        )
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(
            f"checkpoint={os.fspath(path)!r}: the folder {folder!r} does not exist "
            "or is not writable; create it first (checked now rather than after the "
            "first epochs of training)."
        )


def _validation_batches(est, validation_data, labelled: bool) -> list:
    """Validation series (and labels) collated in chunks on the estimator's device."""
    val_x, val_y = validation_data, None
    if labelled and isinstance(validation_data, tuple):
        if len(validation_data) != 2:
            raise ValueError(
                "validation_data must be X_val or a pair (X_val, y_val); got a tuple of "
                f"{len(validation_data)}."
            )
        val_x, val_y = validation_data
    val = est._check_data(val_x, name="validation_data")
    val_labels = None if val_y is None else est._check_labels(val_y, val, fit=False)
    batches = []
    for i in range(0, len(val), PREDICT_CHUNK):
        chunk = val[i : i + PREDICT_CHUNK]
        batch = est._batch(chunk, est.device_)
        if val_labels is not None:
            chosen = batch_labels(val_labels, list(range(i, i + len(chunk))), list(chunk))
            batch = dataclasses.replace(batch, labels=chosen.to(est.device_))
        batches.append(batch)
    return batches


class _BatchMaker:
    """The training batches of a fit: series indices to a :class:`Batch` in model units.

    Applies the estimator's ``subsample``, pair weighting, labels, ``encode_fraction`` and
    ``hide_fraction``,
    drawing with ``draws``. A batch of every series reuses one collation of the whole set
    (full-batch training), reordering its rows.
    """

    def __init__(self, est, series: list, labels, draws: torch.Generator):
        self.est, self.series, self.labels, self.draws = est, series, labels, draws
        self.whole = None
        self.pair_weight = None
        if est.obs_weighting == "series_feature" and series:  # observations per observed pair
            counts = np.concatenate([np.isfinite(s.values).sum(0) for s in series])
            self.pair_weight = float(counts.sum() / max(np.count_nonzero(counts), 1))

    def __call__(self, idx: torch.Tensor):
        est, device = self.est, self.est.device_
        chosen = [self.series[i] for i in idx.tolist()]
        if len(idx) == len(self.series):  # same union grid: reorder the rows
            if self.whole is None:
                self.whole = est._batch(self.series, device)
            batch = self.whole.rows(idx)
        else:
            batch = est._batch(chosen, device)
        if self.labels is not None:
            labels = batch_labels(self.labels, idx.tolist(), chosen)
            batch = dataclasses.replace(batch, labels=labels.to(device))
        return self.augment(batch)

    def augment(self, batch):
        """The training variant of a collated ``batch``: subsampled, weighted, truncated."""
        est = self.est
        batch = batch.subsample(est.subsample, generator=self.draws)
        if self.pair_weight is not None:
            batch = batch.weight_pairs(self.pair_weight)
        batch = batch.truncate_encoder(est.encode_fraction, generator=self.draws)
        return batch.hide_values(est.hide_fraction, generator=self.draws)


class _StreamedBatches(BatchStream):
    """The training batches of a fit streamed from a :class:`ParquetSeries`.

    Each epoch's shuffle is :meth:`ParquetSeries.plan` of the fit's seed; under ``torchrun``
    every process reads its own share of the row groups. Batches are collated (rescaled) by
    the data set's DataLoader workers and made into training batches here, as in memory.
    """

    def __init__(self, est, source: ParquetSeries, draws, seed: int, parallel):
        self.est, self.source, self.seed, self.parallel = est, source, seed, parallel
        self.maker = _BatchMaker(est, [], None, draws)
        if est.obs_weighting == "series_feature":
            pairs = max(source.observed_pairs, 1)
            self.maker.pair_weight = float(source.observed_values.sum() / pairs)
        self.scaling = _Scaling.of(est)

    def epoch(self, epoch: int, start: int):
        rank, world = (
            (0, 1) if self.parallel is None else (self.parallel.rank, self.parallel.world_size)
        )
        src = self.source
        plan = src.plan(
            epoch, batch_size=self.est.batch_size, window=src.window, seed=self.seed, world=world
        )
        if plan.n_steps == 0:
            raise ValueError(
                f"X: {len(src)} series cannot give each of {world} processes a batch; use fewer "
                "processes or more series."
            )
        stream = src.stream(
            plan,
            rank=rank,
            start=start,
            workers=src.workers,
            times_transform=self.scaling.times,
            values_transform=self.scaling.values,
        )
        for step, batch in stream:
            size = int(plan.global_sizes[step])
            share = batch.values.shape[0] / size
            yield self.maker.augment(batch.to(self.est.device_)), share, size


@dataclasses.dataclass(frozen=True)
class _Scaling:
    """The estimator's rescaling of times and values, as plain arrays (for worker processes)."""

    time_origin: float
    time_scale: float
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, est) -> _Scaling:
        return cls(est.time_origin_, est.time_scale_, est.value_mean_, est.value_scale_)

    def times(self, t):
        return (t - self.time_origin) / self.time_scale

    def values(self, v):
        return (v - self.mean) / self.scale
