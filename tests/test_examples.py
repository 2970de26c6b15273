"""The paper-replication scripts run end to end on tiny budgets and show their effects."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_odenet_digits_compares_three_networks(tmp_path):
    digits = _load("examples/odenet_digits.py")
    out = tmp_path / "digits.json"
    args = ["--epochs", "3", "--channels", "16", "--lr", "0.01", "--output", str(out)]
    results = digits.main(args)
    by = {r["model"]: r for r in results}
    assert set(by) == {"resnet", "rknet", "odenet"}
    for r in results:
        assert r["test_error"] < 0.6  # chance is 0.9
    assert by["odenet"]["parameters"] == by["rknet"]["parameters"] < by["resnet"]["parameters"]
    # the adjoint keeps far less for backward than backprop through 4 RK4 steps
    assert by["odenet"]["saved_for_backward_mib"] < 0.2 * by["rknet"]["saved_for_backward_mib"]
    assert by["odenet"]["nfe_backward_per_step"] > 0 == by["rknet"]["nfe_backward_per_step"]
    assert json.loads(out.read_text())["results"] == results


def test_odenet_memory_grows_with_steps_only_without_the_adjoint(tmp_path):
    bench = _load("benchmarks/odenet_memory.py")
    kwargs = dict(batch=2, channels=4, size=4)
    saved = {
        (mode, steps): bench.worker(mode, steps, **kwargs)["saved_for_backward_mib"]
        for mode in ("direct", "adjoint")
        for steps in (5, 20)
    }
    assert saved[("direct", 20)] == pytest.approx(4 * saved[("direct", 5)], rel=0.1)
    assert saved[("adjoint", 20)] == saved[("adjoint", 5)] < saved[("direct", 5)]


@pytest.mark.slow
def test_cnf_density_learns_beyond_the_base_distribution(tmp_path):
    cnf = _load("examples/cnf_density.py")
    png = tmp_path / "cnf.png"
    results = cnf.main(
        [
            "--datasets",
            "moons",
            "--iterations",
            "40",
            "--planar-layers",
            "16",
            "--hidden",
            "16",
            "--output",
            str(png),
        ]
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    by = {r["flow"]: r for r in results}
    # a standard normal scores standardised data at about log(2 pi) + 1 = 2.84 nats
    assert by["cnf"]["held_out_nll"] < 2.7
    assert by["planar"]["parameters"] == 16 * 5


def test_periodic_example_scores_both_tasks(tmp_path):
    periodic = _load("examples/periodic.py")
    png = tmp_path / "periodic.png"
    results = periodic.main(
        ["--n-series", "60", "--epochs", "3", "--baseline-epochs", "3", "--output", str(png)]
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    for key in ("interpolation_mse", "extrapolation_mse", "odernn_extrapolation_mse"):
        assert 0 < results[key] < 5  # the signal's variance is 0.5


PHYSIONET = ROOT.parent / "shared" / "data" / "physionet2012"


@pytest.mark.slow
@pytest.mark.skipif(not PHYSIONET.exists(), reason="the PhysioNet 2012 set A files are not present")
def test_physionet_example_on_a_few_stays(tmp_path):
    physionet = _load("examples/physionet.py")
    png = tmp_path / "icu.png"
    with pytest.warns(UserWarning, match="descriptors only"):
        results = physionet.main(
            [
                "--path",
                str(PHYSIONET),
                "--n-stays",
                "60",
                "--epochs",
                "1",
                "--encoder",
                "gru",
                "--latent-dim",
                "4",
                "--quantization",
                "1",
                "--output",
                str(png),
            ]
        )
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert results["n_train"] == 48 and results["n_test"] == 12
    assert 0 <= results["mortality_auc"] <= 1
    assert 0 < results["interpolation_mse"] < 1 and 0 < results["extrapolation_mse"] < 1
    for key in ("interpolation_mse_reference_scale", "extrapolation_mse_reference_scale"):
        assert 0 < results[key] < 1  # the paper's aggregation, from posterior draws
    with pytest.warns(UserWarning, match="descriptors only"):  # the reconstruction model alone
        recon = physionet.main(
            [
                "--path",
                str(PHYSIONET),
                "--n-stays",
                "60",
                "--epochs",
                "1",
                "--encoder",
                "gru",
                "--latent-dim",
                "4",
                "--quantization",
                "1",
                "--no-labels",
                "--output",
                str(png),
            ]
        )
    assert recon["mortality_auc"] is None and 0 < recon["interpolation_mse"] < 1


@pytest.mark.slow
def test_hopper_example_beats_the_mean_after_a_few_epochs(tmp_path):
    pytest.importorskip("dm_control", reason="the Hopper needs the 'hopper' extra (dm-control)")
    hopper = _load("examples/hopper.py")
    png = tmp_path / "hopper.png"
    results = hopper.main(
        ["--n-series", "300", "--epochs", "8", "--fraction", "0.2", "--output", str(png)]
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert results["n_train"] == 240 and results["n_extrapolated"] > 50
    assert results["interpolation_mse"] < 0.7 * results["mean_predictor_mse"]
    assert results["extrapolation_mse"] < results["mean_predictor_mse"]


@pytest.mark.slow
def test_rubanova2019_benchmark_records_budgets_versions_and_published_figures(tmp_path):
    pytest.importorskip("dm_control", reason="the Hopper needs the 'hopper' extra (dm-control)")
    bench = _load("benchmarks/rubanova2019.py")
    out = tmp_path / "r.json"
    record = bench.main(
        [
            "--tasks",
            "hopper",
            "--hopper-series",
            "40",
            "--hopper-fractions",
            "0.1",
            "--hopper-epochs",
            "1",
            "--output",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == record
    assert record["config"]["hopper_epochs"] == 1 and record["versions"]["torch"]
    run = record["results"]["hopper"]["0.1"]
    assert run["config"]["n_series"] == 40 and run["wall_seconds"] > 0
    assert run["results"]["peak_rss_mib"] > 0 and run["results"]["interpolation_mse"] > 0
    assert "3.600e-03" in bench.table(record["results"])  # the paper's 10% figure, beside ours


@pytest.mark.slow
def test_suite_compares_backends_on_the_spiral_configuration(tmp_path):
    suite = _load("benchmarks/suite.py")
    out = tmp_path / "suite.json"
    record = suite.main(
        [
            "--configs",
            "spiral",
            "spiral_reference",
            "periodic",
            "--spiral-iterations",
            "2",
            "--periodic-epochs",
            "3",
            "--periodic-eval-every",
            "2",
            "--threads",
            "1",
            "--output",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == record
    rows = {r["backend"]: r for r in record["results"] if r["config"] == "spiral"}
    assert rows.keys() == {"native", "torchdiffeq"}
    reference = [r for r in record["results"] if r["config"] == "spiral_reference"]
    assert len(reference) == 1 and reference[0]["backend"] == "reference"
    assert reference[0]["epochs"] == 2 and 0 < reference[0]["extrapolation_rmse"] < 10
    assert record["speedups"]["spiral_vs_reference_measured"] > 0
    for periodic in (r for r in record["results"] if r["config"] == "periodic"):
        # time to accuracy: scored after epochs 2 and 3, fit time only, increasing
        curve = periodic["mse_curve"]
        assert [c["epoch"] for c in curve] == [2, 3] and periodic["epochs"] == 3
        assert 0 < curve[0]["fit_seconds"] < curve[1]["fit_seconds"]
        assert curve[-1]["mse"] == periodic["interpolation_mse"]
        assert periodic["time_to_accuracy"]["target_mse"] == 0.0037
    for r in rows.values():
        assert r["epochs"] == 2 and r["nfe_forward_per_iteration"] > 0
        assert r["nfe_backward_per_iteration"] == 0  # backprop: no backward solves
        assert 0 < r["extrapolation_rmse"] < 10 and r["series_per_second"] > 0
    assert record["speedups"]["spiral"] > 0 and record["versions"]["torchdiffeq"]


def test_suite_demo_data_are_the_public_demos_curves():
    suite = _load("benchmarks/suite.py")
    data = suite.demo_spirals(3)
    assert len(data.train) == 1000 and len(data.test) == 250 and data.noise_std == 0.3
    step = 6 * np.pi / 499
    assert np.allclose(data.times, step * np.arange(100))
    assert np.allclose(data.test_extrapolation_times, step * np.arange(100, 200))
    for series in list(data.train)[:5]:
        assert np.array_equal(series.times, data.times) and series.values.shape == (100, 2)
    truth = data.test_extrapolation_truth
    assert truth.shape == (250, 100, 2) and np.isfinite(truth).all()
    # every target lies on one of the two curves: r = 0.3 t around (5, 0) or
    # r = 15 / (6 pi + 1 - t) around (-5, 0), for t on the grid
    grid = np.linspace(0, 6 * np.pi, 500)
    counter = np.stack([0.3 * grid * np.cos(grid) + 5, 0.3 * grid * np.sin(grid)], -1)
    angle = 6 * np.pi + 1 - grid
    clockwise = np.stack([15 / angle * np.cos(angle) - 5, 15 / angle * np.sin(angle)], -1)
    curve = np.concatenate([counter, clockwise])
    some = truth[:40].reshape(-1, 1, 2)  # 40 series: enough, and a small distance matrix
    nearest = np.min(np.linalg.norm(some - curve[None], axis=-1), axis=1)
    assert nearest.max() < 1e-9
    # a window's noisy points scatter around the curve with the data's noise
    window = np.stack([s.values for s in list(data.test)[:40]])
    gaps = np.min(np.linalg.norm(window.reshape(-1, 1, 2) - curve[None], axis=-1), axis=1)
    assert 0.1 < np.median(gaps) < 0.4
    # the same seed gives the same data
    assert np.array_equal(suite.demo_spirals(3).test_extrapolation_truth, truth)


def test_suite_reference_protocol_trains_on_the_demo_data():
    suite = _load("benchmarks/suite.py")
    res = suite.spiral_reference(2, "cpu", 0, data_name="demo")
    assert res["epochs"] == 2 and res["nfe_forward_per_iteration"] > 0
    assert 0 < res["extrapolation_rmse"] < 20


@pytest.mark.slow
def test_adjoint_memory_benchmark_separates_the_gradient_modes(tmp_path):
    bench = _load("benchmarks/adjoint_memory.py")
    out = tmp_path / "am.json"
    record = bench.main(
        [
            "--batch",
            "20",
            "--horizons",
            "1",
            "3",
            "--outputs",
            "50",
            "--repeats",
            "1",
            "--rtol",
            "1e-5",
            "--atol",
            "1e-7",
            "--output",
            str(out),
        ]
    )
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    rows = {(r["sweep"], r["mode"], r["horizon"]): r for r in record["results"]}
    for horizon in (1.0, 3.0):
        ck, bp = rows["horizon", "checkpoint", horizon], rows["horizon", "backprop", horizon]
        adj = rows["horizon", "adjoint", horizon]
        assert ck["nfe_backward"] <= 1.3 * ck["nfe_forward"] + 7
        assert adj["nfe_backward"] > 3 * ck["nfe_backward"]  # restarts at the 100 outputs
        assert ck["saved_for_backward_mib"] < bp["saved_for_backward_mib"]
    assert set(record["summary"]) == {"backprop", "torchdiffeq", "adjoint", "checkpoint"}


def test_gpu_script_is_valid_bash():
    import subprocess

    done = subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu.sh")], capture_output=True)
    assert done.returncode == 0, done.stderr


def test_pypots_imputation_sequences_keep_each_value_at_its_own_time():
    """The raw-times layout for BRITS and SAITS: one step per observation time of a stay,
    hidden values' times kept as steps, and the hidden values found at their steps."""
    from latentode.datasets._convert import as_dataset
    from latentode.evaluation import hold_out

    bench = _load("benchmarks/pypots_imputation.py")
    rng = np.random.default_rng(0)
    series = []
    for n in (5, 9, 7):
        values = rng.normal(size=(n, 3))
        values[:, 1:][rng.random((n, 2)) < 0.4] = np.nan
        series.append((np.sort(rng.uniform(0.0, 48.0, n)), values))
    full = as_dataset(series)
    context, target = hold_out(full, fraction=0.3, random_state=0)
    mean, scale = np.zeros(3), np.full(3, 2.0)
    slots = {s.id: s.times for s in full}
    x = bench.sequences(context, mean, scale, slots, 10)
    assert x.shape == (len(context), 10, 4)
    rows, times, feats, truth = bench.targets(target, mean, scale)
    assert truth.size == sum(int(np.isfinite(s.values).sum()) for s in target) > 0
    for i, s in enumerate(context):
        own = slots[s.id]
        np.testing.assert_allclose(x[i, : own.size, -1], own / 48.0)  # the time feature
        assert np.isnan(x[i, own.size :]).all()  # padding
        placed = x[i, np.searchsorted(own, s.times), :-1]
        np.testing.assert_allclose(placed, s.values / 2.0)  # at its time's step, NaN kept
        observed = np.isfinite(x[i, :, :-1]).sum()
        assert observed == np.isfinite(s.values).sum()  # nothing lost, nothing made up
    for i, t, f, v in zip(rows, times, feats, truth, strict=True):
        step = np.searchsorted(slots[target[i].id], t)
        assert np.isnan(x[i, step, f])  # hidden from the model's input ...
        original = full[[s.id for s in full].index(target[i].id)]
        k = np.searchsorted(original.times, t)
        assert v == pytest.approx(original.values[k, f] / 2.0)  # ... and scored at its step


@pytest.mark.slow
def test_out_of_core_benchmark_streams_a_small_set(tmp_path):
    pytest.importorskip("pyarrow")
    bench = _load("benchmarks/out_of_core.py")
    out = tmp_path / "ooc.json"
    results = bench.main(
        ["--series", "600", "--obs", "20", "--subset", "300", "--workers", "1"]
        + ["--threads", "1", "--output", str(out)]
    )
    assert results["write"]["rows"] == 600 * 20 and results["open"]["rows"] == 600 * 20
    assert results["open"]["blocks"] == 3  # row groups of 256 series
    for part in ("stream", "stream-subset", "memory-subset"):
        assert results[part]["series_per_second"] > 0 and results[part]["peak_rss_mib"] > 100
    assert results["stream"]["series"] == 600 and results["memory-subset"]["series"] == 300
    assert json.loads(out.read_text())["configuration"]["series"] == 600


@pytest.mark.slow
def test_allocator_benchmark_measures_both_settings_in_fresh_processes(tmp_path):
    bench = _load("benchmarks/allocator.py")
    out = tmp_path / "allocator.json"
    results = bench.main(["--runs", "1", "--epochs", "2", "--output", str(out)])
    assert set(results["runs"]) == {"held", "default"}
    for side, runs in results["runs"].items():
        assert len(runs) == 1
        assert results["median"][side] == runs[0]
        assert runs[0]["faults_per_epoch"] > 0 and runs[0]["s_per_epoch"] > 0
    assert results["transparent_huge_pages"] in {"always", "madvise", "never", None}
    assert json.loads(out.read_text())["config"] == {"runs": 1, "epochs": 2, "threads": 1}


def test_encoder_update_benchmark_times_the_fused_and_the_per_read_paths(tmp_path):
    bench = _load("benchmarks/encoder_update.py")
    out = tmp_path / "encoder_update.json"
    results = bench.main(["--blocks", "1", "--repeats", "1", "--output", str(out)])
    assert set(results) == {"euler", "rk4"}
    for r in results.values():
        assert r["fused"]["ms_per_batch"] > 0 and r["per-read GRUCell"]["ms_per_batch"] > 0
        # the two paths are the same encoder: equal encodings and gradients
        assert r["encoding_max_difference"] < 1e-5
        assert r["gradient_max_difference"] < 1e-4 * r["gradient_max_magnitude"]
    assert json.loads(out.read_text())["results"] == results


def test_pypots_imputation_stops_a_fit_before_an_epoch_past_the_budget(monkeypatch):
    """BRITS and SAITS get latentode's ``max_time`` rule: the loop stops before an epoch
    that would end past the budget, at PyPOTS's once-per-epoch hook."""
    bench = _load("benchmarks/pypots_imputation.py")
    clock = {"now": 100.0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])

    class Loop:  # PyPOTS's training loop: the hook, then the patience check, per epoch
        patience = -1

        def _auto_save_model_if_necessary(self, **kwargs):
            self.saved = getattr(self, "saved", 0) + 1

        def fit(self):
            for _ in range(1000):
                clock["now"] += 1.0 if self.saved_count() < 3 else 2.0  # epochs slow down
                self._auto_save_model_if_necessary(confirm_saving=False)
                if self.patience == 0:
                    break

        def saved_count(self):
            return getattr(self, "saved", 0)

    model = Loop()
    original = model._auto_save_model_if_necessary
    epochs, seconds = bench.fit_within(model, Loop.fit, 20.5)
    # epochs end at 1, 2, 3, 5, 7, ..., 19: the next would end at 21 > 20.5
    assert (epochs, seconds) == (11, 19.0)
    assert model.saved == 11  # PyPOTS's own hook still ran every epoch
    assert model._auto_save_model_if_necessary == original  # and is put back


def test_prediction_throughput_times_held_out_draws_read_at_the_held_out_entries(tmp_path):
    bench = _load("benchmarks/prediction_throughput.py")
    out = tmp_path / "throughput.json"
    argv = ["--series", "6", "--train", "8", "--epochs", "1", "--repeats", "1"]
    bench.main([*argv, "--same-time-readout", "4", "--output", str(out)])
    record = json.loads(out.read_text())
    results = record["results"]
    held = [k for k in results if k.startswith("held-out values")]
    assert len(held) == 4  # read at the held-out entries and at every entry, twice each
    assert all(results[k]["series_per_second"] > 0 for k in results)
    assert record["configuration"]["same_time_readout"] == 4
