"""The Latent ODE as a Pyro model and an amortised guide.

Generative model, for series ``b`` on the batch grid ``t`` (time origin 0)::

    z0_b ~ Normal(0, I)                                   site "z0"
    z_b(t) = ODESolve(f, z0_b, t)
    x_b(t_i) ~ Normal(decoder(z_b(t_i)), sigma)  where observed      site "obs"
        (with ``anchor``, the mean is blended with the nearest observations)
    log p(times_b) = Σ_i log λ(z_b(t_i)) − ∫ λ(z_b(t)) dt              site "obs_times" (optional)

Guide: ``q(z0_b | x_b) = Normal(loc_b, scale_b)`` from the recognition network.
"""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from ._validation import check_params, choice, real
from .flows import CNF, CNFDynamics
from .likelihoods import (
    MaskedLowRankNormal,
    MaskedLowRankStudentT,
    conditional_low_rank,
    masked_normal,
    masked_student_t,
    poisson_process_log_likelihood,
    window_integral,
)
from .nn import (
    Anchor,
    AugmentedDynamics,
    Decoder,
    IntensityNet,
    ODEFunc,
    RegularisedDynamics,
    SameTimeReadout,
    last_observed,
    mlp,
    next_observed,
    own_neighbours,
)
from .recurrent import GRUEncoder, ODERNNEncoder, RNNEncoder
from .solvers import ODESolver, SolverError, SolverSettings

__all__ = [
    "ENCODERS",
    "LIKELIHOODS",
    "POSTERIORS",
    "PRECISIONS",
    "LatentODEModel",
    "ObservationNoise",
    "TailWeight",
    "SERIES_PLATE",
]

#: Name of the plate over series, at dim -1.
SERIES_PLATE = "series"

#: Recognition networks selectable by name.
ENCODERS = {"gru": GRUEncoder, "rnn": RNNEncoder, "odernn": ODERNNEncoder}
#: Fixed-step schemes of the ODE-RNN encoder between observations.
ENCODER_SOLVERS = ("rk4", "euler")

#: Families of the observation noise.
LIKELIHOODS = ("normal", "student_t")

#: Families of the variational posterior q(z0 | x).
POSTERIORS = ("normal", "cnf")

#: Arithmetic of the networks: all float32, or bfloat16 autocast around the encoder, decoder
#: and classifier with the ODE solves (state, dynamics, step control) kept in float32.
PRECISIONS = ("32", "bf16-mixed")

#: Values of ``anchor``: none, the level blend, the blend that follows the decoded path.
ANCHORS = (False, True, "path")

_PARAMETERS = (
    choice("precision", PRECISIONS),
    choice("anchor", ANCHORS),
    choice("encoder", tuple(ENCODERS)),
    choice("encoder_solver", ENCODER_SOLVERS),
    choice("posterior", POSTERIORS),
    choice("likelihood", LIKELIHOODS),
    real("kinetic_weight", low=0),
    real("jacobian_weight", low=0),
)


#: Heteroscedastic noise scales each feature's SD by ``exp(s)``, ``s`` squashed into
#: ``(-LOG_SPAN, LOG_SPAN)``: at most twentyfold either way, so no state's noise collapses to
#: zero (an infinite density) or swamps the data.
LOG_SPAN = 3.0


class ObservationNoise(nn.Module):
    """Per-feature observation standard deviation, learned or fixed, optionally a function of
    the latent state (heteroscedastic).

    Parameters
    ----------
    n_features : int
    init : float or Tensor of shape (features,)
        Initial (or fixed) standard deviation, in the model's scaled units.
    learn : bool
        Whether it is a parameter.
    latent_dim : int, optional
        Make the noise heteroscedastic: each feature's SD is multiplied by
        ``exp(LOG_SPAN * tanh(g(z) / LOG_SPAN))``, ``g`` a small network of the latent state
        ``z(t)`` whose last layer starts at zero (so training starts from the per-feature
        SD). Needs ``learn``.
    hidden_dim : int, default 32
        Width of ``g``'s hidden layer.
    """

    def __init__(self, n_features: int, init, *, learn: bool, latent_dim=None, hidden_dim=32):
        super().__init__()
        init = torch.as_tensor(init, dtype=torch.float32).expand(n_features).clone()
        self.learn = learn
        if learn:
            self.raw = nn.Parameter(torch.log(torch.expm1(init)))  # inverse softplus
        else:
            self.register_buffer("value", init)
        self.state = None
        if latent_dim is not None:
            if not learn:
                raise ValueError(
                    "heteroscedastic noise learns how the noise varies with the state; it "
                    "cannot be combined with a fixed obs_std: set obs_std=None."
                )
            self.state = mlp(latent_dim, hidden_dim, n_features)
            nn.init.zeros_(self.state[-1].weight)
            nn.init.zeros_(self.state[-1].bias)

    @property
    def heteroscedastic(self) -> bool:
        """Whether the noise depends on the latent state."""
        return self.state is not None

    def forward(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """Standard deviations: shape (features,), or (..., features) for latent states ``z``
        of shape (..., latent) when heteroscedastic (``z`` is then required; it is ignored
        otherwise)."""
        base = F.softplus(self.raw) + 1e-4 if self.learn else self.value
        if self.state is None:
            return base
        if z is None:
            raise ValueError("heteroscedastic noise depends on the latent state: pass z.")
        log_factor = LOG_SPAN * torch.tanh(self.state(z.float()) / LOG_SPAN)
        return base * torch.exp(log_factor)


class TailWeight(nn.Module):
    """Degrees of freedom of a Student-t observation noise, learned, above 2 (finite
    variance), starting at 5: one per feature, or one for the joint t of the features of a
    time (correlated noise).

    Parameters
    ----------
    n_features : int
        How many (1 for a joint distribution).
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.raw = nn.Parameter(torch.full((n_features,), 2.9489))  # softplus -> 3

    def forward(self) -> torch.Tensor:
        """Tensor of shape (n_features,)."""
        return F.softplus(self.raw) + 2.0


class LatentODEModel(PyroModule):
    """Latent ODE with a recognition network, as ``model`` and ``guide`` methods.

    Parameters
    ----------
    n_features : int
        Observed features.
    latent_dim : int, default 4
    ode_hidden_dim : int, default 50
        Width of the dynamics MLP.
    ode_layers : int, default 3
    encoder : {"gru", "rnn", "odernn"}, default "gru"
        Recognition network: :class:`~latentode.recurrent.GRUEncoder`,
        :class:`~latentode.recurrent.RNNEncoder` or :class:`~latentode.recurrent.ODERNNEncoder`.
    encoder_hidden_dim : int, default 50
        Width of the recognition network's state.
    encoder_solver : {"rk4", "euler"}, default "rk4"
        Scheme of the ODE-RNN encoder between observations (see
        :class:`~latentode.recurrent.ODERNNEncoder`); only with ``encoder="odernn"``.
    decoder_hidden_dim : int, default 50
    poisson : bool, default False
        Add the Poisson-process likelihood of observation times (site ``obs_times``).
    obs_std : float or None, default None
        Fixed observation standard deviation (scaled units); None learns it.
    likelihood : {"normal", "student_t"}, default "normal"
        Family of the observation noise: Gaussian, or Student-t with degrees of freedom
        learned per feature (:class:`TailWeight`), whose heavy tails bound what a gross
        error (a mistyped value) costs. ``obs_std`` is then the t distribution's scale.
    noise_rank : int, default 0
        Shared components of the observation noise: the features observed at one time are
        jointly Gaussian with covariance ``diag(σ²) + U Uᵀ``, ``U`` of shape (features,
        noise_rank) learned (:class:`~latentode.likelihoods.MaskedLowRankNormal`), or with
        ``likelihood="student_t"`` jointly Student-t with that scale matrix and one learned
        degrees of freedom (:class:`~latentode.likelihoods.MaskedLowRankStudentT`). In the
        generative mode each feature is then drawn given the other features observed at the
        same query time (:func:`~latentode.likelihoods.conditional_low_rank`): the ``mean``
        site is that conditional mean. 0 keeps the features' noise independent. Learned
        scales and unweighted observations only.
    condition_limit : float or None, default 4.0
        With ``noise_rank``: the conditioning on the features observed at the same query
        time counts a seen value at most this many of its feature's noise scales from the
        decoded mean (``limit`` of :func:`~latentode.likelihoods.conditional_low_rank`), so a
        gross value does not carry the other features of its time with it. An attribute:
        it can be changed on a fitted model. None conditions on the values as they are.
        It also winsorises the inputs of the same-time readout.
    same_time_readout : int, default 0
        Width of a :class:`~latentode.nn.SameTimeReadout` (0: none). In the generative
        mode, where other features are observed at a query time, each feature is drawn
        from its readout from them: the conditional above shifted by the readout's shift
        (the decoded mean shifted, without ``noise_rank``), with the readout's scale. When
        training, the site ``same_time`` adds the log-density of each observed value under
        its readout from the other values seen at its time — with ``encode_mask``, of the
        values the encoder did not read only — with the decoded means and noise fixed,
        weighted by ``1e-3`` so that its gradient does not enter the clipping of the
        model's.
    heteroscedastic : bool, default False
        Let the noise scale of each feature vary with the latent state ``z(t)``
        (:class:`ObservationNoise` with ``latent_dim``): wider where the series is in an
        unsettled state, narrower where it is calm. Needs learned scales and independent
        features (not ``obs_std`` or ``noise_rank``).
    solver : SolverSettings, optional
        How the latent ODE is solved (:class:`latentode.solvers.SolverSettings`); the CNF
        guide's flow uses its tolerances, gradient mode and NFE cap with the dopri5 method.
    n_classes : int, optional
        Add a classifier and a categorical site ``label``: of ``z0`` (one label per series),
        or of ``z(t)`` at every time point with ``label_per_time``.
    label_weight : float, default 1.0
        Scale of the ``label`` site's log-likelihood against the observations'.
    n_static : int, default 0
        Static covariates per series. Each Pyro program then takes ``static``, the batch's
        :attr:`~latentode.datasets.Batch.context` (values and known-indicators, shape
        ``(batch, 2 * n_static)``), which the recognition network's head reads beside its
        final state, so ``q(z0 | x, s)``, and which the classifier's head reads beside the
        latent state.
    label_per_time : bool, default False
        Labels are per time point: ``label_t ~ Categorical(logits=head(z(t)))``.
    posterior : {"normal", "cnf"}, default "normal"
        Family of ``q(z0 | x)``: the encoder's diagonal Gaussian, or that Gaussian pushed
        through a continuous normalizing flow (:class:`latentode.flows.CNF`, shared by all
        series and starting as the identity), which can be skewed, curved or multimodal.
    flow_hidden_dim : int, default 32
        Width of the flow's dynamics MLP (``posterior="cnf"``).
    kinetic_weight, jacobian_weight : float, default 0.0
        Weights of the dynamics regularisers of Finlay et al. (2020) in training: the
        integrated kinetic energy ``∫|f(z)|² dt`` and Jacobian Frobenius norm
        ``∫|∂f/∂z|_F² dt`` of each series' latent path (model units), solved along with it
        (:class:`~latentode.nn.RegularisedDynamics`) and subtracted from the ELBO as the site
        ``dynamics_penalty``. Only in training mode; evaluation and prediction are unchanged.
    anchor : {False, True, "path"}, default False
        Blend each decoded mean with the feature's nearest observations before and after that
        time, by learned weights that decay with the distance (:class:`~latentode.nn.Anchor`);
        ``"path"`` first carries each observation along the decoded path from its time
        (``Anchor(follow_path=True)``), so that a trend continues from it.
        Only observations the guide reads count: in training with ``encode_mask`` those, in
        the generative mode the conditioning series; never the value being scored. In
        training (gradients on) the latent path is fitted by the plain model's likelihood
        (the factor ``decoder_alone``) and the blend by the ``obs`` site with the decoded mean
        held fixed, so the anchor cannot make the dynamics lazy; scores (``per_series_elbo``,
        without gradients) are the ELBO of the blended model.
    precision : {"32", "bf16-mixed"}, default "32"
        ``"bf16-mixed"`` runs the recognition network, the decoder and the classifier under
        ``torch.autocast`` in bfloat16 (faster matrix products on GPUs with bfloat16 units)
        and returns their outputs as float32. The latent ODE solve stays float32 throughout —
        state, dynamics and error control, where bfloat16's 8-bit mantissa would make the
        tolerances unreachable — and so do the likelihoods and the Poisson intensities.
        Parameters and gradients are float32; bfloat16 has float32's range, so no loss
        scaling is needed.
    """

    def __init__(
        self,
        n_features: int,
        *,
        latent_dim: int = 4,
        ode_hidden_dim: int = 50,
        ode_layers: int = 3,
        encoder: str = "gru",
        encoder_hidden_dim: int = 50,
        encoder_solver: str = "rk4",
        decoder_hidden_dim: int = 50,
        poisson: bool = False,
        obs_std: float | None = None,
        likelihood: str = "normal",
        noise_rank: int = 0,
        heteroscedastic: bool = False,
        condition_limit: float | None = 4.0,
        same_time_readout: int = 0,
        solver: SolverSettings | None = None,
        n_classes: int | None = None,
        label_weight: float = 1.0,
        label_per_time: bool = False,
        n_static: int = 0,
        posterior: str = "normal",
        flow_hidden_dim: int = 32,
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        anchor: bool | str = False,
        precision: str = "32",
    ):
        super().__init__()
        check_params(
            dict(
                precision=precision,
                anchor=anchor,
                encoder=encoder,
                encoder_solver=encoder_solver,
                posterior=posterior,
                likelihood=likelihood,
                kinetic_weight=kinetic_weight,
                jacobian_weight=jacobian_weight,
            ),
            _PARAMETERS,
        )
        self.precision = precision
        self.n_features = n_features
        self.latent_dim = latent_dim
        self.poisson = poisson
        self.n_static = int(n_static)
        n_context = 2 * self.n_static
        if encoder_solver != "rk4" and encoder != "odernn":
            raise ValueError(
                f"encoder_solver={encoder_solver!r} applies to encoder='odernn' only; the "
                f"{encoder!r} encoder has no ODE. Use encoder='odernn' or drop encoder_solver."
            )
        extra = {"method": encoder_solver} if encoder == "odernn" else {}
        self.encoder = ENCODERS[encoder](
            n_features, latent_dim, encoder_hidden_dim, n_context=n_context, **extra
        )
        self.decoder = Decoder(latent_dim, n_features, decoder_hidden_dim)
        self.anchor = Anchor(n_features, follow_path=anchor == "path") if anchor else None
        func = ODEFunc(latent_dim, ode_hidden_dim, n_layers=ode_layers)
        if poisson:
            func = AugmentedDynamics(func, IntensityNet(latent_dim, n_features), latent_dim)
        self.kinetic, self.jacobian = float(kinetic_weight), float(jacobian_weight)
        if self.kinetic or self.jacobian:
            func = RegularisedDynamics(func, latent_dim, jacobian=self.jacobian > 0)
        settings = SolverSettings() if solver is None else solver
        self.solver = ODESolver(func, settings)
        self.label_weight = float(label_weight)
        self.label_per_time = bool(label_per_time)
        self.classifier = None
        if n_classes is not None:
            self.classifier = mlp(
                latent_dim + n_context,
                decoder_hidden_dim,
                n_classes,
                n_layers=2,
                activation=nn.ReLU,
            )
        if heteroscedastic and noise_rank:
            raise ValueError(
                "heteroscedastic noise scales each feature's noise by its own state-dependent "
                "factor; it cannot be combined with noise_rank > 0. Set one of the two."
            )
        self.noise = ObservationNoise(
            n_features,
            0.1 if obs_std is None else obs_std,
            learn=obs_std is None,
            latent_dim=latent_dim if heteroscedastic else None,
        )
        self.noise_rank = int(noise_rank)
        self.condition_limit = condition_limit
        self.readout = None
        if same_time_readout:
            self.readout = SameTimeReadout(n_features, int(same_time_readout))
        self.noise_factor = None
        # Student-t noise: degrees of freedom per feature, or one for the joint t of a time
        self.tails = None
        if likelihood == "student_t":
            self.tails = TailWeight(1 if self.noise_rank else n_features)
        if self.noise_rank:
            if obs_std is not None:
                raise ValueError(
                    "noise_rank > 0 needs learned noise scales: drop obs_std, or set noise_rank=0."
                )
            # small random loadings: at U = 0 the gradient of the likelihood in U vanishes
            self.noise_factor = nn.Parameter(0.05 * torch.randn(n_features, self.noise_rank))
        self.flow = None
        if posterior == "cnf":
            self.flow = CNF(
                latent_dim,
                CNFDynamics(latent_dim, flow_hidden_dim),
                settings=SolverSettings(
                    rtol=settings.rtol,
                    atol=settings.atol,
                    adjoint=settings.adjoint,
                    max_nfe=10_000 if solver is None else settings.max_nfe,
                ),
            )

    # -- deterministic pieces ------------------------------------------------------------
    def _network(self, net, *args):
        """``net(*args)`` (a tensor or a tuple of tensors), under bfloat16 autocast with
        ``precision="bf16-mixed"`` and then cast back to float32."""
        if self.precision == "32":
            return net(*args)
        with torch.autocast(args[0].device.type, dtype=torch.bfloat16):
            out = net(*args)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()

    def solve(self, z0: torch.Tensor, times: torch.Tensor):
        """Latent trajectory (and cumulative intensity) on ``times``.

        Parameters
        ----------
        z0 : Tensor of shape (..., batch, latent)
            Latent state at time 0.
        times : Tensor of shape (time,)
            Increasing, in model units; times before 0 are solved backwards from ``z0``.

        Returns
        -------
        z : Tensor of shape (..., batch, time, latent)
        cumulative : Tensor of shape (..., batch, time, features) or None
            ``∫_0^t λ(z(s)) ds`` when ``poisson`` (negative before 0).
        """
        n_before = int((times < 0).sum())
        if n_before:  # backwards from the origin to the earliest time, then forwards
            parts = [self._solve_forward(z0, times[:n_before].flip(0))]
            if n_before < times.numel():
                parts.append(self._solve_forward(z0, times[n_before:]))
            z = torch.cat([parts[0][0].flip(-2)] + [p[0] for p in parts[1:]], dim=-2)
            if not self.poisson:
                return z, None
            return z, torch.cat([parts[0][1].flip(-2)] + [p[1] for p in parts[1:]], dim=-2)
        return self._solve_forward(z0, times)

    def _solve_forward(self, z0: torch.Tensor, times: torch.Tensor):
        """:meth:`solve` for times all on one side of 0, monotone away from it."""
        prepend = bool(times[0] != 0)
        grid = torch.cat([times.new_zeros(1), times]) if prepend else times
        y0 = z0
        if self.poisson:
            y0 = torch.cat([z0, z0.new_zeros(z0.shape[:-1] + (self.n_features,))], dim=-1)
        regularise = self.training and (self.kinetic > 0 or self.jacobian > 0)
        self.penalty = None
        if regularise:
            func = self.solver.func
            func.active, func.probe = True, torch.randn_like(z0)
            n_state = y0.shape[-1]
            y0 = torch.cat([y0, y0.new_zeros(y0.shape[:-1] + (2,))], dim=-1)
            try:  # the penalties ride along but need no accuracy: not in step control
                ys = self.solver(y0, grid, error_channels=n_state)
            finally:
                func.active, func.probe = False, None
            end = ys[-1, ..., -2:]  # (..., batch, 2): integrated energy and Jacobian norm
            self.penalty = self.kinetic * end[..., 0] + self.jacobian * end[..., 1]
            ys = ys[..., :-2]
        else:
            ys = self.solver(y0, grid)
        if prepend:
            ys = ys[1:]
        ys = ys.movedim(0, -2).contiguous()  # batch-major: the decoder runs ~1.5x faster
        if self.poisson:
            return ys[..., : self.latent_dim], ys[..., self.latent_dim :]
        return ys, None

    def decode(self, z: torch.Tensor, context=None, path=None) -> torch.Tensor:
        """Observation means of latent states (..., batch, time, latent), blended with the
        nearest observations ``context`` (the outputs of :func:`~latentode.nn.last_observed`
        and :func:`~latentode.nn.next_observed` on the same times) by an anchored model.
        ``path`` (..., batch, grid, features): the decoded means on the grid the context
        indexes, for ``anchor="path"``; by default ``z``'s own (the context is on its
        times)."""
        loc = self._network(self.decoder, z)
        if self.anchor is None or context is None:
            return loc
        return self.anchor(loc, *context, path=loc if path is None else path)

    def intensity(self, z: torch.Tensor) -> torch.Tensor:
        """Observation intensities λ(z), (..., latent) to (..., features)."""
        return self.solver.func.intensity(z)  # through RegularisedDynamics when wrapped

    # -- Pyro programs -------------------------------------------------------------------
    def model(
        self,
        times,
        values,
        mask,
        *,
        kl_scale: float = 1.0,
        encode_mask=None,
        labels=None,
        query_times=None,
        obs_weight=None,
        static=None,
        query_index=None,
        own_times: bool = False,
        wanted=None,
    ):
        """The generative model.

        Two modes. Given observations (the default), it scores them: sites ``z0``, ``obs``
        (observed), ``obs_times`` and ``label`` where enabled. Given ``query_times``, it
        generates instead: ``obs`` is drawn at the query times, beside the deterministic sites
        ``z``, ``mean`` and (with ``poisson``) ``intensity``; run on draws of the guide (as
        :func:`~latentode.inference.posterior_predictive` does), this is the posterior
        predictive distribution.

        Parameters
        ----------
        times : Tensor of shape (time,)
        values, mask : Tensor of shape (batch, time, features)
        kl_scale : float
            Weight of the ``z0`` site (KL annealing).
        encode_mask : BoolTensor of shape (batch, time, features), optional
            Used by the guide only (see :meth:`guide`).
        labels : LongTensor of shape (batch,) or (batch, time), optional
            Observed classes for the ``label`` site (models built with ``n_classes``); per
            time point with ``label_per_time``, ``-1`` where a time has no label.
        query_times : Tensor of shape (query,), optional
            Increasing, non-negative times (model units) at which to generate ``obs``; the
            observations are then not scored.
        obs_weight : Tensor broadcastable to (batch, time, features), optional
            Weights of the observations' log-densities in ``obs`` (see
            :meth:`latentode.datasets.Batch.weight_pairs`); None weights each by 1.
        static : Tensor of shape (batch, 2 * n_static), optional
            The batch's :attr:`~latentode.datasets.Batch.context`; required when the model
            has static covariates. Read by the guide's encoder and the classifier's head.
        query_index : LongTensor of shape (batch, own), optional
            With ``query_times``: the positions on ``query_times`` each series wants (its own
            times, padded with any position); the generated sites are then at those only,
            (..., batch, own, ...), and nothing is decoded at the others.
        own_times : bool, default False
            When scoring: decode and score each series at its own observation times only
            (in time order, padded to the most any series has), not on the whole grid of
            ``times``. The ELBO is the same; the work is that of the observations instead of
            batch x grid, which on a union grid of series observed at different times (raw
            clinical times) is a small share of it. The ``obs`` site's value and the returned
            means are then of shape (batch, own, features). The training loss uses it.
        wanted : BoolTensor of shape (batch, query, features), optional
            With ``query_times``: the entries whose draws the caller uses. Observation noise
            is drawn there only (``obs`` is NaN at the others) and the same-time readout is
            computed there only (it costs a hidden layer per entry, where the rest of the
            generative mode costs one per time; ``mean`` is the noise model's conditional
            alone at the others). Default: all entries.

        Returns
        -------
        Tensor of shape (batch, time, features) or (..., batch, query, features)
            Decoded means on ``times`` (or each series' own times with ``own_times``), or on
            ``query_times`` (``query_index``) when given.
        """
        n_series = values.shape[0]
        self._check_static(static)
        prior = dist.Normal(
            values.new_zeros(n_series, self.latent_dim), values.new_ones(n_series, self.latent_dim)
        ).to_event(1)
        context = None
        seen = mask if encode_mask is None else encode_mask
        # each series' own observation times (None: on the whole grid), and its data there
        own = _own_order(mask) if own_times and query_times is None else None
        scored, observed = values, mask
        if own is not None:
            scored, observed, seen = _pick(values, own), _pick(mask, own), _pick(seen, own)
            if obs_weight is not None:
                obs_weight = _pick(obs_weight.expand(values.shape), own)
        if self.anchor is not None:
            index = self.anchor.follow_path
            if own is not None:
                context = own_neighbours(times[own], scored, seen, with_index=index)
            else:
                on = times if query_times is None else query_times
                context = (
                    last_observed(times, values, seen, on, with_index=index),
                    next_observed(times, values, seen, on, with_index=index),
                )
        with pyro.plate(SERIES_PLATE, n_series, dim=-1):
            with poutine.scale(scale=kl_scale):
                z0 = pyro.sample("z0", prior)
            if query_times is not None:
                same = None
                if self.noise_factor is not None or self.readout is not None:
                    same = _at_same_times(times, values, seen, query_times)
                return self._generate(
                    z0, query_times, context, static, same, times, query_index, wanted
                )
            z, cumulative = self.solve(z0, times)
            if self.penalty is not None:
                pyro.factor("dynamics_penalty", -self.penalty)
            path = z if own is None else _pick(z, own)  # where the observations are scored
            training = self.training and torch.is_grad_enabled()
            if self.anchor is not None and context is not None and training:
                # training: the latent path learns to explain the data on its own (the plain
                # model's likelihood), the blend learns how far to trust the nearest
                # observations given that path (its gradient stops at the decoded mean)
                plain = self._network(self.decoder, path)
                loc = self.anchor(plain.detach(), *context, path=plain.detach())
                alone = self._likelihood(plain, observed, obs_weight, path).log_prob(scored)
                pyro.factor("decoder_alone", alone)
            else:
                loc = self.decode(path, context)
            pyro.sample("obs", self._likelihood(loc, observed, obs_weight, path), obs=scored)
            if self.readout is not None and training:
                # each observed value read from the others seen at its time, the readout
                # learning given the model (its inputs stop the gradient); with encode_mask
                # only the values the encoder did not read, as at prediction
                targets = observed if encode_mask is None else observed & ~seen
                pyro.factor("same_time", self._same_time_score(loc, path, scored, targets, seen))
            if self.poisson:
                integral = window_integral(cumulative, mask.any(-1))
                ll = poisson_process_log_likelihood(self.intensity(z), mask, integral)
                pyro.factor("obs_times", ll)
            if labels is not None and self.classifier is not None:
                with poutine.scale(scale=self.label_weight):
                    pyro.sample(
                        "label", self._label_dist(z0, z, static, labels), obs=labels.clamp(min=0)
                    )
        return loc

    def _likelihood(self, loc, mask, obs_weight, z=None):
        """Density of the observations given their means ``loc`` and latent states ``z``
        (..., batch, time, latent), which set the noise when it is heteroscedastic (and are
        required then)."""
        if self.noise_factor is not None:
            if obs_weight is not None:
                raise ValueError(
                    "noise_rank > 0 scores the features of a time jointly; observation weights "
                    "(obs_weighting='series_feature') do not apply to a joint density."
                )
            if self.tails is None:
                return MaskedLowRankNormal(loc, self.noise(), self.noise_factor, mask)
            return MaskedLowRankStudentT(loc, self.noise(), self.noise_factor, self.tails(), mask)
        if self.tails is None:
            return masked_normal(loc, self.noise(z), mask, obs_weight)
        return masked_student_t(loc, self.noise(z), self.tails(), mask, obs_weight)

    def _check_static(self, static) -> None:
        if self.n_static and static is None:
            raise ValueError(
                f"the model has {self.n_static} static covariates; pass the batch's context "
                "(static=batch.context)."
            )

    def _generate(
        self,
        z0,
        query_times,
        context,
        static=None,
        same=None,
        times=None,
        query_index=None,
        wanted=None,
    ) -> torch.Tensor:
        """Sites of the generative mode of :meth:`model`, inside the series plate; ``same``
        holds the observations at the query times (values, seen) for correlated noise;
        ``times``, the conditioning grid, where ``anchor="path"`` needs the decoded path on
        it; ``query_index``, each series' positions on the query times, and ``wanted``, the
        entries where noise is drawn and the readout read (see :meth:`model`)."""
        path = None
        if context is not None and self.anchor.follow_path:
            # one solve through the observation and query times: the query path, and the
            # decoded means where the neighbours were observed
            grid, where = torch.unique(torch.cat([times, query_times]), return_inverse=True)
            z_all, _ = self.solve(z0, grid)
            z = z_all[..., where[times.numel() :], :]
            path = self._network(self.decoder, z_all[..., where[: times.numel()], :])
        else:
            z, _ = self.solve(z0, query_times)
        if query_index is not None:  # each series' own query times only, from here on
            z = _pick(z, query_index)
            if context is not None:
                context = tuple(tuple(_pick(x, query_index) for x in side) for side in context)
            if same is not None:
                same = tuple(_pick(x, query_index) for x in same)
            if wanted is not None:
                wanted = _pick(wanted, query_index)
        pyro.deterministic("z", z, event_dim=2)
        loc = self.decode(z, context, path)
        decoded = loc
        df = None if self.tails is None else self.tails()
        if same is None or self.noise_factor is None:
            noise = self.noise(z).expand(loc.shape)
        elif df is None:
            loc, noise = conditional_low_rank(
                loc, self.noise(), self.noise_factor, *same, limit=self.condition_limit
            )
        else:  # the joint t of a time, conditioned: more degrees of freedom, rescaled
            loc, noise, df = conditional_low_rank(
                loc, self.noise(), self.noise_factor, *same, df=df, limit=self.condition_limit
            )
        if same is not None and self.readout is not None:
            read, spread, others = self._read(decoded, z, *same, wanted=wanted)
            if self.noise_factor is not None:  # a correction of the linear conditional
                read = read - decoded + loc
            loc, noise = torch.where(others, read, loc), torch.where(others, spread, noise)
            if df is not None:
                df = torch.where(others, self.tails().expand(loc.shape[-1:]), df)
        if df is not None:
            df = df.expand(loc.shape)
        loc = pyro.deterministic("mean", loc, event_dim=2)
        if self.poisson:
            pyro.deterministic("intensity", self.intensity(z), event_dim=2)
        if wanted is not None:  # the noise of the wanted entries only: NaN elsewhere
            pyro.sample("obs", _AtEntries(loc, noise, df, wanted).to_event(2))
        elif df is None:
            pyro.sample("obs", dist.Normal(loc, noise).to_event(2))
        else:
            pyro.sample("obs", dist.StudentT(df, loc, noise).to_event(2))
        if self.classifier is not None:
            pyro.sample("label", self._label_dist(z0, z, static))
        return loc

    def marginal_scale(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """Each feature's marginal noise scale: ``sqrt(σ² + Σ_r U²)`` with correlated noise,
        else the noise scale (of latent states ``z`` (..., latent) when heteroscedastic).

        Returns
        -------
        Tensor of shape (features,), or (..., features) when heteroscedastic
        """
        if self.noise_factor is None:
            return self.noise(z)
        return (self.noise() ** 2 + (self.noise_factor**2).sum(-1)).sqrt()

    def _read(self, loc, z, values, seen, wanted=None):
        """The same-time readout (:class:`~latentode.nn.SameTimeReadout`) of decoded means
        ``loc`` (..., batch, time, features) on latent states ``z``, given the observations
        ``values, seen`` (batch, time, features) at those times. Read only where another
        feature is seen at the time, and only at the ``wanted`` entries (batch, time,
        features) when given (elsewhere ``loc`` and the marginal scale are returned, and the
        returned mask, where it was read, is False there), in chunks of the leading
        dimensions, each entry's hidden layer being as wide as the readout."""
        marginal = self.marginal_scale(z).expand(loc.shape)
        others = SameTimeReadout.others(seen)
        if wanted is not None:
            others = others & wanted
        flat = loc.reshape(-1, *loc.shape[-3:])
        flat_marginal = marginal.reshape(-1, *loc.shape[-3:])
        width = self.readout.target.shape[-1]
        per_row = (int(others.sum()) + flat[0].numel() // loc.shape[-1]) * width
        step = max(1, _READOUT_CHUNK // max(1, per_row))
        read, spread = flat.clone(), flat_marginal.clone()
        for i in range(0, flat.shape[0], step):
            part = flat[i : i + step]
            at = others.expand(part.shape).nonzero(as_tuple=True)
            mean, scale, _ = self.readout(
                part, flat_marginal[i : i + step], values, seen, limit=self.condition_limit, at=at
            )
            read[i : i + step][at], spread[i : i + step][at] = mean, scale
        return read.reshape(loc.shape), spread.reshape(loc.shape), others

    def _same_time_score(self, loc, path, values, targets, seen):
        """Log-density (..., batch) of the ``targets`` values under the same-time readout from
        the other values seen at their time, where any is; the model's means and noise enter
        without gradient. With correlated noise the readout corrects the linear conditional
        (:func:`~latentode.likelihoods.conditional_low_rank`), as when generating. Weighted
        by ``_READOUT_WEIGHT``: Adam's steps do not depend on a loss's scale, but the global
        gradient clipping would, so the readout's gradient is kept from shrinking the
        model's steps."""
        with torch.no_grad():
            loc = loc.detach()
            marginal = self.marginal_scale(path).expand(loc.shape)
            base, df = loc, None if self.tails is None else self.tails().detach()
            if self.noise_factor is not None:
                cond = conditional_low_rank(
                    loc,
                    self.noise(),
                    self.noise_factor,
                    values,
                    seen,
                    df=df,
                    limit=self.condition_limit,
                )
                base = cond[0]
        at = targets & self.readout.others(seen)
        where = at.expand(loc.shape).nonzero(as_tuple=True)
        read, spread, _ = self.readout(
            loc, marginal, values, seen, limit=self.condition_limit, at=where
        )
        read = read - loc[where] + base[where]
        x = values.expand(loc.shape)[where]
        if df is None:
            log_p = dist.Normal(read, spread).log_prob(x)
        else:
            log_p = dist.StudentT(df.expand(loc.shape[-1:])[where[-1]], read, spread).log_prob(x)
        total = loc.new_zeros(loc.shape).index_put(where, log_p)
        return _READOUT_WEIGHT * total.sum((-1, -2))

    def _label_dist(self, z0, z, static=None, labels=None):
        """The ``label`` site's distribution, per series or per time (masked where ``-1``)."""
        if not self.label_per_time:
            return dist.Categorical(logits=self.classify(z0, static))
        d = dist.Categorical(logits=self.classify(z, static))
        if labels is not None:
            d = d.mask(labels >= 0)
        return d.to_event(1)

    def classify(self, h: torch.Tensor, static=None) -> torch.Tensor:
        """Class logits of latent states ``h`` (..., batch, latent) or (..., batch, time,
        latent), with the series' static ``context`` (batch, 2 * n_static) when the model has
        static covariates: (..., classes)."""
        if self.n_static:
            if self.label_per_time:  # h has a time dim after the batch's
                static = static.unsqueeze(-2)
            static = static.expand(h.shape[:-1] + static.shape[-1:])
            h = torch.cat([h, static.to(h.dtype)], dim=-1)
        return self._network(self.classifier, h)

    def guide(
        self,
        times,
        values,
        mask,
        *,
        kl_scale: float = 1.0,
        encode_mask=None,
        labels=None,
        query_times=None,
        obs_weight=None,
        static=None,
        query_index=None,
        own_times: bool = False,
    ):
        """The amortised posterior ``q(z0 | x)``; same arguments as :meth:`model`.

        With ``encode_mask`` the encoder reads only those observations while the model scores
        all of ``mask``: ``q(z0 | x_early)`` is trained to forecast the rest. ``labels``,
        ``query_times``, ``query_index`` and ``obs_weight`` do not enter the guide.
        """
        self._check_static(static)
        if encode_mask is not None:
            values, mask = values * encode_mask, encode_mask
        loc, scale = self._network(self.encoder, values, mask, times, static)
        q = dist.Normal(loc, scale).to_event(1)
        if self.flow is not None:
            q = dist.TransformedDistribution(q, [self.flow])
        with pyro.plate(SERIES_PLATE, values.shape[0], dim=-1):
            with poutine.scale(scale=kl_scale):
                return pyro.sample("z0", q)

    def posterior_z0(self, times, values, mask, *, n_samples: int, generator=None, static=None):
        """Draws from ``q(z0 | x)`` without Pyro's effect handlers.

        Returns
        -------
        Tensor of shape (n_samples, batch, latent)
        """
        self._check_static(static)
        loc, scale = self._network(self.encoder, values, mask, times, static)
        return self._draw_q(loc, scale, n_samples, generator)[0]

    def _solve_surviving(self, z0: torch.Tensor, times: torch.Tensor, *, max_failures=64):
        """:meth:`solve` where a path the solver cannot follow does not stop the others.

        In one batched solve every path shares the steps, so one that diverges (a proposal
        far in the tail of ``q``) makes the whole solve fail. After a :class:`SolverError`
        the paths are solved again in halves, down to single paths; one that fails alone
        comes back as NaN. Same shapes as :meth:`solve`. Raises :class:`SolverError` after
        ``max_failures`` failed solves: then the dynamics fail for many paths, not a few.
        """
        failures = 0

        def attempt(y):  # y: (..., latent); after a failure, (paths, latent)
            nonlocal failures
            try:
                return self.solve(y, times)
            except SolverError as err:
                failures += 1
                if failures > max_failures:
                    raise SolverError(
                        f"the paths of many importance proposals cannot be solved ({err}); "
                        "the fitted dynamics diverge near the data: refit (longer, or with a "
                        "smaller learning rate) or loosen the solver's settings."
                    ) from err
            y = y.reshape(-1, y.shape[-1])
            if y.shape[0] == 1:  # fails alone: NaN, shaped as solve's outputs
                nan = float("nan")
                z = y.new_full((1, times.numel(), y.shape[-1]), nan)
                lam = y.new_full((1, times.numel(), self.n_features), nan) if self.poisson else None
                return z, lam
            parts = [attempt(part) for part in (y[: y.shape[0] // 2], y[y.shape[0] // 2 :])]
            cumulative = torch.cat([p[1] for p in parts]) if self.poisson else None
            return torch.cat([p[0] for p in parts]), cumulative

        z, cumulative = attempt(z0)
        shape = z0.shape[:-1] + (times.numel(), -1)
        return z.reshape(shape), cumulative.reshape(shape) if self.poisson else None

    def _draw_q(self, loc, scale, n: int, generator=None):
        """``n`` draws of ``q(z0 | x)`` from the encoder's ``loc`` and ``scale`` (batch,
        latent) through the flow if any, with their log-densities under ``q``: tensors of
        shape (n, batch, latent) and (n, batch)."""
        eps = torch.randn((n,) + loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
        base = loc + scale * eps
        log_q = dist.Normal(loc, scale).log_prob(base).sum(-1)
        if self.flow is None:
            return base, log_q
        z0 = self.flow(base)
        return z0, log_q - self.flow.log_abs_det_jacobian(base, z0)

    def importance_z0(
        self,
        times,
        values,
        mask,
        *,
        n_samples: int,
        n_proposals: int,
        static=None,
        block: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws from the posterior ``p(z0 | x)`` by importance resampling, ``q(z0 | x)`` the
        proposal.

        ``n_proposals`` draws of ``q`` are weighted by ``p(z0) p(x | z0) / q(z0 | x)`` — the
        prior, the observations' likelihood under the decoded latent path (the decoder's own
        means, as the path is trained, and the observation times' Poisson likelihood with
        ``poisson``) and the proposal's density — and ``n_samples`` are drawn from them in
        proportion to their weights, with replacement. The encoder is amortised over all
        series and its ``q`` is broader than the posterior of any one series; the weights
        move the draws to the values of ``z0`` that explain this series' own observations.
        Uses torch's global random stream.

        Parameters
        ----------
        times : Tensor of shape (time,)
        values, mask : Tensor of shape (batch, time, features)
        n_samples, n_proposals : int
        static : Tensor of shape (batch, 2 * n_static), optional
        block : int, optional
            Proposals decoded and scored at once; default all. Bounds the widest tensor (the
            decoder's hidden layer over block x batch x time) without changing the weights.

        Returns
        -------
        z0 : Tensor of shape (n_samples, batch, latent)
        ess : Tensor of shape (batch,)
            Effective sample size of each series' weights (1 to ``n_proposals``).
        """
        self._check_static(static)
        loc, scale = self._network(self.encoder, values, mask, times, static)
        z0, log_q = self._draw_q(loc, scale, n_proposals)  # (proposals, batch, latent)
        log_w = dist.Normal(0.0, 1.0).log_prob(z0).sum(-1) - log_q
        z, cumulative = self._solve_surviving(z0, times)
        # a draw whose path the solver could not follow (non-finite) gets no weight
        low, high = torch.aminmax(z.flatten(-2), dim=-1)  # NaN and inf reach one of them
        lost = ~(torch.isfinite(low) & torch.isfinite(high))  # (proposals, batch)
        if lost.any():
            # one message whatever the counts, so that Python shows it once, not per chunk
            warnings.warn(
                "the paths of some importance proposals could not be solved; they get no "
                "weight: the dynamics diverge where the encoder's q reaches. If this recurs, "
                "fit longer or with a smaller learning rate, or set importance_samples=0 "
                "(draws of q).",
                RuntimeWarning,
                stacklevel=2,
            )
        z = torch.where(lost[..., None, None], 0.0, z)
        if self.poisson:
            cumulative = torch.where(lost[..., None, None], 0.0, cumulative)
            integral = window_integral(cumulative, mask.any(-1))  # on the whole grid
        # the scores need each path at its own series' observation times only: on a union
        # grid of series observed at different times that is a fraction of the grid
        own_z, own_values, own_mask = _at_own_times(z, values, mask)
        scores = []
        for first in range(0, n_proposals, block or n_proposals):
            part = slice(first, first + (block or n_proposals))
            means = self._network(self.decoder, own_z[part])
            score = self._likelihood(means, own_mask, None, own_z[part]).log_prob(own_values)
            if self.poisson:
                score = score + poisson_process_log_likelihood(
                    self.intensity(own_z[part]), own_mask, integral[part]
                )
            scores.append(score)
        log_w = log_w + torch.cat(scores)
        log_w = torch.where(torch.isfinite(log_w) & ~lost, log_w, -torch.inf)
        weights = torch.softmax(log_w, dim=0).nan_to_num(1.0 / n_proposals)  # all -inf: even
        ess = 1.0 / weights.square().sum(0)
        pick = torch.multinomial(weights.T, n_samples, replacement=True)  # (batch, samples)
        drawn = z0.gather(0, pick.T.unsqueeze(-1).expand(n_samples, *z0.shape[1:]))
        return drawn, ess


#: elements of the same-time readout's hidden layer evaluated at once when generating
_READOUT_CHUNK = 2**24
#: weight of the same-time readout's training term (see ``_same_time_score``)
_READOUT_WEIGHT = 1e-3


class _AtEntries(dist.TorchDistribution):
    """Normal (``df`` None) or Student-t noise around ``loc`` drawn at the ``wanted``
    entries only, NaN at the others: the ``obs`` site of a generation that uses a few
    entries of a dense (..., batch, time, features) grid. Draws only; no density."""

    arg_constraints = {}
    support = dist.constraints.real

    def __init__(self, loc, scale, df, wanted):
        shape = torch.broadcast_shapes(loc.shape, scale.shape, wanted.shape)
        self.loc, self.scale = loc.expand(shape), scale.expand(shape)
        self.wanted = wanted.expand(shape)
        self.df = None if df is None else df.expand(shape)
        super().__init__(batch_shape=shape, validate_args=False)

    @property
    def mean(self):
        return torch.where(self.wanted, self.loc, torch.nan)

    def sample(self, sample_shape=()):
        if sample_shape:
            raise NotImplementedError("entries are drawn in the plates' shape only")
        at = self.wanted.nonzero(as_tuple=True)
        if self.df is None:
            noise = dist.Normal(self.loc[at], self.scale[at])
        else:
            noise = dist.StudentT(self.df[at], self.loc[at], self.scale[at])
        out = torch.full_like(self.loc, torch.nan)
        out[at] = noise.sample()
        return out

    rsample = sample


def _pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` of shape (..., batch, query, width) at each series' positions ``index`` of shape
    (batch, own): shape (..., batch, own, width)."""
    index = index.unsqueeze(-1).expand(x.shape[:-3] + index.shape + x.shape[-1:])
    return x.gather(-2, index)


def _own_order(mask):
    """Each series' observation times as positions on the grid, in time order and padded (with
    positions it was not observed at) to the most any series has: LongTensor (batch, own);
    None when that is the whole grid."""
    observed = mask.any(-1)  # (batch, time)
    longest = int(observed.sum(-1).max()) if observed.numel() else 0
    if longest == observed.shape[-1]:
        return None
    # observed times first, each series' in time order (a stable sort of "not observed")
    return torch.argsort((~observed).to(torch.int8), dim=-1, stable=True)[:, :longest]


def _at_own_times(z, values, mask):
    """Paths, values and mask at each series' own observation times (:func:`_own_order`):
    shapes (..., batch, own, latent) and (batch, own, features). Unchanged when that is the
    whole grid."""
    order = _own_order(mask)
    if order is None:
        return z, values, mask
    return _pick(z, order), _pick(values, order), _pick(mask, order)


def _at_same_times(times, values, seen, query_times):
    """Observations at exactly the query times: values and mask of shape
    (batch, query, features), nothing seen where a query time is not on the grid."""
    index = torch.searchsorted(times.contiguous(), query_times.contiguous())
    index = index.clamp(max=times.numel() - 1)
    on_grid = times[index] == query_times
    return values[:, index], seen[:, index] & on_grid.view(1, -1, 1)
