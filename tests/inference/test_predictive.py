import pytest
import torch

from latentode.datasets import collate, make_spirals
from latentode.inference import posterior_predictive
from latentode.models import LatentODEModel


@pytest.fixture(scope="module")
def batch():
    d = make_spirals(n_series=12, n_obs=15, random_state=1)
    return collate(d.train[:6], times_transform=lambda t: t / 5, values_transform=lambda v: v / 5)


def _draw(module, batch, query, n, sites):
    return posterior_predictive(
        module, batch.times, batch.values, batch.mask, query, n_samples=n, sites=sites
    )


def test_z0_draws_follow_the_guide(batch):
    torch.manual_seed(0)
    module = LatentODEModel(2, latent_dim=3)
    with torch.no_grad():
        loc, scale = module.encoder(batch.values, batch.mask, batch.times)
    query = torch.linspace(0.0, 1.0, 4)
    z0 = _draw(module, batch, query, 4000, ("z0",))["z0"]
    assert z0.shape == (4000, 6, 3)
    # standard error of the mean is scale / sqrt(4000) < 0.016 * scale
    assert torch.allclose(z0.mean(0), loc, atol=float(0.08 * scale.max()))
    assert torch.allclose(z0.std(0), scale, rtol=0.08)


def test_generated_sites_are_consistent(batch):
    torch.manual_seed(0)
    module = LatentODEModel(2, latent_dim=3, obs_std=0.3)
    query = torch.tensor([0.0, 0.4, 1.3, 2.0])  # past the observed window too
    d = _draw(module, batch, query, 500, ("z0", "z", "mean", "obs"))
    assert d["z"].shape == (500, 6, 4, 3) and d["obs"].shape == (500, 6, 4, 2)
    # z starts at z0 (query time 0 is the origin) and decodes to mean
    assert torch.allclose(d["z"][:, :, 0], d["z0"], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(module.decoder(d["z"]), d["mean"], atol=1e-6)
    # obs scatters around mean with the observation noise
    resid = d["obs"] - d["mean"]
    assert abs(float(resid.mean())) < 0.02
    assert float(resid.std()) == pytest.approx(0.3, rel=0.05)
    # the draws differ between samples: z0 really is drawn
    assert float(d["mean"].std(0).mean()) > 1e-3


def test_intensity_and_label_sites_need_their_parts(batch):
    torch.manual_seed(0)
    query = torch.linspace(0.0, 1.0, 3)
    plain = LatentODEModel(2, latent_dim=3)
    with pytest.raises(ValueError, match="intensity needs poisson=True"):
        _draw(plain, batch, query, 2, ("intensity",))
    with pytest.raises(ValueError, match="not predictive sites"):
        _draw(plain, batch, query, 2, ("z1",))
    rich = LatentODEModel(2, latent_dim=3, poisson=True, n_classes=3)
    d = _draw(rich, batch, query, 7, ("intensity", "label", "z"))
    assert d["intensity"].shape == (7, 6, 3, 2) and bool((d["intensity"] > 0).all())
    with torch.no_grad():
        assert torch.allclose(d["intensity"], rich.intensity(d["z"]))
    assert d["label"].shape == (7, 6) and set(d["label"].unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("n_proposals", [0, 16])
def test_sites_not_asked_for_are_not_drawn(batch, n_proposals):
    """Without ``obs`` (and ``label``) among the sites, no noise is drawn: the means are the
    same as when the noise is drawn too, and the random stream is left where the means'
    draws of ``z0`` leave it."""
    module = LatentODEModel(2, latent_dim=3, obs_std=0.3, n_classes=2)
    query = torch.linspace(0.0, 1.0, 5)
    after, means = {}, {}
    for sites in (("mean",), ("mean", "obs"), ("mean", "label")):
        torch.manual_seed(0)
        means[sites] = posterior_predictive(
            module,
            batch.times,
            batch.values,
            batch.mask,
            query,
            n_samples=40,
            sites=sites,
            n_proposals=n_proposals,
        )["mean"]
        after[sites] = torch.rand(1)
    assert torch.equal(means[("mean",)], means[("mean", "obs")])
    assert torch.equal(means[("mean",)], means[("mean", "label")])
    assert after[("mean",)] != after[("mean", "obs")]
    assert after[("mean",)] != after[("mean", "label")]


@pytest.mark.parametrize(
    "options",
    [{}, {"anchor": True}, {"anchor": "path"}, {"noise_rank": 1}, {"poisson": True}],
    ids=["plain", "anchor", "path", "noise_rank", "poisson"],
)
def test_draws_at_each_series_positions_equal_the_full_grid_picked(batch, options):
    """With ``query_index`` the model decodes each series at its own positions only; the
    draws equal those on the whole query grid, picked at the same positions."""
    module = LatentODEModel(2, latent_dim=3, **options)
    query = torch.linspace(0.0, 1.2, 9)
    positions = torch.tensor([[0, 3, 8], [1, 2, 2], [4, 5, 6], [8, 7, 0], [2, 2, 2], [0, 1, 2]])
    sites = ("z", "mean") + (("intensity",) if options.get("poisson") else ())
    out = {}
    for index in (None, positions):
        torch.manual_seed(0)
        out[index is None] = posterior_predictive(
            module,
            batch.times,
            batch.values,
            batch.mask,
            query,
            n_samples=5,
            sites=sites,
            n_proposals=8,
            query_index=index,
        )
    rows = torch.arange(6)[:, None]
    for site in sites:
        picked = out[True][site][:, rows, positions]
        assert out[False][site].shape == picked.shape == (5, 6, 3, picked.shape[-1])
        assert torch.allclose(out[False][site], picked, atol=1e-6), site
