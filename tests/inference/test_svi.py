import pytest
import torch

from latentode.datasets import make_spirals
from latentode.inference import TrainingConfig, kl_weight, svi_loss, train_svi
from latentode.models import LatentODEModel


def test_kl_weight_schedule():
    assert kl_weight(0, 0) == 1.0
    assert kl_weight(0, 4) == pytest.approx(0.2)
    assert kl_weight(3, 4) == pytest.approx(0.8)
    assert kl_weight(10, 4) == 1.0
    assert kl_weight(0, 0, 0.3) == pytest.approx(0.3)  # a beta-VAE's weight, no annealing
    assert kl_weight(0, 4, 0.5) == pytest.approx(0.1)
    assert kl_weight(10, 4, 0.5) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def batches():
    from latentode.datasets import collate

    d = make_spirals(n_series=48, n_obs=20, random_state=0)
    scale = lambda v: v / 5.0  # noqa: E731
    train = [
        collate(d.train[i : i + 8], times_transform=lambda t: t / 5, values_transform=scale)
        for i in range(0, 38, 8)
    ]
    val = [collate(d.test, times_transform=lambda t: t / 5, values_transform=scale)]
    return train, val


def test_training_lowers_the_loss_and_keeps_best_validation(batches):
    train, val = batches
    torch.manual_seed(0)
    model = LatentODEModel(2, latent_dim=3)
    before = sum(svi_loss(model, b).item() for b in train) / len(train)
    history = train_svi(
        model,
        lambda idx: train[int(idx[0]) // 8],
        40,
        TrainingConfig(max_epochs=12, batch_size=8, lr=0.02, kl_anneal_epochs=2),
        validation=val,
        generator=torch.Generator().manual_seed(0),
    )
    after = sum(svi_loss(model, b).item() for b in train) / len(train)
    assert len(history.loss) == 12 and len(history.val_loss) == 12
    assert history.loss[-1] < history.loss[0]
    assert after < 0.5 * before
    assert history.kl_weight[:3] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]
    assert history.best_epoch is not None and history.best_epoch >= 2
    assert history.val_loss[history.best_epoch] == min(history.val_loss[2:])
    assert all(n > 0 for n in history.nfe_forward)


def test_early_stopping_stops(batches):
    train, val = batches
    torch.manual_seed(0)
    model = LatentODEModel(2, latent_dim=3)
    history = train_svi(
        model,
        lambda idx: train[0],
        8,
        TrainingConfig(max_epochs=50, batch_size=8, lr=1e-9, patience=2),
        validation=val,
    )
    assert history.stopped_early and len(history.loss) < 50


def test_non_finite_loss_is_retried_then_reported(batches):
    train, _ = batches
    model = LatentODEModel(2, latent_dim=3)
    with torch.no_grad():
        model.decoder.net[0].weight.fill_(float("nan"))
    with pytest.warns(RuntimeWarning, match="retrying with learning rate") as record:
        with pytest.raises(FloatingPointError, match="after 3 retries"):
            config = TrainingConfig(max_epochs=1, batch_size=8, lr=0.01)
            train_svi(model, lambda idx: train[0], 8, config)
    assert len(record) == 3
    rates = [r.message.args[0].split("rate ")[-1] for r in record]
    assert rates == ["0.005.", "0.0025.", "0.00125."]


def test_snapshot_copies_state_dicts_like_deepcopy():
    import copy

    from latentode.inference.svi import _snapshot

    model = LatentODEModel(2, latent_dim=3)
    optim = torch.optim.Adam(model.parameters(), lr=0.1)
    sum(p.sum() for p in model.parameters()).backward()
    optim.step()
    for state in (model.state_dict(), optim.state_dict()):
        snap, deep = _snapshot(state), copy.deepcopy(state)
        assert type(snap) is type(deep) and snap.keys() == deep.keys()
        assert getattr(snap, "_metadata", None) == getattr(deep, "_metadata", None)
    before = copy.deepcopy(model.state_dict())
    snap = _snapshot(model.state_dict())
    opt_before = copy.deepcopy(optim.state_dict())
    opt_snap = _snapshot(optim.state_dict())
    sum(p.sum() for p in model.parameters()).backward()
    optim.step()  # parameters and moments change in place; the snapshots must not
    assert not torch.equal(model.noise.raw, before["noise.raw"])
    assert all(torch.equal(snap[k], before[k]) for k in before)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(opt_snap["state"][0][key], opt_before["state"][0][key])
    assert opt_snap["param_groups"] == opt_before["param_groups"]
    model.load_state_dict(snap)
    optim.load_state_dict(opt_snap)
    assert all(torch.equal(a, before[k]) for k, a in model.state_dict().items())


def _fit(train, val=None, *, seed=0, resume_from=None, **options):
    torch.manual_seed(seed)
    model = LatentODEModel(2, latent_dim=3)
    states = []
    history = train_svi(
        model,
        lambda idx: train[int(idx[0]) // 8],
        40,
        TrainingConfig(**{"max_epochs": 6, "batch_size": 8, "lr": 0.02, **options}),
        validation=val,
        generator=torch.Generator().manual_seed(seed),
        checkpoint=states.append,
        resume_from=resume_from,
    )
    return model, history, states


def test_weight_averaging_returns_the_mean_of_the_last_epochs(batches):
    train, _ = batches
    model, history, states = _fit(train, average_epochs=3)
    # states[e] is the training state after epoch e + 1; epochs 4, 5 and 6 are averaged
    last = [states[e]["model"] for e in (3, 4, 5)]
    assert history.averaged_epochs == 3
    for name, p in model.named_parameters():
        expected = sum(s[name] for s in last) / 3
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model.noise.raw, last[-1]["noise.raw"])  # not the last epoch's
    # the same training without averaging ends at the last epoch's parameters
    plain, plain_history, _ = _fit(train)
    assert plain_history.averaged_epochs == 0
    assert all(torch.equal(p, last[-1][n]) for n, p in plain.state_dict().items())
    assert plain_history.loss == history.loss  # averaging does not change the training path


def test_weight_averaging_takes_the_last_epochs_whatever_ends_the_run(batches, monkeypatch):
    from latentode.inference import svi

    train, _ = batches
    # a time budget that runs out after the fourth of six epochs: epochs 2, 3 and 4 averaged
    monkeypatch.setattr(svi, "_out_of_time", lambda *a: len(a[2].loss) >= 4)
    model, history, states = _fit(train, average_epochs=3, max_time=1.0)
    assert history.out_of_time and len(history.loss) == 4 and history.averaged_epochs == 3
    for name, p in model.named_parameters():
        expected = sum(states[e]["model"][name] for e in (1, 2, 3)) / 3
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
    # each checkpoint holds the window's parameters and no more
    assert [len(s["average"]["recent"]) for s in states] == [1, 2, 3, 3]
    # fewer epochs trained than the window: all of them
    monkeypatch.setattr(svi, "_out_of_time", lambda *a: len(a[2].loss) >= 2)
    model, history, states = _fit(train, average_epochs=3, max_time=1.0)
    assert len(history.loss) == 2 and history.averaged_epochs == 2
    for name, p in model.named_parameters():
        expected = (states[0]["model"][name] + states[1]["model"][name]) / 2
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)


def test_weight_averaging_resumes_exactly_from_a_checkpoint(batches):
    train, _ = batches
    model, _, states = _fit(train, average_epochs=3)
    # a fresh process: other initial weights, other random streams until the state is restored
    # after epoch 2 (fewer epochs kept than the window) and after epoch 4 (a full window,
    # which the last two epochs move on)
    for at in (1, 3):
        resumed, history, _ = _fit(train, seed=123, resume_from=states[at], average_epochs=3)
        assert history.averaged_epochs == 3
        pairs = zip(model.state_dict().items(), resumed.state_dict().values(), strict=True)
        for (name, a), b in pairs:
            assert torch.equal(a, b), name


def test_weight_averaging_yields_to_a_better_validated_epoch(batches, monkeypatch):
    from latentode.inference import svi

    train, val = batches
    scores = iter([5.0, 4.0, 3.0, 3.5, 3.6, 3.7])  # epoch 3 is the best; then the average
    monkeypatch.setattr(svi, "_validation_loss", lambda *a: next(scores, 9.0))
    model, history, states = _fit(train, val, average_epochs=3)
    assert history.best_epoch == 2 and history.averaged_epochs == 0
    assert all(torch.equal(p, states[2]["model"][n]) for n, p in model.state_dict().items())

    scores = iter([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 2.0])  # the average validates best: kept
    model, history, states = _fit(train, val, average_epochs=3)
    assert history.best_epoch == 2 and history.averaged_epochs == 3
    assert not torch.equal(model.noise.raw, states[2]["model"]["noise.raw"])


def test_averaging_from_the_best_epoch_takes_it_and_every_later_epoch(batches, monkeypatch):
    from latentode.inference import svi

    train, val = batches
    # the second epoch is best, then the third: the window restarts there and runs to the stop
    scores = iter([5.0, 4.0, 3.0, 3.5, 3.6, 3.7])
    monkeypatch.setattr(svi, "_validation_loss", lambda *a: next(scores))
    model, history, states = _fit(train, val, average_from_best=True, patience=3)
    assert history.best_epoch == 2 and history.stopped_early
    assert history.averaged_epochs == 4  # epochs 3 to 6 (indices 2 to 5)
    window = [states[e]["model"] for e in (2, 3, 4, 5)]
    for name, p in model.named_parameters():
        expected = sum(s[name] for s in window) / 4
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
    # kept although it is not validated against the best epoch (no seventh score drawn)
    assert next(scores, None) is None


def test_averaging_from_the_best_epoch_resumes_exactly_from_a_checkpoint(batches, monkeypatch):
    from latentode.inference import svi

    train, val = batches
    values = [5.0, 3.0, 4.0, 3.5, 3.6, 3.7]  # best after epoch 2; resumed after epoch 4
    scores = iter(values)
    monkeypatch.setattr(svi, "_validation_loss", lambda *a: next(scores))
    model, _, states = _fit(train, val, average_from_best=True)
    scores = iter(values[4:])
    resumed, history, _ = _fit(train, val, seed=123, resume_from=states[3], average_from_best=True)
    assert history.best_epoch == 1 and history.averaged_epochs == 5
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("options", "validated", "message"),
    [
        ({"average_from_best": True, "average_epochs": 2}, True, "set one of them"),
        ({"average_from_best": True}, False, "needs validation data"),
    ],
)
def test_averaging_from_the_best_epoch_needs_validation_and_one_window(
    batches, options, validated, message
):
    train, val = batches
    with pytest.raises(ValueError, match=message):
        _fit(train, val if validated else None, **options)


def test_observation_weights_enter_the_training_loss_but_not_the_elbo(batches):
    from latentode.inference.svi import per_series_elbo

    train, _ = batches
    model = LatentODEModel(2, latent_dim=3)
    batch = train[0]  # every (series, feature) pair observed 20 times
    assert torch.all(batch.mask.sum(1) == 20)

    def loss(b):
        torch.manual_seed(3)  # the same z0 draws each time
        return svi_loss(model, b).item()

    plain, w1, w2, w3 = (
        loss(b) for b in (batch, *(batch.weight_pairs(20.0 * k) for k in (1, 2, 3)))
    )
    assert w1 == pytest.approx(plain, rel=1e-6)  # weights of 1: the ELBO
    # the likelihood term scales with the weight, the KL term does not: linear in the weight
    assert w3 - w2 == pytest.approx(w2 - w1, rel=1e-4)
    assert abs(w2 - w1) > 1e-3 * abs(w1)
    torch.manual_seed(3)
    elbo = per_series_elbo(model, batch)
    torch.manual_seed(3)
    assert torch.equal(per_series_elbo(model, batch.weight_pairs(60.0)), elbo)  # scoring: ELBO


def test_the_two_elbo_estimators_agree_in_expectation(batches):
    train, _ = batches
    model = LatentODEModel(2, latent_dim=3)
    batch = train[0]

    def estimate(elbo):
        torch.manual_seed(0)
        with torch.no_grad():
            return svi_loss(model, batch, num_particles=400, elbo=elbo).item()

    closed, sampled = estimate("analytic_kl"), estimate("sampled_kl")
    assert closed != sampled  # different estimators ...
    assert sampled == pytest.approx(closed, rel=0.02)  # ... of the same objective
    with pytest.raises(ValueError, match="elbo must be one of"):
        svi_loss(model, batch, elbo="iwae")


def test_the_estimator_passes_its_elbo_choice(monkeypatch):
    from latentode import LatentODE
    from latentode.inference import svi

    seen = []
    original = svi.svi_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["elbo"])
        return original(*args, **kwargs)

    monkeypatch.setattr(svi, "svi_loss", spy)
    data = make_spirals(n_series=20, n_obs=8, random_state=0).train
    LatentODE(max_epochs=1, latent_dim=2, elbo="sampled_kl", random_state=0).fit(data)
    assert seen and set(seen) == {"sampled_kl"}
    with pytest.raises(ValueError, match="elbo"):
        LatentODE(elbo="iwae").fit(data)


def test_max_time_stops_before_an_epoch_that_would_overrun(batches, monkeypatch):
    import types

    from latentode.inference import svi

    train, _ = batches
    clock = [0.0]

    def make_batch(idx):  # each epoch (one batch) takes 10 s of a fake clock
        clock[0] += 10.0
        return train[0]

    monkeypatch.setattr(svi, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def run(max_time):
        torch.manual_seed(0)
        config = TrainingConfig(max_epochs=6, batch_size=8, lr=0.01, max_time=max_time)
        return train_svi(LatentODEModel(2, latent_dim=3), make_batch, 8, config)

    # after two epochs (20 s), a third would end at 30 s: past 25
    history = run(25.0)
    assert len(history.loss) == 2 and history.out_of_time
    history = run(30.0)  # ends exactly at the budget: allowed
    assert len(history.loss) == 3 and history.out_of_time
    history = run(1.0)  # the first epoch always runs
    assert len(history.loss) == 1 and history.out_of_time
    history = run(None)
    assert len(history.loss) == 6 and not history.out_of_time
