import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentode.cli import main
from latentode.datasets import make_spirals


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    data = make_spirals(n_series=30, n_obs=12, random_state=0)
    frame = data.train.to_pandas(id_name="spiral", time_name="t").reset_index()
    path = folder / "spirals.csv"
    frame.to_csv(path, index=False)
    return folder, path, frame


@pytest.fixture(scope="module")
def model(table):
    folder, path, _ = table
    out = folder / "model.pt"
    args = ["fit", str(path), "--id-col", "spiral", "--time-col", "t", "--model", str(out)]
    assert main([*args, "--epochs", "2", "--latent-dim", "3"]) == 0
    return out


def test_fit_writes_a_loadable_model(model, capsys):
    from latentode import LatentODE

    assert LatentODE.load(model).n_features_in_ == 2


def test_fit_passes_the_forecasting_options(table, tmp_path):
    from latentode import LatentODE

    _, path, _ = table
    out = tmp_path / "anchored.pt"
    args = ["fit", str(path), "--id-col", "spiral", "--time-col", "t", "--model", str(out)]
    options = ["--anchor", "--likelihood", "student_t", "--encode-fraction", "0.5"]
    options += ["--max-time", "600"]
    assert main([*args, "--epochs", "1", "--latent-dim", "2", *options]) == 0
    fitted = LatentODE.load(out)
    assert (fitted.anchor, fitted.likelihood, fitted.encode_fraction) == (True, "student_t", 0.5)
    assert fitted.max_time == 600.0
    with pytest.raises(SystemExit):
        main([*args, "--encode-fraction", "1.5"])


def test_anchor_option_takes_the_level_or_the_path_blend(capsys):
    from latentode.cli import build_parser

    parser = build_parser()
    base = ["fit", "data.csv", "--id-col", "id", "--time-col", "t", "--model", "m.pt"]
    assert parser.parse_args(base).anchor is False
    assert parser.parse_args([*base, "--anchor"]).anchor is True
    assert parser.parse_args([*base, "--anchor", "level"]).anchor is True
    assert parser.parse_args([*base, "--anchor", "path"]).anchor == "path"
    assert parser.parse_args([*base, "--anchor", "--no-anchor"]).anchor is False
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--anchor", "both"])
    assert "give level (the default of --anchor) or path" in capsys.readouterr().err


def test_fit_shows_progress_on_a_terminal_unless_quiet(table, tmp_path, capsys, monkeypatch):
    _, path, _ = table
    args = ["fit", str(path), "--id-col", "spiral", "--time-col", "t", "--epochs", "2"]
    args += ["--latent-dim", "2", "--model", str(tmp_path / "m.pt")]
    assert main(args) == 0
    assert "epoch" not in capsys.readouterr().err  # not a terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(args) == 0
    assert "epoch/s" in capsys.readouterr().err  # a terminal: the bar, by default
    assert main([*args, "--quiet"]) == 0
    assert "epoch" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--quiet", "--progress"])


def test_predict_writes_quantiles_per_series_and_time(table, model):
    folder, path, frame = table
    out = folder / "forecast.csv"
    common = [str(model), str(path), "--id-col", "spiral", "--time-col", "t"]
    assert main(["predict", *common, "--times", "5,6,7", "--output", str(out)]) == 0
    result = pd.read_csv(out)
    assert list(result.columns) == [
        "series", "time", "x_q0.05", "x_q0.5", "x_q0.95", "y_q0.05", "y_q0.5", "y_q0.95"
    ]  # fmt: skip
    assert len(result) == frame["spiral"].nunique() * 3
    assert (result["x_q0.05"] <= result["x_q0.95"]).all()
    grid = folder / "grid.csv"
    assert main(["predict", *common, "--horizon", "2", "--step", "0.5", "--output", str(grid)]) == 0
    forecast = pd.read_csv(grid)
    # every series from its own last observation: four times, 0.5 apart, in clean numbers
    last = frame.groupby("spiral")["t"].max()
    assert (forecast.groupby("series").size() == 4).all()
    ends = forecast.groupby("series")["time"].max()
    np.testing.assert_allclose(ends.values, last.loc[ends.index].values + 2.0)
    assert forecast.groupby("series")["time"].min().gt(last.loc[ends.index]).all()
    assert all(len(repr(t)) < 12 for t in forecast["time"])


def test_predict_takes_each_series_query_times_from_a_file(table, model, capsys):
    folder, path, frame = table
    ids = frame["spiral"].unique()[:2]
    queries = pd.DataFrame({"spiral": [ids[1], ids[0], ids[1]], "t": [7.0, 1.5, 6.0]})
    queries.to_csv(folder / "queries.csv", index=False)
    common = [str(model), str(path), "--id-col", "spiral", "--time-col", "t"]
    out = folder / "own.csv"
    assert main(["predict", *common, "--times-file", str(folder / "queries.csv"),
                 "--output", str(out)]) == 0  # fmt: skip
    result = pd.read_csv(out)
    assert list(zip(result.series, result.time, strict=True)) == [
        (ids[0], 1.5), (ids[1], 6.0), (ids[1], 7.0)
    ]  # fmt: skip
    queries.assign(spiral="nobody").to_csv(folder / "bad.csv", index=False)
    assert main(["predict", *common, "--times-file", str(folder / "bad.csv"),
                 "--output", str(out)]) == 2  # fmt: skip
    assert "['nobody'] are not in" in capsys.readouterr().err
    assert main(["predict", *common, "--times-file", str(folder / "queries.csv"),
                 "--horizon", "2", "--output", str(out)]) == 2  # fmt: skip
    assert "without --times or --horizon" in capsys.readouterr().err


def test_plot_writes_a_png(table, model, monkeypatch):
    import latentode.plotting

    drawn = {}
    original = latentode.plotting.plot_posterior_grid

    def spy(samples, observed=None, **kwargs):
        drawn["samples"], drawn["observed"] = samples, observed
        return original(samples, observed, **kwargs)

    monkeypatch.setattr(latentode.plotting, "plot_posterior_grid", spy)
    folder, path, frame = table
    out = folder / "plot.png"
    ids = [str(i) for i in frame["spiral"].unique()[:2]]
    args = [str(model), str(path), "--id-col", "spiral", "--time-col", "t", "--output", str(out)]
    assert main(["plot", *args, "--series", *ids, "--horizon", "2", "--samples", "20"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the bands cover the observed window densely and reach the horizon
    times, observed = drawn["samples"].time.values, drawn["observed"]
    assert [str(i) for i in drawn["samples"].series.values] == ids
    inside = times[times <= observed.t_max]
    assert inside.size >= 100 and inside[0] == observed.t_min
    assert times[-1] == pytest.approx(observed.t_max + 2)
    assert drawn["samples"].sizes["sample"] == 20
    # each plotted series' own query times from a file join the grid
    own = pd.DataFrame({"spiral": [ids[0], ids[1]], "t": [9.25, 8.75]})
    own.to_csv(folder / "plot_times.csv", index=False)
    files = ["--times-file", str(folder / "plot_times.csv")]
    assert main(["plot", *args, "--series", *ids, *files, "--samples", "5"]) == 0
    assert {9.25, 8.75} <= set(drawn["samples"].time.values.tolist())


def test_user_errors_are_one_line_with_exit_status_2(table, model, capsys):
    folder, path, _ = table
    assert (
        main(
            [
                "fit",
                str(path),
                "--id-col",
                "patient",
                "--time-col",
                "t",
                "--model",
                str(folder / "m.pt"),
            ]
        )
        == 2
    )
    assert "--id-col 'patient' is not a column" in capsys.readouterr().err
    assert (
        main(
            ["fit", str(folder / "nope.csv"), "--id-col", "a", "--time-col", "b", "--model", "m.pt"]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    bad = folder / "bad.csv"
    pd.DataFrame({"id": [1, 1], "t": [0.0, 1.0], "v": [1.0, float("inf")]}).to_csv(bad)
    assert main(["fit", str(bad), "--id-col", "id", "--time-col", "t", "--model", "m.pt"]) == 2
    assert "series 1 contains an infinite value" in capsys.readouterr().err
    common = [str(model), str(path), "--id-col", "spiral", "--time-col", "t"]
    assert main(["predict", *common, "--output", str(folder / "out.txt")]) == 2
    assert "write .csv or .nc" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["fit"], ["predict"], ["plot"], ["demo"]])
def test_every_command_has_help_in_process(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0 and "usage: latentode" in capsys.readouterr().out


@pytest.mark.slow  # a fresh interpreter per entry point and command
@pytest.mark.parametrize("module", ["latentode", "latentode.cli"])
@pytest.mark.parametrize("command", [[], ["fit"], ["predict"], ["plot"], ["demo"]])
def test_every_command_has_help(command, module):
    result = subprocess.run(
        [sys.executable, "-m", module, *command, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "usage: latentode" in result.stdout


def test_netcdf_in_and_out(table, model):
    import xarray as xr

    folder, _, frame = table
    source = folder / "spirals.nc"
    xr.Dataset.from_dataframe(frame.set_index(["spiral", "t"])).to_netcdf(source)
    out = folder / "forecast.nc"
    args = [str(model), str(source), "--id-col", "spiral", "--time-col", "t", "--times", "5,6"]
    assert main(["predict", *args, "--output", str(out)]) == 0
    with xr.open_dataset(out) as result:
        assert result["x_q0.5"].dims == ("series", "time")
        assert result.sizes["series"] == frame["spiral"].nunique()


def test_evaluate_scores_the_model_beside_the_baselines(table, model, capsys):
    folder, path, frame = table
    out, png = folder / "scores.csv", folder / "reliability.png"
    common = [str(model), str(path), "--id-col", "spiral", "--time-col", "t"]
    assert (
        main(["evaluate", *common, "--n-last", "3", "--output", str(out), "--plot", str(png)]) == 0
    )
    scores = pd.read_csv(out)
    assert list(scores.model.unique()) == ["latentode", "last value", "interpolation", "mean"]
    overall = scores[scores.feature == "all"]
    assert (overall.n == 3 * 2 * frame["spiral"].nunique()).all()  # 3 times x 2 features each
    assert {"mse", "crps", "coverage_90", "width_90", "coverage_50"} <= set(scores.columns)
    assert png.stat().st_size > 10_000
    assert "last value" in capsys.readouterr().out
    # a missing folder is refused before any work; one rule at a time
    assert (
        main(["evaluate", *common, "--n-last", "3", "--output", str(folder / "no" / "s.csv")]) == 2
    )
    with pytest.raises(SystemExit):
        main(["evaluate", *common, "--n-last", "3", "--last", "2", "--output", str(out)])


def test_csv_output_never_starts_a_cell_with_a_formula(model, tmp_path):
    frame = pd.DataFrame(
        {"spiral": ["=HYPERLINK(1)", "=HYPERLINK(1)", "-5", "-5"], "t": [0.0, 1.0, 0.0, 1.0]}
    )
    frame["x"], frame["y"] = [0.1, 0.2, 0.3, 0.4], [0.0, 0.1, 0.2, 0.3]
    path, out = tmp_path / "ids.csv", tmp_path / "out.csv"
    frame.to_csv(path, index=False)
    args = [str(model), str(path), "--id-col", "spiral", "--time-col", "t", "--times", "2"]
    assert main(["predict", *args, "--samples", "8", "--output", str(out)]) == 0
    ids = set(pd.read_csv(out)["series"].astype(str))
    assert ids == {"'=HYPERLINK(1)", "-5"}  # a number stays a number


def test_output_paths_are_checked_before_any_work(table, tmp_path, capsys, monkeypatch):
    import latentode.cli

    _, path, _ = table
    fitted = []
    monkeypatch.setattr(latentode.cli, "_load_data", lambda args: fitted.append(1))
    data = [str(path), "--id-col", "spiral", "--time-col", "t"]
    missing = tmp_path / "no" / "such" / "model.pt"
    assert main(["fit", *data, "--model", str(missing)]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    assert main(["fit", *data, "--model", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert (
        main(
            ["predict", "m.pt", *data, "--times", "1", "--output", str(missing.with_suffix(".csv"))]
        )
        == 2
    )
    assert fitted == []  # the data were never read, nothing was trained


def test_a_failed_final_write_keeps_the_fitted_model(table, tmp_path, capsys, monkeypatch):
    from latentode import LatentODE

    _, path, _ = table
    target = tmp_path / "model.pt"
    real_save = LatentODE.save

    def flaky(self, where):
        if str(where) == str(target):
            raise OSError(28, "No space left on device")
        return real_save(self, where)

    monkeypatch.setattr(LatentODE, "save", flaky)
    args = ["fit", str(path), "--id-col", "spiral", "--time-col", "t", "--model", str(target)]
    assert main([*args, "--epochs", "1", "--latent-dim", "2"]) == 2
    err = capsys.readouterr().err
    rescued = err.split("saved to ")[1].split(" instead")[0]
    assert "No space left" in err and LatentODE.load(rescued).n_features_in_ == 2
    Path(rescued).unlink()


def test_datetime_columns_count_from_each_series_start_with_time_unit(tmp_path, capsys):
    from latentode import LatentODE

    rng = np.random.default_rng(0)
    rows = []
    for patient in ("a", "b", "c", "d"):
        start = pd.Timestamp("2024-03-01 08:00") + pd.Timedelta(days=int(rng.integers(0, 300)))
        for h in np.sort(rng.uniform(0, 12, 6)):
            rows.append((patient, start + pd.Timedelta(hours=h), np.cos(h / 3)))
    path = tmp_path / "visits.csv"
    pd.DataFrame(rows, columns=["patient", "taken", "lab"]).to_csv(path, index=False)
    common = [str(path), "--id-col", "patient", "--time-col", "taken"]
    model = tmp_path / "m.pt"
    assert main(["fit", *common, "--model", str(model), "--epochs", "1"]) == 2
    assert "pass --time-unit" in capsys.readouterr().err
    fit = ["fit", *common, "--model", str(model), "--epochs", "1", "--latent-dim", "2"]
    assert main([*fit, "--time-unit", "h"]) == 0
    assert LatentODE.load(model).time_unit_ == "h"
    out = tmp_path / "f.csv"
    predict = ["predict", str(model), *common, "--horizon", "4", "--step", "2"]
    assert main([*predict, "--time-unit", "h", "--output", str(out)]) == 0
    times = pd.read_csv(out).groupby("series").time.max()
    assert (times <= 12 + 4 + 1e-9).all()  # elapsed hours, not nanoseconds since 1970
    assert main([*predict, "--time-unit", "min", "--output", str(out)]) == 2
    assert "counts time in 'min' but the model was fitted on times in 'h'" in (
        capsys.readouterr().err
    )
    origin = ["--time-unit", "D", "--time-origin", "2024-01-01"]
    with pytest.warns(UserWarning, match="typical series spans"):  # calendar time: warned
        assert main([*fit, *origin]) == 0
    assert LatentODE.load(model).time_origin_ >= 60  # days since the stated origin


def test_plot_labels_come_from_the_column_names(table, model):
    import matplotlib

    matplotlib.use("Agg")
    from latentode import LatentODE
    from latentode.plotting import plot_posterior_grid

    _, path, frame = table
    data = LatentODE.load(model)
    from latentode.datasets import from_pandas

    observed = from_pandas(frame, id_col="spiral", time_col="t")[:2]
    draws = data.sample(observed, n_samples=4)
    fig = plot_posterior_grid(draws, observed, time_label="t (h)", series_label="spiral")
    assert fig.axes[0].get_xlabel() == "t (h)"
    assert fig.axes[0].get_title().startswith("spiral ")
    assert fig.legends and not fig.axes[0].get_legend()  # one legend, off the data


def test_static_covariates_come_from_a_table_per_series(table, tmp_path, capsys):
    from latentode import LatentODE

    _, path, frame = table
    ids = frame["spiral"].unique()
    static = pd.DataFrame({"spiral": ids, "age": np.linspace(20, 80, len(ids))})
    static["ward"] = np.where(np.arange(len(ids)) % 2, "icu", "surgery")
    static_path = tmp_path / "static.csv"
    static.to_csv(static_path, index=False)
    out = tmp_path / "static.pt"
    common = ["--id-col", "spiral", "--time-col", "t", "--static", str(static_path)]
    assert main(["fit", str(path), *common, "--epochs", "1", "--model", str(out)]) == 0
    assert list(LatentODE.load(out).static_names_) == ["age", "ward=icu", "ward=surgery"]
    forecast = tmp_path / "forecast.csv"
    assert main(["predict", str(out), str(path), *common, "--output", str(forecast)]) == 0
    assert pd.read_csv(forecast)["series"].nunique() == len(ids)
    args = ["predict", str(out), str(path), "--id-col", "spiral", "--time-col", "t"]
    assert main([*args, "--output", str(forecast)]) == 2
    assert "attach them with data.with_static" in capsys.readouterr().err
    static.iloc[1:].to_csv(static_path, index=False)  # a series without its row
    assert main(["predict", str(out), str(path), *common, "--output", str(forecast)]) == 2
    assert f"series [{ids[0]}]" in capsys.readouterr().err


def test_fit_streams_a_parquet_file(table, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    from latentode import LatentODE
    from latentode.datasets import write_parquet

    data = make_spirals(n_series=30, n_obs=12, random_state=0).train
    path = tmp_path / "spirals.parquet"
    write_parquet(data, path, id_col="spiral", time_col="t")
    out = tmp_path / "streamed.pt"
    args = ["fit", str(path), "--id-col", "spiral", "--time-col", "t", "--model", str(out)]
    assert main([*args, "--stream", "--epochs", "6", "--latent-dim", "2", "--quiet"]) == 0
    fitted = LatentODE.load(out)
    assert fitted.n_features_in_ == 2 and len(fitted.history_.loss) == 6
    assert f"fitted {len(data)} series" in capsys.readouterr().out
    # standardised with the file's statistics, and trained: the loss fell
    values = np.concatenate([s.values for s in data])
    np.testing.assert_allclose(fitted.value_mean_, np.nanmean(values, axis=0), rtol=1e-5)
    assert fitted.history_.loss[-1] < fitted.history_.loss[0]
    # what streaming cannot do is refused by name
    static = tmp_path / "static.csv"
    pd.DataFrame({"spiral": data.ids, "age": 1.0}).to_csv(static, index=False)
    assert main([*args, "--stream", "--static", str(static)]) == 2
    assert "--static is not available with --stream" in capsys.readouterr().err
    csv = table[1]
    assert main(["fit", str(csv), *args[2:], "--stream"]) == 2
    assert "--stream reads Parquet" in capsys.readouterr().err
