"""``fedexec.integrations.joblib``: joblib's ``Parallel`` and scikit-learn on fedexec.

Every test runs on the ``native`` and the ``local`` backend, on a default executor
made by ``fedexec.init`` (the conftest shuts it down after each test).
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import pickle
import time

import numpy as np
import pytest

import fedexec

joblib = pytest.importorskip("joblib")
sklearn = pytest.importorskip("sklearn")

from _joblib_tasks import (  # noqa: E402
    CustomError,
    fail_on,
    fail_or_sleep,
    in_task,
    nested,
    pair_sum,
    row_sum,
    square,
)
from fedexec.integrations.joblib import FedexecBackend, register_fedexec  # noqa: E402
from joblib import Parallel, delayed, parallel_backend  # noqa: E402
from scipy.stats import loguniform  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import RandomizedSearchCV, cross_val_score  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

pytestmark = pytest.mark.timeout(90)

register_fedexec()


@pytest.fixture(params=["native", "local"])
def ex(request):
    """The default executor, on each backend, with 2 CPUs."""
    return fedexec.init(backend=request.param, num_cpus=2)


class Recorder:
    """Wraps an executor's ``submit``/``put`` to see what the backend sends."""

    def __init__(self, executor, monkeypatch):
        self.submits: list[tuple] = []
        self.refs: list[fedexec.ObjectRef] = []
        self.puts: list[int] = []
        submit, put = executor.submit, executor.put

        def recording_submit(fn, /, *args, **kwargs):
            ref = submit(fn, *args, **kwargs)
            self.submits.append(args)
            self.refs.append(ref)
            return ref

        def recording_put(value):
            self.puts.append(id(value))
            return put(value)

        monkeypatch.setattr(executor, "submit", recording_submit)
        monkeypatch.setattr(executor, "put", recording_put)


# -- results ---------------------------------------------------------------------------
def test_results_equal_to_loky(ex, monkeypatch):
    with parallel_backend("loky"):
        expected = Parallel(n_jobs=2)(delayed(square)(i) for i in range(50))
    rec = Recorder(ex, monkeypatch)
    with parallel_backend("fedexec"):
        got = Parallel(n_jobs=2)(delayed(square)(i) for i in range(50))
    assert got == expected == [i * i for i in range(50)]
    assert rec.refs, "no batch was submitted to fedexec"
    with parallel_backend("fedexec"):
        ran = Parallel(n_jobs=2)(delayed(in_task)(i) for i in range(10))
    assert ran == [(i, True) for i in range(10)]


def test_generator_output(ex):
    with parallel_backend("fedexec"):
        gen = Parallel(n_jobs=2, return_as="generator")(delayed(square)(i) for i in range(20))
        assert list(gen) == [i * i for i in range(20)]


def test_nested_parallel_runs_inside_tasks(ex):
    with parallel_backend("fedexec"):
        got = Parallel(n_jobs=2)(delayed(nested)(i) for i in range(8))
    assert got == [sum(j * j for j in range(i)) for i in range(8)]


def _digits(n=500):
    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


def test_randomized_search_matches_default_backend(ex):
    X, y = _digits()

    def search():
        return RandomizedSearchCV(
            SVC(), {"C": loguniform(1e-1, 1e2), "gamma": loguniform(1e-4, 1e-2)},
            n_iter=4, cv=3, random_state=0, n_jobs=-1,
        ).fit(X, y)

    with parallel_backend("loky", n_jobs=2):
        expected = search()
    start = time.monotonic()
    with parallel_backend("fedexec"):
        got = search()
    took = time.monotonic() - start
    assert got.best_params_ == expected.best_params_
    assert got.best_score_ == pytest.approx(expected.best_score_, abs=1e-12)
    np.testing.assert_allclose(got.cv_results_["mean_test_score"],
                               expected.cv_results_["mean_test_score"])
    assert took < 30


def test_cross_val_score_matches_default_backend(ex):
    X, y = _digits()
    expected = cross_val_score(SVC(gamma=1e-3), X, y, cv=3, n_jobs=2)
    with parallel_backend("fedexec"):
        got = cross_val_score(SVC(gamma=1e-3), X, y, cv=3, n_jobs=2)
    np.testing.assert_array_equal(got, expected)


# -- errors and abort ------------------------------------------------------------------
@pytest.mark.parametrize("exc_type", [ValueError, KeyError, CustomError])
def test_error_in_task_raises_original_type(ex, exc_type):
    with parallel_backend("fedexec"), pytest.raises(exc_type) as info:
        Parallel(n_jobs=2)(delayed(fail_on)(i, 7, exc_type) for i in range(20))
    assert "call 7 failed" in str(info.value)
    # The backend is still usable afterwards.
    with parallel_backend("fedexec"):
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_abort_cancels_outstanding_tasks(ex, monkeypatch):
    rec = Recorder(ex, monkeypatch)
    start = time.monotonic()
    with parallel_backend("fedexec"), pytest.raises(ValueError, match="first call failed"):
        Parallel(n_jobs=2)(delayed(fail_or_sleep)(i) for i in range(6))
    assert time.monotonic() - start < 10, "joblib waited for the sleeping calls"
    assert len(rec.refs) >= 2
    sleepers = rec.refs[1:]
    # Poll done() rather than cf.wait: a ref cancelled while queued stays in the
    # stdlib's CANCELLED state (not CANCELLED_AND_NOTIFIED), which cf.wait ignores.
    deadline = time.monotonic() + 15
    while not all(r.done() for r in sleepers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(r.done() for r in sleepers), "outstanding tasks kept running after the abort"
    for ref in sleepers:
        assert ref.cancelled() or isinstance(ref.exception(0), cf.CancelledError), ref
    assert time.monotonic() - start < 25  # far less than one sleeper's 30 s


# -- large arrays ----------------------------------------------------------------------
def test_large_arrays_are_put_once_and_shared(ex, monkeypatch):
    X = np.arange(512 * 1024, dtype=np.float64).reshape(512, 1024)  # 4 MiB
    small = np.ones(10)
    rec = Recorder(ex, monkeypatch)
    with parallel_backend("fedexec"):
        got = Parallel(n_jobs=2, batch_size=2)(
            delayed(row_sum)(X, i, scale=small.sum() / 10) for i in range(40))
    assert got == [float(X[i].sum()) for i in range(40)]
    assert len(rec.submits) == 20
    assert rec.puts == [id(X)], "X must be stored exactly once, and nothing else"
    shared = {a.id for args in rec.submits for a in args[1:]}
    assert len(shared) == 1
    for args in rec.submits:
        # The batch itself carries a marker, not X: its pickle is tiny.
        assert len(pickle.dumps(args[0])) < 20_000
        assert all(isinstance(a, fedexec.ObjectRef) for a in args[1:])


def test_arrays_inside_containers_and_kwargs_are_shared(ex, monkeypatch):
    X = np.ones((300, 1024))  # 2.4 MB
    rec = Recorder(ex, monkeypatch)
    with parallel_backend("fedexec"):
        got = Parallel(n_jobs=2)(
            delayed(pair_sum)([X, 1], i, x=X)
            for i in range(6))
    assert got == [2048.0] * 6
    assert rec.puts == [id(X)]


def test_share_threshold_option(ex, monkeypatch):
    X = np.ones((64, 64))  # 32 KiB: below the default threshold
    rec = Recorder(ex, monkeypatch)
    with parallel_backend("fedexec"):
        Parallel(n_jobs=2)(delayed(row_sum)(X, i) for i in range(4))
    assert rec.puts == []
    with parallel_backend("fedexec", share_threshold=1000):
        got = Parallel(n_jobs=2)(delayed(row_sum)(X, i) for i in range(4))
    assert got == [64.0] * 4
    assert rec.puts == [id(X)]
    with pytest.raises(ValueError):
        FedexecBackend(share_threshold=-1)


def test_shared_cache_follows_the_arrays_lifetime(ex):
    backend = FedexecBackend(share_threshold=0)
    backend.start_call()
    a = np.zeros(1000)
    ref_a = backend._shared_ref(a)
    assert backend._shared_ref(a) is ref_a  # cached by identity
    assert len(backend._shared) == 1
    del a
    gc.collect()
    assert len(backend._shared) == 0  # the weakref dropped the entry
    b = np.ones(1000)  # may well reuse a's id: must not get a's ref
    assert backend._shared_ref(b) is not ref_a
    assert np.array_equal(ex.get(backend._shared_ref(b)), b)
    backend.stop_call()
    assert len(backend._shared) == 0


# -- n_jobs and executors --------------------------------------------------------------
def test_n_jobs_minus_one_is_the_cluster_cpus():
    fedexec.init(num_cpus=3)
    with parallel_backend("fedexec"):
        assert joblib.effective_n_jobs(-1) == 3
        assert joblib.effective_n_jobs(-2) == 2
        assert joblib.effective_n_jobs(-10) == 1
        assert joblib.effective_n_jobs(5) == 5
        with Parallel(n_jobs=-1) as p:
            assert p._effective_n_jobs() == 3
            assert p(delayed(square)(i) for i in range(6)) == [i * i for i in range(6)]
    with pytest.raises(ValueError):
        FedexecBackend().effective_n_jobs(0)


def test_uses_the_default_executor_created_on_first_use():
    assert not fedexec.is_initialized()
    with parallel_backend("fedexec"):
        got = Parallel(n_jobs=2)(delayed(in_task)(i) for i in range(4))
    assert got == [(i, True) for i in range(4)]
    assert fedexec.is_initialized()


@pytest.mark.parametrize("backend_name", ["native", "local"])
def test_explicit_executor(backend_name, monkeypatch):
    with fedexec.Executor(backend=backend_name, num_cpus=4) as mine:
        rec = Recorder(mine, monkeypatch)
        with parallel_backend("fedexec", executor=mine):
            assert joblib.effective_n_jobs(-1) == 4
            got = Parallel(n_jobs=-1)(delayed(square)(i) for i in range(10))
        assert got == [i * i for i in range(10)]
        assert rec.refs and all(r.done() for r in rec.refs)
    assert not fedexec.is_initialized(), "the default executor was created"
    with pytest.raises(TypeError):
        FedexecBackend(executor="not an executor")


def test_n_jobs_one_runs_sequentially_in_the_caller(ex, monkeypatch):
    rec = Recorder(ex, monkeypatch)
    with parallel_backend("fedexec"):
        got = Parallel(n_jobs=1)(delayed(in_task)(i) for i in range(3))
    assert got == [(i, False) for i in range(3)]
    assert rec.refs == []


def test_executor_options_view(ex):
    """``executor=ex.options(...)``: every batch runs with those task options."""
    with parallel_backend("fedexec", executor=ex.options(num_cpus=2, name="joblib-batch")):
        got = Parallel(n_jobs=-1)(delayed(in_task)(i) for i in range(4))
    assert got == [(i, True) for i in range(4)]
