"""Speed, memory and accuracy at a fixed budget: one command, JSON and a short table.

Configurations (each run in a fresh process, one per backend):

- ``spiral``: the configuration of torchdiffeq's spiral Latent ODE demo — 1000 training series
  of 100 points, full batch (one iteration per epoch), latent 4, dynamics MLP of width 20,
  recognition network 25 (the estimator's GRU, or with ``--spiral-encoder rnn`` a plain tanh
  RNN like the demo's), decoder 20, observation noise fixed at the data's, Adam at 0.01
  without gradient clipping, dopri5 at the demo's rtol 1e-7 / atol 1e-9 (or with
  ``--spiral-tolerances library`` at the estimator's defaults, 1e-3 / 1e-4), no adjoint. Reports
  seconds per iteration (median), iterations and series per second, NFE per iteration, peak
  memory, and the extrapolation RMSE (100 steps after the window, 200 held-out spirals — 250
  with the demo's data — against the noise-free spirals) after the budget.
- ``spiral_reference``: the demo's own protocol and networks re-implemented in plain PyTorch
  with ``torchdiffeq.odeint`` (see :func:`spiral_reference`), on the same data and budget, so
  that the speed-up and the extrapolation error are measured side by side.
  ``--spiral-data demo`` runs both spiral configurations on the demo's own data (see
  :func:`demo_spirals`) instead of :func:`latentode.datasets.make_spirals`'.
- ``periodic``: Rubanova et al.'s toy set — 1000 series, 50 of 100 points observed, latent 10,
  ODE-RNN encoder, batch 50; seconds per epoch and the interpolation MSE (all 100 points of
  held-out series) after the budget. With ``--periodic-eval-every N`` also the time to
  accuracy: the test MSE every N epochs and the training time at which it first reaches the
  reference code's 0.0037. ``--periodic-encoder-solver euler`` steps the ODE-RNN encoder
  with Euler as Rubanova et al.'s code does (default: the library's RK4).
- ``spiral_regularised``: the spiral configuration with the kinetic-energy and Jacobian
  penalties (``--regularise``, both weights), to compare NFE and error at the same budget.
- ``physionet``: PhysioNet 2012 set A (``--physionet-path``), GRU encoder, latent 20, batch 50;
  seconds per epoch and series per second.

With ``spiral``, the solver's overhead per function evaluation is measured too (see
:func:`eval_overhead`). ``--backends native torchdiffeq`` measures the native solver against
torchdiffeq on the same model and data. The JSON records each configuration, the library
versions and the device. For reference, the public demo itself was recorded at 0.58 s per
iteration (median over 300) with a 560 MiB peak on 2 CPU cores; run as published on the
machine of the figures in the documentation (torch 2.13) it takes 0.13–0.16 s.

    python benchmarks/suite.py --help
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_worker, versions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: dopri5 tolerances (rtol, atol) of the spiral configurations: the demo's (torchdiffeq's
#: defaults) or the library's defaults
SPIRAL_TOLERANCES = {"demo": (1e-7, 1e-9), "library": (1e-3, 1e-4)}
REFERENCE_DEMO_SECONDS_PER_ITERATION = 0.58  # torchdiffeq's spiral demo, 2 CPU cores
REFERENCE_PERIODIC_MSE = 0.0037  # Rubanova et al.'s code on the periodic set, 100 epochs
REFERENCE_PERIODIC_SECONDS = 20 * 60  # ... which took about 20 minutes on 2 CPU cores


def _summary(model, fit_seconds: float, n_train: int, iterations_per_epoch: int) -> dict:
    import torch

    from latentode.profiling import peak_rss_mib

    h = model.history_
    per_epoch = statistics.median(h.seconds[1:] if len(h.seconds) > 1 else h.seconds)
    tail = max(1, len(h.nfe_forward) // 10)
    return {
        "epochs": len(h.loss),
        "fit_seconds": fit_seconds,
        "seconds_per_epoch": per_epoch,
        "seconds_per_iteration": per_epoch / iterations_per_epoch,
        "iterations_per_second": iterations_per_epoch / per_epoch,
        "series_per_second": n_train / per_epoch,
        "nfe_forward_per_iteration": statistics.mean(h.nfe_forward) / iterations_per_epoch,
        "nfe_backward_per_iteration": statistics.mean(h.nfe_backward) / iterations_per_epoch,
        # the end of training, where the dynamics are stiffest: the last tenth of the epochs
        "nfe_forward_per_iteration_last_tenth": statistics.mean(h.nfe_forward[-tail:])
        / iterations_per_epoch,
        "final_loss": h.loss[-1],
        "peak_rss_mib": peak_rss_mib(),
        "device": str(model.device_),
        "cuda_peak_mib": (
            torch.cuda.max_memory_allocated(model.device_) / 2**20
            if model.device_.type == "cuda"
            else None
        ),
    }


def demo_spirals(seed: int, *, n_train: int = 1000, n_test: int = 250):
    """The data of torchdiffeq's spiral demo, generated afresh with NumPy's ``seed``.

    As the demo builds them: two curves sampled at 500 equally spaced times ``t`` over
    ``[0, 6 pi]`` — counter-clockwise ``r = 0.3 t`` around ``(5, 0)`` and clockwise
    ``r = 15 / (6 pi + 1 - t)`` around ``(-5, 0)`` — and for each series a random direction,
    a start index drawn uniformly from ``[100, 400)`` and 100 consecutive points with Gaussian
    noise of standard deviation 0.3, every series on the common times ``t[:100]`` (0 to 3.74).
    The held-out series start before index 300 so that the 100 points after their window exist
    on the curve: those noise-free points are the extrapolation targets.

    Returns
    -------
    types.SimpleNamespace
        With the fields of :class:`latentode.datasets.SpiralData` that the suite reads:
        ``train``, ``test``, ``times``, ``test_extrapolation_times``,
        ``test_extrapolation_truth``, ``noise_std``.
    """
    import types

    import numpy as np

    from latentode.datasets import from_arrays

    rng = np.random.default_rng(seed)
    n_total, n_obs, noise_std, stop = 500, 100, 0.3, 6 * np.pi
    t = np.linspace(0.0, stop, n_total)
    angle = stop + 1.0 - t
    clockwise = np.stack([15.0 / angle * np.cos(angle) - 5.0, 15.0 / angle * np.sin(angle)], -1)
    counter = np.stack([0.3 * t * np.cos(t) + 5.0, 0.3 * t * np.sin(t)], -1)
    # NaN past the curves' ends: only the held-out series read what follows their window
    clockwise, counter = (
        np.concatenate([c, np.full((n_obs, 2), np.nan)]) for c in (clockwise, counter)
    )

    def draw(n, last_start):
        starts = rng.integers(n_obs, last_start, size=n)
        curves = [counter if c else clockwise for c in rng.random(n) > 0.5]
        pieces = np.stack([c[s : s + 2 * n_obs] for c, s in zip(curves, starts, strict=True)])
        noisy = pieces[:, :n_obs] + rng.normal(scale=noise_std, size=(n, n_obs, 2))
        return from_arrays([(t[:n_obs], v) for v in noisy]), pieces[:, n_obs:]

    train, _ = draw(n_train, n_total - n_obs)
    test, truth = draw(n_test, n_total - 2 * n_obs + 1)
    return types.SimpleNamespace(
        train=train,
        test=test,
        times=t[:n_obs],
        test_extrapolation_times=t[n_obs : 2 * n_obs],
        test_extrapolation_truth=truth,
        noise_std=noise_std,
    )


def _spiral_data(data_name: str, seed: int):
    if data_name == "demo":
        return demo_spirals(seed)
    from latentode.datasets import make_spirals

    return make_spirals(n_series=1250, n_obs=100, test_size=0.2, random_state=seed)


def spiral(
    backend: str,
    budget: int,
    device: str,
    seed: int,
    regularise: float = 0.0,
    precision: str = "32",
    data_name: str = "chen",
    encoder: str = "gru",
    tolerances: str = "demo",
) -> dict:
    import numpy as np

    from latentode import LatentODE

    data = _spiral_data(data_name, seed)
    # the demo's tolerances, or the library's defaults
    rtol, atol = SPIRAL_TOLERANCES[tolerances]
    # the demo's model and training: noise fixed at the data's, Adam at 0.01, no clipping
    model = LatentODE(
        latent_dim=4,
        ode_hidden_dim=20,
        ode_layers=3,
        encoder=encoder,
        encoder_hidden_dim=25,
        decoder_hidden_dim=20,
        obs_std=data.noise_std,
        rtol=rtol,
        atol=atol,
        batch_size=len(data.train),
        max_epochs=budget,
        validation_fraction=0.0,  # every series trains, as in the peers' runs
        lr=0.01,
        lr_decay=1.0,
        clip_norm=None,
        max_nfe=None,
        kinetic_weight=regularise,
        jacobian_weight=regularise,
        solver_backend=backend,
        precision=precision,
        device=device,
        random_state=seed,
    )
    start = time.perf_counter()
    model.fit(data.train)
    out = _summary(model, time.perf_counter() - start, len(data.train), 1)
    pred = model.predict(data.test, times=data.test_extrapolation_times).values
    out["extrapolation_rmse"] = float(np.sqrt(np.mean((pred - data.test_extrapolation_truth) ** 2)))
    return out


def spiral_reference(budget: int, device: str, seed: int, data_name: str = "chen") -> dict:
    """The reference demo's training protocol, re-implemented in plain PyTorch + torchdiffeq.

    The same data as ``spiral`` (all 100 points of each series), the demo's networks — a
    recognition RNN cell ``h = tanh(W [x, h])`` of width 25 run backwards in time, a dynamics
    MLP 4-20-20-4 with ELU, a decoder 4-20-2 with ReLU — and its loss: the Gaussian
    log-likelihood with the noise fixed at the data's standard deviation plus the analytic KL
    of ``q(z0)`` to ``N(0, I)``, Adam at 0.01, full batch, ``torchdiffeq.odeint`` dopri5 at its
    default tolerances (rtol 1e-7, atol 1e-9). It gives the demo's speed and accuracy on this
    machine, side by side with the library's, at the same number of iterations; the
    extrapolation RMSE is computed exactly as for ``spiral`` (posterior mean of 32 draws).
    """
    import math

    import numpy as np
    import torch
    from torch import nn
    from torchdiffeq import odeint

    from latentode.profiling import peak_rss_mib

    torch.manual_seed(seed)
    data = _spiral_data(data_name, seed)
    dev = torch.device(device)
    train = torch.tensor(np.stack([s.values for s in data.train]), dtype=torch.float32, device=dev)
    test = torch.tensor(np.stack([s.values for s in data.test]), dtype=torch.float32, device=dev)
    t = torch.tensor(data.times, dtype=torch.float32, device=dev)
    latent, obs_dim = 4, 2
    cell = nn.Linear(obs_dim + 25, 25).to(dev)
    head = nn.Linear(25, 2 * latent).to(dev)
    dynamics = nn.Sequential(
        nn.Linear(latent, 20), nn.ELU(), nn.Linear(20, 20), nn.ELU(), nn.Linear(20, latent)
    ).to(dev)
    decoder = nn.Sequential(nn.Linear(latent, 20), nn.ReLU(), nn.Linear(20, obs_dim)).to(dev)
    nfe = [0]

    def field(_t, z):
        nfe[0] += 1
        return dynamics(z)

    def encode(x):
        h = x.new_zeros(x.shape[0], 25)
        for i in reversed(range(x.shape[1])):
            h = torch.tanh(cell(torch.cat([x[:, i], h], dim=-1)))
        out = head(h)
        return out[:, :latent], out[:, latent:]

    params = [p for m in (cell, head, dynamics, decoder) for p in m.parameters()]
    optimiser = torch.optim.Adam(params, lr=0.01)
    log_var = 2 * math.log(data.noise_std)
    seconds, nfe_forward = [], []
    start_fit = time.perf_counter()
    for _ in range(budget):
        start = time.perf_counter()
        nfe[0] = 0
        optimiser.zero_grad()
        mean, logvar = encode(train)
        z0 = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        pred = decoder(odeint(field, z0, t).permute(1, 0, 2))
        log_px = -0.5 * (math.log(2 * math.pi) + log_var + (train - pred) ** 2 / math.exp(log_var))
        kl = 0.5 * (mean**2 + logvar.exp() - logvar - 1).sum(-1)
        loss = (-log_px.sum((1, 2)) + kl).mean()
        nfe_forward.append(nfe[0])
        loss.backward()
        optimiser.step()
        seconds.append(time.perf_counter() - start)
    fit_seconds = time.perf_counter() - start_fit
    with torch.no_grad():
        mean, logvar = encode(test)
        grid = torch.tensor(
            np.concatenate([data.times, data.test_extrapolation_times]),
            dtype=torch.float32,
            device=dev,
        )
        draws = mean + torch.randn((32,) + mean.shape, device=dev) * torch.exp(0.5 * logvar)
        pred = decoder(odeint(field, draws, grid)).mean(1)  # (time, series, 2)
        extrap = pred[len(data.times) :].permute(1, 0, 2).cpu().numpy()
    per_iteration = statistics.median(seconds[1:])
    return {
        "epochs": budget,
        "fit_seconds": fit_seconds,
        "seconds_per_epoch": per_iteration,
        "seconds_per_iteration": per_iteration,
        "iterations_per_second": 1 / per_iteration,
        "series_per_second": len(data.train) / per_iteration,
        "nfe_forward_per_iteration": statistics.mean(nfe_forward),
        "nfe_backward_per_iteration": 0.0,
        "final_loss": loss.item(),
        "nfe_forward_per_iteration_last_tenth": statistics.mean(
            nfe_forward[-max(1, budget // 10) :]
        ),
        "peak_rss_mib": peak_rss_mib(),
        "device": str(dev),
        "cuda_peak_mib": None,
        "extrapolation_rmse": float(
            np.sqrt(np.mean((extrap - data.test_extrapolation_truth) ** 2))
        ),
    }


def periodic(
    backend: str,
    budget: int,
    device: str,
    seed: int,
    eval_every: int = 0,
    encoder_solver: str = "rk4",
) -> dict:
    """The periodic configuration; with ``eval_every``, also its time to accuracy.

    Time to accuracy: training runs in chunks of ``eval_every`` epochs, each resuming the
    previous one's checkpoint (a resumed fit continues exactly where it stopped), and the
    held-out interpolation MSE is computed between chunks; only the time spent inside ``fit``
    is counted. The curve and the first time at which the MSE is at or below the reference
    code's 100-epoch figure (0.0037) are recorded.
    """
    import tempfile

    from latentode import LatentODE
    from latentode.datasets import make_periodic
    from latentode.metrics import masked_mse

    data = make_periodic(n_series=1000, n_obs=50, noise_std=0.01, random_state=seed)
    model = LatentODE(
        encoder="odernn",
        encoder_solver=encoder_solver,
        latent_dim=10,
        batch_size=50,
        max_epochs=budget,
        validation_fraction=0.0,  # every series trains, as in the peers' runs
        lr=0.01,
        solver_backend=backend,
        device=device,
        random_state=seed,
    )

    def test_mse():
        pred = model.predict(data.test, times=data.times).values
        return masked_mse(data.test_values, pred)

    curve, fit_seconds = [], 0.0
    if not eval_every:  # one plain fit: no checkpoints in the timed path
        start = time.perf_counter()
        model.fit(data.train)
        fit_seconds = time.perf_counter() - start
    else:
        with tempfile.TemporaryDirectory() as folder:
            stops = list(range(eval_every, budget + 1, eval_every))
            if not stops or stops[-1] != budget:
                stops.append(budget)
            for epochs in stops:  # a resumed fit's history holds every epoch so far
                model.set_params(max_epochs=epochs)
                start = time.perf_counter()
                model.fit(data.train, checkpoint=Path(folder) / "fit.pt", resume=True)
                fit_seconds += time.perf_counter() - start
                curve.append({"epoch": epochs, "fit_seconds": fit_seconds, "mse": test_mse()})
    out = _summary(model, fit_seconds, len(data.train), -(-len(data.train) // 50))
    out["interpolation_mse"] = curve[-1]["mse"] if curve else test_mse()
    if eval_every:
        reached = [c for c in curve if c["mse"] <= REFERENCE_PERIODIC_MSE]
        out["mse_curve"] = curve
        out["time_to_accuracy"] = {
            "target_mse": REFERENCE_PERIODIC_MSE,
            "seconds": reached[0]["fit_seconds"] if reached else None,
            "epochs": reached[0]["epoch"] if reached else None,
            "reference_seconds": REFERENCE_PERIODIC_SECONDS,
        }
    return out


def physionet(backend: str, budget: int, device: str, seed: int, path: str) -> dict:
    import warnings

    from latentode import LatentODE
    from latentode.datasets import load_physionet2012

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the three stays without time series
        icu = load_physionet2012(path, quantization=0.1)
    train = icu.data[: int(0.8 * len(icu.data))]
    model = LatentODE(
        latent_dim=20,
        batch_size=50,
        max_epochs=budget,
        validation_fraction=0.0,  # every series trains, as in the peers' runs
        lr=0.01,
        solver_backend=backend,
        device=device,
        random_state=seed,
    )
    start = time.perf_counter()
    model.fit(train)
    return _summary(model, time.perf_counter() - start, len(train), -(-len(train) // 50))


def eval_overhead(backend: str, repeats: int = 20) -> dict:
    """Solver overhead per function evaluation on the spiral model's dynamics.

    One solve + backward of the dynamics (latent 4, width 20, 1000 series, 100 outputs,
    rtol 1e-7) is timed, and so is one bare evaluation + backward of the same MLP on the
    same batch; the overhead per evaluation is ``(solve time - NFE * bare time) / NFE``:
    what the solver loop adds around the network's own arithmetic.
    """
    import torch

    from latentode.nn import ODEFunc
    from latentode.solvers import ODESolver

    torch.manual_seed(0)
    func = ODEFunc(4, 20, n_layers=3)
    z0 = torch.randn(1000, 4)
    t = torch.linspace(0, 5, 100)
    weight = torch.randn(100, 1000, 4)
    solver = ODESolver(func, rtol=1e-7, atol=1e-9, backend=backend)

    def timed(fn):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def solve():
        solver.reset_nfe()
        (solver(z0.clone().requires_grad_(True), t) * weight).sum().backward()

    def bare():
        (func(t[0], z0.clone().requires_grad_(True)) * weight[0]).sum().backward()

    solve_s, bare_s = timed(solve), timed(bare)
    nfe = solver.nfe["forward"] + solver.nfe["backward"]
    return {
        "backend": backend,
        "nfe": nfe,
        "solve_seconds": solve_s,
        "bare_eval_us": 1e6 * bare_s,
        "per_eval_us": 1e6 * solve_s / nfe,
        "overhead_per_eval_us": 1e6 * (solve_s - nfe * bare_s) / nfe,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["spiral", "periodic"],
        choices=["spiral", "spiral_reference", "spiral_regularised", "periodic", "physionet"],
    )
    parser.add_argument(
        "--regularise",
        type=float,
        default=0.01,
        help="kinetic and Jacobian weights of spiral_regularised",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["native", "torchdiffeq"],
        choices=["native", "torchdiffeq"],
    )
    parser.add_argument("--spiral-iterations", type=int, default=100)
    parser.add_argument(
        "--spiral-data",
        default="chen",
        choices=["chen", "demo"],
        help="the spiral configurations' data: make_spirals' (Chen et al.'s "
        "geometry, noise 0.1, 100 points over 5 time units) or the "
        "public demo's own (see demo_spirals)",
    )
    parser.add_argument(
        "--spiral-encoder",
        default="gru",
        choices=["gru", "rnn"],
        help="the library's recognition network in the spiral configurations "
        "(the demo's is a plain tanh RNN of width 25)",
    )
    parser.add_argument(
        "--spiral-tolerances",
        default="demo",
        choices=list(SPIRAL_TOLERANCES),
        help="dopri5 tolerances of the library's spiral configurations: the "
        "demo's (rtol 1e-7, atol 1e-9) or the library's defaults "
        "(rtol 1e-3, atol 1e-4); the reference protocol always uses "
        "the demo's",
    )
    parser.add_argument("--periodic-epochs", type=int, default=5)
    parser.add_argument(
        "--periodic-eval-every",
        type=int,
        default=0,
        help="score the periodic model every N epochs (time to accuracy)",
    )
    parser.add_argument(
        "--periodic-encoder-solver",
        default="rk4",
        choices=["rk4", "euler"],
        help="scheme of the periodic model's ODE-RNN encoder between observations",
    )
    parser.add_argument("--physionet-epochs", type=int, default=2)
    parser.add_argument("--physionet-path", help="folder with set-a.tar.gz")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        default="32",
        choices=["32", "bf16-mixed"],
        help="precision of the spiral model's networks",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "suite.json"))
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        config, backend = args.worker
        if config == "overhead":
            res = eval_overhead(backend)
        elif config == "spiral":
            res = spiral(
                backend,
                args.spiral_iterations,
                args.device,
                args.seed,
                precision=args.precision,
                data_name=args.spiral_data,
                encoder=args.spiral_encoder,
                tolerances=args.spiral_tolerances,
            )
        elif config == "spiral_reference":
            res = spiral_reference(args.spiral_iterations, args.device, args.seed, args.spiral_data)
        elif config == "spiral_regularised":
            res = spiral(
                backend,
                args.spiral_iterations,
                args.device,
                args.seed,
                regularise=args.regularise,
                data_name=args.spiral_data,
                encoder=args.spiral_encoder,
                tolerances=args.spiral_tolerances,
            )
        elif config == "periodic":
            res = periodic(
                backend,
                args.periodic_epochs,
                args.device,
                args.seed,
                args.periodic_eval_every,
                args.periodic_encoder_solver,
            )
        else:
            res = physionet(
                backend, args.physionet_epochs, args.device, args.seed, args.physionet_path
            )
        print(json.dumps(res))
        return None
    if "physionet" in args.configs and not args.physionet_path:
        parser.error("the physionet configuration needs --physionet-path")

    flags = [
        f"--spiral-iterations={args.spiral_iterations}",
        f"--periodic-epochs={args.periodic_epochs}",
        f"--periodic-eval-every={args.periodic_eval_every}",
        f"--periodic-encoder-solver={args.periodic_encoder_solver}",
        f"--physionet-epochs={args.physionet_epochs}",
        f"--device={args.device}",
        f"--threads={args.threads}",
        f"--seed={args.seed}",
        f"--regularise={args.regularise}",
        f"--precision={args.precision}",
        f"--spiral-data={args.spiral_data}",
        f"--spiral-encoder={args.spiral_encoder}",
        f"--spiral-tolerances={args.spiral_tolerances}",
    ]
    if args.physionet_path:
        flags.append(f"--physionet-path={args.physionet_path}")
    results = []
    print(
        f"{'config':9} {'backend':12} {'s/iter':>8} {'it/s':>7} {'series/s':>9} "
        f"{'NFE f/b per it':>15} {'peak MiB':>9}  accuracy"
    )
    for config in args.configs:
        # the reference protocol is plain torchdiffeq: one run, whatever the backends
        for backend in ["reference"] if config == "spiral_reference" else args.backends:
            r = run_worker(__file__, [config, backend, *flags])
            r.update(config=config, backend=backend)
            results.append(r)
            acc = {k: v for k, v in r.items() if k.endswith(("rmse", "mse"))}
            print(
                f"{config:9} {backend:12} {r['seconds_per_iteration']:>8.4f} "
                f"{r['iterations_per_second']:>7.2f} {r['series_per_second']:>9.0f} "
                f"{r['nfe_forward_per_iteration']:>7.0f}/{r['nfe_backward_per_iteration']:<7.0f}"
                f" {r['peak_rss_mib']:>9.0f}  " + " ".join(f"{k} {v:.4g}" for k, v in acc.items()),
                flush=True,
            )
    for r in results:
        if "time_to_accuracy" in r:
            tta = r["time_to_accuracy"]
            when = (
                f"after {tta['epochs']} epochs, {tta['seconds']:.0f} s of training"
                if tta["seconds"] is not None
                else "not within the budget"
            )
            print(
                f"{r['config']} {r['backend']}: test MSE <= {tta['target_mse']} {when} "
                f"(reference: about {tta['reference_seconds'] / 60:.0f} min)"
            )
    overhead = {}
    if "spiral" in args.configs:
        for backend in args.backends:
            o = run_worker(__file__, ["overhead", backend, *flags])
            overhead[backend] = o
            print(
                f"overhead {backend:12} {o['per_eval_us']:.0f} us per evaluation, of which "
                f"{o['overhead_per_eval_us']:.0f} us around the MLP's own "
                f"{o['bare_eval_us']:.0f} us (NFE {o['nfe']})",
                flush=True,
            )
    speedups = {}
    for config in args.configs:
        rows = {r["backend"]: r for r in results if r["config"] == config}
        if {"native", "torchdiffeq"} <= rows.keys():
            speedups[config] = (
                rows["torchdiffeq"]["seconds_per_iteration"]
                / rows["native"]["seconds_per_iteration"]
            )
            print(f"{config}: native is {speedups[config]:.2f}x torchdiffeq per iteration")
        if config == "spiral" and "native" in rows:
            ratio = REFERENCE_DEMO_SECONDS_PER_ITERATION / rows["native"]["seconds_per_iteration"]
            speedups["spiral_vs_reference_demo"] = ratio
            print(f"spiral: native is {ratio:.2f}x the reference demo's 0.58 s per iteration")
    reference = [r for r in results if r["config"] == "spiral_reference"]
    for r in results:
        if reference and r["config"] == "spiral" and r["backend"] == "native":
            ref = reference[0]
            speedups["spiral_vs_reference_measured"] = (
                ref["seconds_per_iteration"] / r["seconds_per_iteration"]
            )
            print(
                f"spiral: native is {speedups['spiral_vs_reference_measured']:.2f}x the "
                f"reference protocol measured here; extrapolation RMSE "
                f"{r['extrapolation_rmse']:.3f} against {ref['extrapolation_rmse']:.3f} after "
                f"{args.spiral_iterations} iterations each"
            )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "config": {
            k: v for k, v in vars(args).items() if k not in ("output", "worker", "physionet_path")
        },
        "results": results,
        "overhead": overhead,
        "speedups": speedups,
        "versions": versions(),
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
