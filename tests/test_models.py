import pyro
import pytest
import torch

from latentode.datasets import collate, from_arrays
from latentode.inference import posterior_predictive
from latentode.models import SERIES_PLATE, LatentODEModel
from latentode.solvers import SolverError


def batch():
    nan = float("nan")
    return collate(
        from_arrays(
            [
                ([0.1, 0.4, 1.0], [[1.0, nan], [0.5, -0.3], [nan, 0.2]]),
                ([0.2, 0.7], [[0.1, 0.6], [0.7, nan]]),
            ]
        )
    )


@pytest.mark.parametrize("poisson", [False, True])
def test_sites_names_and_shapes(poisson):
    model = LatentODEModel(2, latent_dim=3, poisson=poisson)
    b = batch()
    guide_tr = pyro.poutine.trace(model.guide).get_trace(b.times, b.values, b.mask)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_tr)).get_trace(
        b.times, b.values, b.mask
    )
    sites = {k: v for k, v in model_tr.nodes.items() if v["type"] == "sample" and k != SERIES_PLATE}
    expected = {"z0", "obs"} | ({"obs_times"} if poisson else set())
    assert set(sites) == expected
    assert sites["z0"]["value"].shape == (2, 3)
    assert sites["obs"]["fn"].batch_shape == (2,) and sites["obs"]["fn"].event_shape == (5, 2)
    assert all(f.name == SERIES_PLATE for s in sites.values() for f in s["cond_indep_stack"])
    assert torch.equal(guide_tr.nodes["z0"]["value"], sites["z0"]["value"])


def test_masked_entries_do_not_contribute():
    model = LatentODEModel(2, latent_dim=3)
    b = batch()
    guide_tr = pyro.poutine.trace(model.guide).get_trace(b.times, b.values, b.mask)

    def obs_log_prob(values):
        tr = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_tr)).get_trace(
            b.times, values, b.mask
        )
        return tr.nodes["obs"]["fn"].log_prob(values)

    changed = torch.where(b.mask, b.values, torch.full_like(b.values, 50.0))
    assert torch.allclose(obs_log_prob(b.values), obs_log_prob(changed))
    observed_changed = b.values.clone()
    observed_changed[0, 2, 0] += 3.0  # an observed entry
    assert not torch.allclose(obs_log_prob(b.values), obs_log_prob(observed_changed))


def test_solve_prepends_the_origin_and_accepts_sample_dims():
    model = LatentODEModel(2, latent_dim=3, poisson=True)
    z0 = torch.randn(5, 2, 3)
    z, cumulative = model.solve(z0, torch.tensor([0.5, 1.0, 2.0]))
    assert z.shape == (5, 2, 3, 3) and cumulative.shape == (5, 2, 3, 2)
    # cumulative intensity starts at the origin, so it is positive and increasing after it
    assert (cumulative[..., 0, :] > 0).all() and (cumulative.diff(dim=-2) > 0).all()


@pytest.mark.slow
def test_cnf_posterior_starts_as_the_normal_one_and_can_only_tighten_the_bound():
    from latentode.datasets import make_spirals
    from latentode.inference import per_series_elbo, svi_loss

    d = make_spirals(n_series=40, n_obs=15, random_state=0)
    b = collate(d.train[:24], times_transform=lambda t: t / 5, values_transform=lambda v: v / 5)
    torch.manual_seed(0)
    normal = LatentODEModel(2, latent_dim=3, obs_std=0.05)
    opt = torch.optim.Adam(normal.parameters(), lr=0.01)
    for _ in range(60):  # a model and encoder with something to explain
        opt.zero_grad()
        svi_loss(normal, b).backward()
        opt.step()
    cnf = LatentODEModel(2, latent_dim=3, obs_std=0.05, posterior="cnf")
    missing = cnf.load_state_dict(normal.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("flow.") for k in missing)

    def bound(module):
        torch.manual_seed(1)
        return float(per_series_elbo(module, b, num_particles=256).mean())

    before = bound(normal)
    assert bound(cnf) == pytest.approx(before, abs=1e-4)  # the flow starts as the identity
    # train the flow alone: with the model fixed, a richer q can only raise the ELBO
    opt = torch.optim.Adam(cnf.flow.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        svi_loss(cnf, b, num_particles=4).backward()
        opt.step()
    after = bound(cnf)
    assert after > before + 1.0  # nats per series; about 10 were seen


@pytest.mark.parametrize("poisson", [False, True])
def test_dynamics_penalty_is_a_training_only_site_that_lowers_the_elbo(poisson):
    b = batch()
    torch.manual_seed(0)
    plain = LatentODEModel(2, latent_dim=3, poisson=poisson)
    torch.manual_seed(0)
    reg = LatentODEModel(2, latent_dim=3, poisson=poisson, kinetic_weight=0.5, jacobian_weight=0.2)

    def traces(model):
        guide_tr = pyro.poutine.trace(model.guide).get_trace(b.times, b.values, b.mask)
        replay = pyro.poutine.replay(model.model, trace=guide_tr)
        return guide_tr, pyro.poutine.trace(replay).get_trace(b.times, b.values, b.mask)

    reg.train()
    torch.manual_seed(1)
    _, tr_reg = traces(reg)
    torch.manual_seed(1)
    _, tr_plain = traces(plain)
    penalty = tr_reg.nodes["dynamics_penalty"]
    log_factor = penalty["fn"].log_factor
    assert log_factor.shape == (2,) and (log_factor < 0).all()
    assert torch.equal(log_factor, -reg.penalty)
    # the same paths otherwise, up to the solver's tolerance (the extra channels change the
    # adaptive steps, not the latent state)
    mean_reg, mean_plain = tr_reg.nodes["obs"]["fn"].mean, tr_plain.nodes["obs"]["fn"].mean
    assert torch.allclose(mean_reg, mean_plain, atol=1e-3)
    reg.eval()
    _, tr_eval = traces(reg)
    assert "dynamics_penalty" not in tr_eval.nodes
    with pytest.raises(ValueError, match="kinetic_weight"):
        LatentODEModel(2, kinetic_weight=-1.0)


@pytest.mark.parametrize("encoder", ["gru", "rnn", "odernn"])
def test_bf16_mixed_runs_networks_in_bfloat16_and_the_solve_in_float32(encoder):
    """Autocast reaches the encoder and decoder only; the ODE and the likelihood stay fp32."""
    torch.manual_seed(0)
    mixed = LatentODEModel(2, latent_dim=3, encoder=encoder, poisson=True, precision="bf16-mixed")
    plain = LatentODEModel(2, latent_dim=3, encoder=encoder, poisson=True)
    plain.load_state_dict(mixed.state_dict())
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen.setdefault(name, set()).add(out.dtype)

        return hook

    mixed.decoder.register_forward_hook(record("decoder"))
    mixed.encoder.out.register_forward_hook(record("encoder"))
    mixed.solver.func.register_forward_hook(record("dynamics"))
    b = batch()
    losses = []
    for model in (mixed, plain):
        pyro.set_rng_seed(1)
        elbo = pyro.infer.Trace_ELBO()
        loss = elbo.differentiable_loss(model.model, model.guide, b.times, b.values, b.mask)
        loss.backward()
        losses.append(loss)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert seen == {
        "decoder": {torch.bfloat16},
        "encoder": {torch.bfloat16},
        "dynamics": {torch.float32},
    }
    assert losses[0].dtype == torch.float32
    # same parameters and noise: only bfloat16 rounding in the networks separates the two
    assert torch.isclose(losses[0], losses[1], rtol=0.05), losses


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision='fp16'.*bf16-mixed"):
        LatentODEModel(2, precision="fp16")


def test_anchor_reads_only_what_the_guide_reads():
    """In forecast training the means after the encoded window must not see later values."""
    model = LatentODEModel(2, latent_dim=3, anchor=True)
    with torch.no_grad():
        model.anchor.weight.fill_(5.0)
    b = batch()
    encode = b.mask.clone()
    encode[:, 2:] = False  # the guide reads the first two grid times only
    z0 = torch.zeros(2, 3)

    def means(values, encode_mask):  # the model returns the decoded means
        conditioned = pyro.poutine.condition(model.model, data={"z0": z0})
        return conditioned(b.times, values, b.mask, encode_mask=encode_mask)

    later = b.values.clone()
    later[:, 2:] += 7.0  # change only values the guide does not read
    assert torch.allclose(means(b.values, encode), means(later, encode))
    # without the encode mask every other observation anchors the means
    assert not torch.allclose(means(b.values, None), means(later, None))
    plain = LatentODEModel(2, latent_dim=3)
    assert plain.anchor is None


def test_path_anchor_predicts_on_query_times_what_it_scores_on_the_grid():
    """Generative mode solves through the observation times too: at the grid's own times the
    predicted means are the training-mode means of the same z0, at other times finite."""
    model = LatentODEModel(2, latent_dim=3, anchor="path").eval()
    with torch.no_grad():
        model.anchor.weight.fill_(2.0)
        model.anchor.path_logit.fill_(1.0)
    b = batch()
    z0 = torch.randn(2, 3)
    conditioned = pyro.poutine.condition(model.model, data={"z0": z0})
    with torch.no_grad():
        on_grid = conditioned(b.times, b.values, b.mask)
        asked = conditioned(b.times, b.values, b.mask, query_times=b.times)
        later = conditioned(b.times, b.values, b.mask, query_times=b.times[-1:] + 0.5)
    assert torch.allclose(asked, on_grid, atol=1e-5)
    assert later.shape == (2, 1, 2) and torch.isfinite(later).all()
    level = LatentODEModel(2, latent_dim=3, anchor=True)
    assert not hasattr(level.anchor, "path_logit")
    with pytest.raises(ValueError, match="anchor"):
        LatentODEModel(2, anchor="both")


@pytest.mark.parametrize("follow", [False, True], ids=["level", "path"])
def test_anchored_training_fits_the_latent_path_alone_and_the_blend_on_top(follow):
    """The dynamics learn from the plain likelihood only; the blend cannot make them lazy."""
    model = LatentODEModel(2, latent_dim=3, anchor="path" if follow else True).train()
    b = batch()

    def trace():
        guide_tr = pyro.poutine.trace(model.guide).get_trace(b.times, b.values, b.mask)
        replayed = pyro.poutine.replay(model.model, trace=guide_tr)
        return pyro.poutine.trace(replayed).get_trace(b.times, b.values, b.mask)

    tr = trace()
    assert "decoder_alone" in tr.nodes  # a training factor
    obs = tr.nodes["obs"]["fn"].log_prob(tr.nodes["obs"]["value"]).sum()
    decoder = list(model.decoder.parameters())
    blend = [model.anchor.weight, model.anchor.log_rate]
    if follow:
        blend.append(model.anchor.path_logit)
    grads = torch.autograd.grad(-obs, decoder + blend, allow_unused=True)
    assert all(g is None or torch.all(g == 0) for g in grads[: len(decoder)])
    assert all(g is not None and torch.any(g != 0) for g in grads[len(decoder) :])
    own = tr.nodes["decoder_alone"]["fn"].log_prob(tr.nodes["decoder_alone"]["value"]).sum()
    grads = torch.autograd.grad(-own, decoder + blend, allow_unused=True)
    assert all(g is not None for g in grads[: len(decoder)])
    assert all(g is None for g in grads[len(decoder) :])
    with torch.no_grad():  # scoring: the ELBO of the blended model, nothing else
        assert "decoder_alone" not in trace().nodes
    model.eval()
    assert "decoder_alone" not in trace().nodes


def ragged_batch(seed=0):
    """Six series observed at different times: a union grid far longer than any series."""
    g = torch.Generator().manual_seed(seed)
    series = []
    for n in (3, 5, 2, 6, 4, 1):
        times = torch.sort(torch.rand(n, generator=g) * 3.0).values
        values = torch.randn(n, 3, generator=g)
        values[torch.rand(n, 3, generator=g) < 0.3] = float("nan")
        values[:, 0] = torch.randn(n, generator=g)  # every time has an observation
        series.append((times.tolist(), values.tolist()))
    return collate(from_arrays(series))


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(anchor=True),
        dict(anchor="path", noise_rank=2),
        dict(anchor=True, poisson=True),
        dict(likelihood="student_t"),
    ],
    ids=["plain", "level", "path-lowrank", "level-poisson", "student"],
)
@pytest.mark.parametrize("training", [False, True], ids=["scoring", "training"])
def test_scoring_at_own_times_is_the_grids_density(settings, training):
    """``own_times=True`` decodes and scores each series at its own times only: the same
    log-density (anchors, hidden values, weights and all) at a fraction of the grid's work."""
    torch.manual_seed(0)
    model = LatentODEModel(3, latent_dim=3, **settings).train(training)
    if model.anchor is not None:
        with torch.no_grad():
            model.anchor.weight.fill_(1.5)
    b = ragged_batch()
    assert b.times.numel() > 2 * int(b.mask.any(-1).sum(-1).max())  # a long union grid
    encode = b.mask & (torch.rand(b.mask.shape) < 0.7)  # imputation training's hidden values
    weight = torch.rand(b.values.shape[0], 1, 3) + 0.5
    if settings.get("noise_rank"):
        weight = None  # a joint density takes no weights
    z0 = torch.randn(b.values.shape[0], 3)

    def log_density(own_times):
        conditioned = pyro.poutine.condition(model.model, data={"z0": z0})
        tr = pyro.poutine.trace(conditioned).get_trace(
            b.times, b.values, b.mask, encode_mask=encode, obs_weight=weight, own_times=own_times
        )
        tr.compute_log_prob()
        sites = [v for k, v in tr.nodes.items() if v["type"] == "sample" and k != "z0"]
        assert ("decoder_alone" in tr.nodes) == (training and model.anchor is not None)
        return sum(v["log_prob"] for v in sites), tr.nodes["obs"]["value"].shape

    grid, grid_shape = log_density(False)
    own, own_shape = log_density(True)
    assert own.shape == (b.values.shape[0],)
    torch.testing.assert_close(own, grid, rtol=1e-5, atol=1e-4)
    assert grid_shape[-2] == b.times.numel() > own_shape[-2]


def test_student_t_likelihood_bounds_what_a_gross_error_costs():
    b = batch()
    z0 = torch.zeros(2, 3)

    def obs_log_prob(model, values):
        conditioned = pyro.poutine.condition(model.model, data={"z0": z0})
        tr = pyro.poutine.trace(conditioned).get_trace(b.times, values, b.mask)
        return tr.nodes["obs"]["fn"].log_prob(values).sum().detach()

    gross = b.values.clone()
    gross[0, 2, 1] += 100.0  # one mistyped value
    costs = {}
    for likelihood in ("normal", "student_t"):
        model = LatentODEModel(2, latent_dim=3, likelihood=likelihood)
        costs[likelihood] = float(obs_log_prob(model, b.values) - obs_log_prob(model, gross))
    assert costs["normal"] > 1e5  # quadratic in the error: 100² / (2 · 0.1²)
    assert 0 < costs["student_t"] < 100  # logarithmic in it
    model = LatentODEModel(2, latent_dim=3, likelihood="student_t")
    assert torch.all(model.tails() > 2)
    with pytest.raises(ValueError, match="likelihood"):
        LatentODEModel(2, likelihood="cauchy")


class _FixedEncoder(torch.nn.Module):
    """q(z0 | x) = Normal(0, scale) whatever the series."""

    def __init__(self, latent_dim: int, scale: float):
        super().__init__()
        self.latent_dim, self.scale = latent_dim, scale

    def forward(self, values, mask, times, static=None):
        loc = values.new_zeros(values.shape[0], self.latent_dim)
        return loc, torch.full_like(loc, self.scale)


class _FlatDecoder(torch.nn.Module):
    """Means that ignore the latent state: every draw explains the data equally."""

    def __init__(self, n_features: int):
        super().__init__()
        self.n_features = n_features

    def forward(self, z):
        return z.new_zeros(z.shape[:-1] + (self.n_features,))


def test_importance_weights_are_prior_over_proposal_when_the_data_are_uninformative():
    model = LatentODEModel(2, latent_dim=3)
    model.decoder = _FlatDecoder(2)
    b = batch()
    model.encoder = _FixedEncoder(3, 1.0)  # q is the prior: every weight equal
    torch.manual_seed(0)
    z0, ess = model.importance_z0(b.times, b.values, b.mask, n_samples=7, n_proposals=64)
    assert z0.shape == (7, 2, 3) and torch.allclose(ess, torch.full((2,), 64.0))
    # q three times wider than the prior: the resampled draws follow the prior (the
    # posterior, as the data say nothing), not q
    model.encoder = _FixedEncoder(3, 3.0)
    with torch.no_grad():
        z0, ess = model.importance_z0(b.times, b.values, b.mask, n_samples=4000, n_proposals=40000)
    # ESS / proposals = 1 / E_q[w^2] = (17 / 81) ** 1.5, about 1 / 10.4, in three dimensions
    assert torch.all(ess > 40000 / 12) and torch.all(ess < 40000 / 9)
    assert torch.allclose(z0.var(0), torch.ones(2, 3), atol=0.12)
    assert torch.allclose(z0.mean(0), torch.zeros(2, 3), atol=0.1)


def test_importance_draws_are_proposals_that_explain_the_series_better():
    torch.manual_seed(0)
    model = LatentODEModel(2, latent_dim=3)
    b = batch()

    def log_lik(z0):
        z, _ = model.solve(z0, b.times)
        return model._likelihood(model.decoder(z), b.mask, None).log_prob(b.values)

    with torch.no_grad():
        proposals = model.posterior_z0(b.times, b.values, b.mask, n_samples=2000)
        torch.manual_seed(1)
        z0, ess = model.importance_z0(b.times, b.values, b.mask, n_samples=500, n_proposals=500)
        torch.manual_seed(1)  # the same proposals, drawn again in the same order
        loc, scale = model.encoder(b.values, b.mask, b.times)
        again = loc + scale * torch.randn((500,) + loc.shape)
    # every draw is one of the proposals of its own series
    for s in range(2):
        gap = (z0[:, s, None] - again[None, :, s]).abs().amax(-1).min(1).values
        assert gap.max() < 1e-6
    assert torch.all(ess >= 1) and torch.all(ess <= 500)
    # the reweighted draws fit the observations better than q's draws on average
    assert torch.all(log_lik(z0).mean(0) > log_lik(proposals).mean(0))


@pytest.mark.parametrize("poisson", [False, True])
def test_importance_weights_do_not_depend_on_the_decoding_block(poisson):
    """Proposals decoded and scored a few at a time (to bound the widest tensor) get the same
    weights, hence the same resampled draws, as all at once."""
    model = LatentODEModel(2, latent_dim=3, poisson=poisson)
    b = batch()
    out = {}
    for block in (None, 3, 64, 100):
        torch.manual_seed(0)
        with torch.no_grad():
            out[block] = model.importance_z0(
                b.times, b.values, b.mask, n_samples=50, n_proposals=64, block=block
            )
    for block in (3, 64, 100):
        assert torch.equal(out[block][0], out[None][0])
        assert torch.allclose(out[block][1], out[None][1], rtol=1e-5)


def test_own_times_pick_each_series_observations_in_order():
    from latentode.models import _at_own_times

    b = batch()  # union grid 0.1, 0.2, 0.4, 0.7, 1.0; the series hold 3 and 2 of its times
    z = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1).expand(4, 2, 5, 1)
    own_z, own_values, own_mask = _at_own_times(z, b.values, b.mask)
    assert own_z.shape == (4, 2, 3, 1) and own_mask.shape == (2, 3, 2)
    assert own_z[0, 0, :, 0].tolist() == [0.0, 2.0, 4.0]  # grid positions 0, 2, 4
    assert own_z[0, 1, :2, 0].tolist() == [6.0, 8.0]  # positions 1, 3 of the second series
    assert not own_mask[1, 2].any()  # its padding is masked
    assert own_mask.sum() == b.mask.sum()
    assert torch.equal(own_values[own_mask], b.values[b.mask])


@pytest.mark.parametrize("poisson", [False, True])
def test_importance_weights_scored_at_own_times_equal_the_whole_grid(poisson):
    """The scores read each path at its series' own times only; on the whole union grid
    (masked) they are the same, so are the weights."""
    torch.manual_seed(0)
    model = LatentODEModel(2, latent_dim=3, poisson=poisson)
    b = batch()
    with torch.no_grad():
        torch.manual_seed(3)
        _, ess = model.importance_z0(b.times, b.values, b.mask, n_samples=5, n_proposals=50)
        torch.manual_seed(3)
        loc, scale = model.encoder(b.values, b.mask, b.times)
        z0, log_q = model._draw_q(loc, scale, 50)
        z, cumulative = model.solve(z0, b.times)
        log_w = torch.distributions.Normal(0.0, 1.0).log_prob(z0).sum(-1) - log_q
        log_w = log_w + model._likelihood(model.decoder(z), b.mask, None).log_prob(b.values)
        if poisson:
            from latentode.likelihoods import poisson_process_log_likelihood, window_integral

            integral = window_integral(cumulative, b.mask.any(-1))
            log_w = log_w + poisson_process_log_likelihood(model.intensity(z), b.mask, integral)
        weights = torch.softmax(log_w, dim=0)
    assert torch.allclose(ess, 1.0 / weights.square().sum(0), rtol=1e-4)


class _Square(torch.nn.Module):
    """dz/dt = z * z: from z0 > 0 the path blows up at t = 1 / z0."""

    def forward(self, t, z):
        return z * z


@pytest.mark.parametrize("poisson", [False, True])
def test_importance_resampling_survives_proposals_whose_paths_blow_up(poisson):
    """A proposal whose path diverges within the series' span makes a batched solve fail;
    the others are still solved and weighed, and the diverging ones get no weight."""
    model = LatentODEModel(2, latent_dim=3, poisson=poisson)
    if poisson:  # the intensity rides along with the latent field
        model.solver.func.func = _Square()
    else:
        model.solver.counted.func = _Square()
    model.encoder = _FixedEncoder(3, 0.6)  # a few proposals have a coordinate above 1
    b = batch()  # observed up to t = 1
    torch.manual_seed(0)
    with torch.no_grad():
        with pytest.raises(SolverError):  # all at once, the solve cannot pass the first blow-up
            model.solve(torch.randn(64, 2, 3) * 0.6, b.times)
        torch.manual_seed(0)
        with pytest.warns(RuntimeWarning, match="could not be solved"):
            z0, ess = model.importance_z0(b.times, b.values, b.mask, n_samples=300, n_proposals=64)
        torch.manual_seed(0)
        proposals = torch.randn(64, 2, 3) * 0.6
    diverging = (proposals * b.times[-1] >= 1).any(-1)  # (proposals, series)
    assert 0 < int(diverging.sum()) < 20
    assert torch.isfinite(z0).all() and torch.all(ess >= 1)
    # no draw is a diverging proposal of its series; every draw is a proposal of its series
    for s in range(2):
        gap = (z0[:, s, None] - proposals[None, :, s]).abs().amax(-1)  # (draws, proposals)
        nearest = gap.argmin(1)
        assert gap.min(1).values.max() < 1e-6
        assert not diverging[nearest, s].any()


class _Tangent(torch.nn.Module):
    """dz/dt = 4 (1 + z * z): every path blows up before t = pi / 4."""

    def forward(self, t, z):
        return 4 * (1 + z * z)


def test_importance_resampling_gives_up_when_most_paths_blow_up():
    model = LatentODEModel(2, latent_dim=3)
    model.solver.counted.func = _Tangent()
    b = batch()  # observed up to t = 1
    with torch.no_grad(), pytest.raises(SolverError, match="many importance proposals"):
        model.importance_z0(b.times, b.values, b.mask, n_samples=10, n_proposals=64)


def test_importance_resampling_skips_draws_the_solver_could_not_follow():
    model = LatentODEModel(2, latent_dim=3)
    b = batch()
    real_solve = model.solve

    def solve(z0, times):  # the first proposal blows up
        z, cumulative = real_solve(z0, times)
        z = z.clone()
        z[0] = float("nan")
        return z, cumulative

    model.solve = solve
    torch.manual_seed(0)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="could not be solved"):
        z0, _ = model.importance_z0(b.times, b.values, b.mask, n_samples=200, n_proposals=8)
    with torch.no_grad():
        torch.manual_seed(0)
        loc, scale = model.encoder(b.values, b.mask, b.times)
        first = loc + scale * torch.randn((8,) + loc.shape)[0]
    assert torch.isfinite(z0).all()
    assert not torch.isclose(z0, first.expand_as(z0)).all(-1).any()


def test_heteroscedastic_noise_starts_at_the_feature_scale_and_stays_bounded():
    from latentode.models import LOG_SPAN, ObservationNoise

    noise = ObservationNoise(3, 0.2, learn=True, latent_dim=4)
    z = torch.randn(5, 2, 7, 4)
    base = ObservationNoise(3, 0.2, learn=True)()
    # the state's network starts at zero: every state gets the feature's own SD
    torch.testing.assert_close(noise(z), base.expand(5, 2, 7, 3))
    with torch.no_grad():
        noise.state[-1].bias.copy_(torch.tensor([1e3, -1e3, 0.5]))
    sd = (noise(z) / base).detach()
    assert sd.shape == (5, 2, 7, 3)
    # squashed: at most exp(LOG_SPAN) either way, however far the network's output goes
    torch.testing.assert_close(
        sd[..., 0], torch.full_like(sd[..., 0], float(torch.exp(torch.tensor(LOG_SPAN))))
    )
    torch.testing.assert_close(
        sd[..., 1], torch.full_like(sd[..., 1], float(torch.exp(torch.tensor(-LOG_SPAN))))
    )
    assert 1.6 < float(sd[..., 2].mean()) < 1.7  # exp(3 tanh(0.5 / 3)) = 1.64
    with pytest.raises(ValueError, match="pass z"):
        noise()
    assert not ObservationNoise(3, 0.2, learn=True).heteroscedastic
    with pytest.raises(ValueError, match="obs_std=None"):
        ObservationNoise(3, 0.2, learn=False, latent_dim=4)


def test_heteroscedastic_noise_scores_and_draws_with_the_states_scale():
    torch.manual_seed(0)
    model = LatentODEModel(2, latent_dim=3, heteroscedastic=True).eval()
    with torch.no_grad():  # noise that grows with the first latent coordinate
        model.noise.state[0].weight.zero_()
        model.noise.state[0].weight[0, 0] = 1.0
        model.noise.state[0].bias.zero_()
        model.noise.state[-1].weight.zero_()
        model.noise.state[-1].weight[:, 0] = 1.0
    b = batch()
    z0 = torch.randn(2, 3)
    with torch.no_grad():
        z, _ = model.solve(z0, b.times)
        sd = model.noise(z)
    assert sd.shape == (2, b.times.numel(), 2) and sd.std() > 0  # it varies with the state
    conditioned = pyro.poutine.condition(model.model, data={"z0": z0})
    tr = pyro.poutine.trace(conditioned).get_trace(b.times, b.values, b.mask)
    tr.compute_log_prob()
    with torch.no_grad():
        loc = model.decode(z)
    expected = torch.distributions.Normal(loc, sd).log_prob(b.values.nan_to_num())
    expected = torch.where(b.mask, expected, 0.0).sum((-2, -1))
    torch.testing.assert_close(tr.nodes["obs"]["log_prob"], expected)
    # the generative mode draws around each draw's mean with its own state's scale
    draws = posterior_predictive(
        model, b.times, b.values, b.mask, b.times, n_samples=400, sites=("z", "mean", "obs")
    )
    with torch.no_grad():
        scale = model.noise(draws["z"])
    unit = (draws["obs"] - draws["mean"]) / scale
    assert float(scale.std()) > 0.05  # the scale differs between draws
    assert 0.85 < float(unit.std(0).min()) and float(unit.std(0).max()) < 1.15
    with pytest.raises(ValueError, match="noise_rank"):
        LatentODEModel(2, latent_dim=3, heteroscedastic=True, noise_rank=1)
