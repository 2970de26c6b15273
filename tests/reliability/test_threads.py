"""Threads sharing fitted models: Pyro's state is per process, so the estimators serialise
their Pyro calls; answers from several threads at once equal the single-thread answers."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from latentode import LatentODE


def test_predictions_from_four_threads_equal_the_single_thread_answers(data, small):
    model = LatentODE(**small).fit(data.train)
    other = LatentODE(**{**small, "random_state": 1}).fit(data.train)

    def work(k):
        est = model if k % 2 == 0 else other
        if k % 3 == 0:
            return est.predict_quantiles(data.test, q=[0.1, 0.9], n_samples=8).to_numpy()
        return est.predict(data.test, n_samples=8).values

    alone = [work(k) for k in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(work, range(8)))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_fits_in_two_threads_both_finish_as_if_alone(data, small):
    alone = [LatentODE(**{**small, "random_state": s}).fit(data.train) for s in (0, 1)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(LatentODE(**{**small, "random_state": s}).fit, data.train) for s in (0, 1)
        ]
        fitted = [f.result() for f in futures]
    for a, b in zip(alone, fitted, strict=True):
        assert a.history_.loss == b.history_.loss
