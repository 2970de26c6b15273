import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from torch import nn

from latentode.likelihoods import (
    MaskedLowRankNormal,
    MaskedLowRankStudentT,
    conditional_low_rank,
    observation_window,
    poisson_process_log_likelihood,
    window_integral,
)
from latentode.nn import AugmentedDynamics
from latentode.solvers import ODESolver


class Const(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, z):
        return torch.full(z.shape[:-1] + (1,), self.value)


class Rotate(nn.Module):
    def forward(self, t, z):
        return torch.stack([-z[..., 1], z[..., 0]], dim=-1)


def test_constant_intensity_matches_closed_form():
    lam, n_obs = 2.5, 7
    times = torch.linspace(0.0, 3.0, 10)
    mask = torch.zeros(1, 10, 1, dtype=torch.bool)
    mask[0, [1, 2, 4, 5, 6, 8, 9], 0] = True  # window from t[1] to t[9]
    solver = ODESolver(AugmentedDynamics(Rotate(), Const(lam), 2), rtol=1e-8, atol=1e-9)
    y0 = torch.tensor([[1.0, 0.0, 0.0]])
    ys = solver(y0, times).movedim(0, -2)
    cumulative = ys[..., 2:]
    integral = window_integral(cumulative, mask.any(-1))
    ll = poisson_process_log_likelihood(torch.full((1, 10, 1), lam), mask, integral)
    window = (times[9] - times[1]).item()
    assert ll.item() == pytest.approx(n_obs * math.log(lam) - lam * window, rel=1e-5)


class SinIntensity(nn.Module):
    def forward(self, z):
        return (1.5 + z[..., :1]).exp()  # z0 = cos t: λ(t) = exp(1.5 + cos t)


def test_time_varying_intensity_matches_quadrature():
    times = torch.linspace(0.0, 4.0, 21, dtype=torch.float64)
    mask = torch.zeros(2, 21, 1, dtype=torch.bool)
    mask[0, [0, 3, 10, 20], 0] = True
    mask[1, [5, 6, 12], 0] = True
    solver = ODESolver(AugmentedDynamics(Rotate(), SinIntensity(), 2), rtol=1e-9, atol=1e-10)
    y0 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    ys = solver(y0, times).movedim(0, -2)
    z, cumulative = ys[..., :2], ys[..., 2:]
    intensity = SinIntensity()(z)
    ll = poisson_process_log_likelihood(intensity, mask, window_integral(cumulative, mask[..., 0]))

    t = times.numpy()
    for b, idx in enumerate(([0, 3, 10, 20], [5, 6, 12])):
        integral, _ = quad(lambda s: np.exp(1.5 + np.cos(s)), t[idx[0]], t[idx[-1]], epsabs=1e-12)
        expected = np.sum(1.5 + np.cos(t[idx])) - integral
        assert ll[b].item() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_observation_window_and_sample_dims():
    observed = torch.tensor([[False, True, True, False], [True, False, False, True]])
    first, last = observation_window(observed)
    assert first.tolist() == [1, 0] and last.tolist() == [2, 3]
    cumulative = torch.arange(4.0).view(1, 1, 4, 1).expand(3, 2, 4, 1)
    out = window_integral(cumulative, observed)
    assert out.shape == (3, 2, 1)
    assert out[:, 0, 0].tolist() == [1.0] * 3 and out[:, 1, 0].tolist() == [3.0] * 3


def test_masked_normal_with_one_scale_per_feature_matches_pyros_normal():
    import pyro.distributions as dist

    from latentode.likelihoods import masked_normal

    torch.manual_seed(0)
    loc = torch.randn(4, 6, 3, requires_grad=True)
    scale = (torch.rand(3) + 0.1).requires_grad_()
    value, mask = torch.randn(4, 6, 3), torch.rand(4, 6, 3) > 0.3
    fast = masked_normal(loc, scale, mask)
    plain = dist.Normal(loc, scale).mask(mask).to_event(2)
    assert fast.batch_shape == plain.batch_shape == (4,) and fast.event_shape == (6, 3)
    got, want = fast.log_prob(value), plain.log_prob(value)
    assert torch.allclose(got, want, atol=1e-5)
    g_fast = torch.autograd.grad(got.sum(), [loc, scale])
    g_plain = torch.autograd.grad(want.sum(), [loc, scale])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_fast, g_plain, strict=True))
    # expanded (as Pyro's plates may do), masked entries still contribute nothing
    wide = fast.expand((2, 4))
    assert wide.batch_shape == (2, 4)
    assert torch.allclose(wide.log_prob(value), want.expand(2, 4), atol=1e-5)
    assert fast.sample().shape == (4, 6, 3)


def test_weighted_masked_normal_scales_each_entry_and_ignores_masked_ones():
    import pyro.distributions as dist

    from latentode.likelihoods import masked_normal

    torch.manual_seed(1)
    loc, value = torch.randn(2, 3, 5, 4), torch.randn(3, 5, 4)
    scale, mask = torch.rand(4) + 0.2, torch.rand(3, 5, 4) > 0.4
    value[~mask] = 1e3  # what stands where nothing was observed does not count
    weight = torch.rand(3, 1, 4) * 3
    got = masked_normal(loc, scale, mask, weight).log_prob(value)
    entries = dist.Normal(loc, scale).log_prob(value)
    want = torch.where(mask, entries * weight, torch.zeros(())).sum((-1, -2))
    assert got.shape == (2, 3) and torch.allclose(got, want, atol=1e-5)
    ones = masked_normal(loc, scale, mask, torch.ones(3, 1, 4)).log_prob(value)
    assert torch.allclose(ones, masked_normal(loc, scale, mask).log_prob(value), atol=1e-6)
    assert masked_normal(loc, scale, mask, weight).expand((2, 3)).log_prob(value).shape == (2, 3)


def _low_rank_case(seed=0, n_features=5, rank=2):
    gen = torch.Generator().manual_seed(seed)
    shape = (3, 4, n_features)
    loc = torch.randn(shape, generator=gen, dtype=torch.float64)
    scale = torch.rand(n_features, generator=gen, dtype=torch.float64) + 0.3
    factor = torch.randn(n_features, rank, generator=gen, dtype=torch.float64)
    mask = torch.rand(shape, generator=gen) < 0.6
    mask[0, 0] = False  # a time with nothing observed
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    cov = torch.diag(scale**2) + factor @ factor.T
    return loc, scale, factor, mask, x, cov


def test_masked_low_rank_normal_is_the_marginal_of_the_observed_entries():
    loc, scale, factor, mask, x, cov = _low_rank_case()
    expected = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        for t in range(4):
            seen = mask[b, t]
            if seen.any():
                joint = torch.distributions.MultivariateNormal(loc[b, t][seen], cov[seen][:, seen])
                expected[b] += joint.log_prob(x[b, t][seen])
    d = MaskedLowRankNormal(loc, scale, factor, mask)
    assert d.batch_shape == (3,) and d.event_shape == (4, 5)
    torch.testing.assert_close(d.log_prob(x), expected)
    # draws of leading dims broadcast against the mask; samples have the joint covariance
    many = MaskedLowRankNormal(loc.expand(7, 3, 4, 5), scale, factor, mask)
    assert many.log_prob(x).shape == (7, 3)
    draws = MaskedLowRankNormal(loc[:1, :1], scale, factor, mask[:1, :1]).sample((20000,))
    empirical = torch.cov(draws.reshape(-1, 5).T)
    torch.testing.assert_close(empirical, cov, atol=0.15 * cov.abs().max().item(), rtol=0)


def test_masked_low_rank_student_t_is_the_multivariate_t_of_the_observed_entries():
    from scipy import stats

    loc, scale, factor, mask, x, cov = _low_rank_case(seed=2)
    x = x.clone()
    t, f = mask[0].nonzero()[0]
    x[0, t, f] += 40.0  # a gross error: the t's cost grows with its log, the Gaussian's square
    df = torch.tensor([4.5], dtype=torch.float64)
    expected = np.zeros(3)
    for b in range(3):
        for t in range(4):
            seen = mask[b, t].numpy()
            if seen.any():
                expected[b] += stats.multivariate_t(
                    loc[b, t].numpy()[seen], cov.numpy()[np.ix_(seen, seen)], df=4.5
                ).logpdf(x[b, t].numpy()[seen])
    d = MaskedLowRankStudentT(loc, scale, factor, df, mask)
    assert d.batch_shape == (3,) and d.event_shape == (4, 5)
    np.testing.assert_allclose(d.log_prob(x).numpy(), expected, rtol=1e-10)
    gauss = MaskedLowRankNormal(loc, scale, factor, mask)
    assert d.log_prob(x)[0] - gauss.log_prob(x)[0] > 100  # the outlier's cost is bounded
    # with many degrees of freedom it is the Gaussian
    wide = MaskedLowRankStudentT(loc, scale, factor, torch.tensor(1e8, dtype=torch.float64), mask)
    torch.testing.assert_close(wide.log_prob(x), gauss.log_prob(x), rtol=1e-5, atol=1e-5)
    # draws: covariance df / (df - 2) Σ, one heavy-tailed scale shared by a time's features
    df = torch.tensor([6.0], dtype=torch.float64)
    draws = MaskedLowRankStudentT(loc[:1, :1], scale, factor, df, mask[:1, :1]).sample((40000,))
    empirical = torch.cov(draws.reshape(-1, 5).T)
    torch.testing.assert_close(
        empirical, 1.5 * cov, atol=0.15 * 1.5 * cov.abs().max().item(), rtol=0
    )
    z = (draws.reshape(-1, 5) - loc[0, 0]) / cov.diagonal().sqrt()
    kurtosis = (z**4).mean(0) / (z**2).mean(0) ** 2
    assert (kurtosis > 4.0).all()  # a t with 6 degrees of freedom has 6, a Gaussian 3


def _conditioning_sets(mask):
    """Each (series, time, feature) of a mask (3, 4, 5) with the indices of the other
    features observed at that time: what the feature is conditioned on."""
    for b in range(3):
        for t in range(4):
            for d in range(5):
                given = mask[b, t].clone()
                given[d] = False
                yield b, t, d, given.nonzero().flatten()


def test_student_t_conditionals_are_the_multivariate_t_conditionals():
    loc, scale, factor, mask, x, cov = _low_rank_case(seed=3)
    nu = 5.0
    mean, sd, df = conditional_low_rank(
        loc, scale, factor, x, mask, df=torch.tensor([nu], dtype=torch.float64)
    )
    gauss_mean, gauss_sd = conditional_low_rank(loc, scale, factor, x, mask)
    torch.testing.assert_close(mean, gauss_mean)  # the location does not change
    for b, t, d, idx in _conditioning_sets(mask):
        k, dist2 = len(idx), 0.0
        if k:
            r = x[b, t, idx] - loc[b, t, idx]
            dist2 = r @ torch.linalg.solve(cov[idx][:, idx], r)
        factor_sq = (nu + dist2) / (nu + k)
        torch.testing.assert_close(sd[b, t, d], gauss_sd[b, t, d] * factor_sq**0.5)
        assert df[b, t, d].item() == nu + k


def test_conditionals_use_the_other_features_of_the_same_time_never_the_feature_itself():
    loc, scale, factor, mask, x, cov = _low_rank_case(seed=1)
    mean, sd = conditional_low_rank(loc, scale, factor, x, mask)
    for b, t, d, idx in _conditioning_sets(mask):
        expected_mean, expected_var = loc[b, t, d], cov[d, d]
        if len(idx):
            solve = torch.linalg.solve(cov[idx][:, idx], cov[idx, d])
            expected_mean = expected_mean + solve @ (x[b, t, idx] - loc[b, t, idx])
            expected_var = expected_var - cov[d, idx] @ solve
        torch.testing.assert_close(mean[b, t, d], expected_mean)
        torch.testing.assert_close(sd[b, t, d], expected_var.sqrt())
    # with no shared components: the means and the features' own scales
    mean0, sd0 = conditional_low_rank(loc, scale, torch.zeros(5, 1, dtype=torch.float64), x, mask)
    torch.testing.assert_close(mean0, loc)
    torch.testing.assert_close(sd0, scale.expand_as(loc))


@pytest.mark.parametrize("df", [None, 5.0])
def test_conditioning_is_winsorised_at_the_limit_and_exact_within_it(df):
    loc, scale, factor, mask, x, cov = _low_rank_case(seed=4)
    nu = None if df is None else torch.tensor([df], dtype=torch.float64)
    bound = 3.0 * cov.diagonal().sqrt()  # the limit's reach: 3 marginal scales per feature
    # within the limit everywhere: the same as exact conditioning
    inside = loc + (x - loc).clamp(-1.0, 1.0) * 0.9 * bound
    exact = conditional_low_rank(loc, scale, factor, inside, mask, df=nu)
    limited = conditional_low_rank(loc, scale, factor, inside, mask, df=nu, limit=3.0)
    for a, b in zip(exact, limited, strict=True):
        torch.testing.assert_close(a, b)
    # one gross value: the others condition on it as if it lay at the limit on its side
    b_, t_, f_ = mask.nonzero()[0].tolist()
    gross, at_limit = inside.clone(), inside.clone()
    gross[b_, t_, f_] = loc[b_, t_, f_] - 500 * bound[f_]
    at_limit[b_, t_, f_] = loc[b_, t_, f_] - bound[f_]
    limited = conditional_low_rank(loc, scale, factor, gross, mask, df=nu, limit=3.0)
    expected = conditional_low_rank(loc, scale, factor, at_limit, mask, df=nu)
    for a, b in zip(limited, expected, strict=True):
        torch.testing.assert_close(a, b)
    unlimited = conditional_low_rank(loc, scale, factor, gross, mask, df=nu)
    moved = (unlimited[0] - limited[0])[b_, t_].abs()
    others = torch.arange(5) != f_
    # without the limit the gross value drags the others; never the feature's own prediction
    assert moved[others].max() > 1.0 and moved[f_] < 1e-9
