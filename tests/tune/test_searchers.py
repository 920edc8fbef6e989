"""Optuna and HyperOpt searchers keep to the param_space's ranges and learn from
results; ConcurrencyLimiter and Repeater wrap any searcher."""

from __future__ import annotations

import math

import pytest

from fedexec import tune
from fedexec.tune.search import ConcurrencyLimiter, Repeater, Searcher

pytest.importorskip("optuna")
pytest.importorskip("hyperopt")

from fedexec.tune.search.hyperopt import HyperOptSearch
from fedexec.tune.search.optuna import OptunaSearch

SPACE = {
    "u": tune.uniform(-1, 1),
    "q": tune.quniform(0, 1, 0.25),
    "log": tune.loguniform(1e-4, 1e-1),
    "i": tune.randint(0, 4),
    "qi": tune.qrandint(0, 10, 5),
    "li": tune.lograndint(1, 100),
    "c": tune.choice(["a", "b", "c"]),
    "nested": {"v": tune.uniform(5, 6)},
    "const": 42,
}


def check(config):
    assert -1 <= config["u"] < 1
    assert 0 <= config["q"] <= 1 and math.isclose(config["q"] / 0.25, round(config["q"] / 0.25))
    assert 1e-4 <= config["log"] <= 1e-1
    assert config["i"] in {0, 1, 2, 3} and isinstance(config["i"], int)
    assert config["qi"] in {0, 5, 10}
    assert 1 <= config["li"] < 100 and isinstance(config["li"], int)
    assert config["c"] in {"a", "b", "c"}
    assert 5 <= config["nested"]["v"] <= 6


def drive(searcher, n=40):
    """Suggest/complete ``n`` trials (score: -(u - 0.5)^2); returns the configs."""
    configs = []
    for i in range(n):
        suggestion = searcher.suggest(f"t{i}")
        assert isinstance(suggestion, dict)
        config = {**suggestion, "const": 42}
        check(config)
        configs.append(config)
        searcher.on_trial_result(f"t{i}", {"score": 0.0, "training_iteration": 1})
        searcher.on_trial_complete(f"t{i}", {"score": -(config["u"] - 0.5) ** 2})
    return configs


@pytest.mark.parametrize("make", [
    lambda: OptunaSearch(metric="score", mode="max", seed=1),
    lambda: HyperOptSearch(metric="score", mode="max", random_state_seed=1, n_initial_points=10),
], ids=["optuna", "hyperopt"])
def test_searchers_keep_to_the_ranges_and_learn(make):
    searcher = make()
    searcher.set_search_properties(None, None, SPACE)
    configs = drive(searcher, 60)
    first, last = configs[:10], configs[-15:]
    err = lambda cs: sum(abs(c["u"] - 0.5) for c in cs) / len(cs)  # noqa: E731
    assert err(last) < err(first)  # the model moves toward u = 0.5


def test_searchers_take_points_to_evaluate_first():
    optuna = OptunaSearch(metric="score", mode="max", points_to_evaluate=[{"u": 0.1, "c": "b"}])
    optuna.set_search_properties(None, None, {"u": tune.uniform(0, 1), "c": tune.choice("abc")})
    assert optuna.suggest("t0") == {"u": 0.1, "c": "b"}
    hyper = HyperOptSearch(metric="score", mode="max", points_to_evaluate=[{"u": 0.3, "c": "c"}])
    hyper.set_search_properties(None, None, {"u": tune.uniform(0, 1), "c": tune.choice("abc")})
    assert hyper.suggest("t0") == {"u": 0.3, "c": "c"}


def test_searchers_refuse_what_they_cannot_sample():
    with pytest.raises(ValueError, match="grid_search"):
        OptunaSearch(space={"x": tune.grid_search([1, 2])}, metric="s", mode="min")
    with pytest.raises(ValueError, match="randn"):
        OptunaSearch(space={"x": tune.randn()}, metric="s", mode="min")
    with pytest.raises(ValueError, match="sample_from"):
        HyperOptSearch(space={"x": tune.sample_from(lambda: 1)}, metric="s", mode="min")
    with pytest.raises(ValueError, match="mode"):
        OptunaSearch(metric="s").set_search_properties(None, None, {"x": tune.uniform(0, 1)})


class Counter(Searcher):
    """A real (if simple) searcher: configs {"k": 0}, {"k": 1}, ... up to ``limit``."""

    def __init__(self, limit):
        super().__init__(metric="score", mode="max")
        self.limit, self.next, self.completed = limit, 0, []

    def suggest(self, trial_id):
        if self.next >= self.limit:
            return Searcher.FINISHED
        self.next += 1
        return {"k": self.next - 1}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, result))


def test_concurrency_limiter_holds_back_suggestions():
    limiter = ConcurrencyLimiter(Counter(10), max_concurrent=2)
    assert limiter.suggest("a") == {"k": 0} and limiter.suggest("b") == {"k": 1}
    assert limiter.suggest("c") is None
    limiter.on_trial_complete("a", {"score": 1})
    assert limiter.suggest("c") == {"k": 2}
    batched = ConcurrencyLimiter(Counter(10), max_concurrent=2, batch=True)
    batched.suggest("a"), batched.suggest("b")
    batched.on_trial_complete("a", {"score": 1})
    assert batched.suggest("c") is None  # the batch is not over
    batched.on_trial_complete("b", {"score": 1})
    assert batched.suggest("c") == {"k": 2}


def test_repeater_repeats_and_reports_the_mean():
    inner = Counter(5)
    repeater = Repeater(inner, repeat=3)
    configs = [repeater.suggest(f"t{i}") for i in range(4)]
    assert configs[:3] == [{"k": 0, "__trial_index__": i} for i in range(3)]
    assert configs[3] == {"k": 1, "__trial_index__": 0}
    for i, score in enumerate([1.0, 2.0, 6.0]):
        repeater.on_trial_complete(f"t{i}", {"score": score})
    assert inner.completed == [("t0", {"score": 3.0})]


# ---------------------------------------------------------------------- in a Tuner
def _spans(results):
    """(first result's time, last result's time) of each trial."""
    import json
    import os

    out = []
    for r in results:
        rows = [json.loads(x) for x in open(os.path.join(r.path, "result.json"))]
        out.append((rows[0]["start"], rows[-1]["start"] + 0.2))
    return out


def _max_overlap(spans):
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    now = best = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


def _fit(ex, tmp_path, search_alg, space, num_samples, trainable=None):
    from _tune_trainables import counting

    return tune.Tuner(trainable or counting, param_space=space, executor=ex,
                      tune_config=tune.TuneConfig(metric="score", mode="max",
                                                  num_samples=num_samples,
                                                  search_alg=search_alg),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()


@pytest.mark.timeout(180)
def test_hyperopt_and_limiter_run_trials_in_a_tuner(native_ex, tmp_path):
    space = {"n": 3, "sleep": 0.5, "u": tune.uniform(-1, 1), "c": tune.choice(["a", "b"])}
    limited = ConcurrencyLimiter(HyperOptSearch(random_state_seed=0), max_concurrent=1)
    results = _fit(native_ex, tmp_path, limited, space, num_samples=4)
    assert len(results) == 4 and results.num_errors == 0
    for r in results:
        assert -1 <= r.config["u"] < 1 and r.config["c"] in ("a", "b")
        assert r.config["n"] == 3 and r.metrics["training_iteration"] == 3
    assert len({r.config["u"] for r in results}) == 4
    assert _max_overlap(_spans(results)) == 1  # the limiter let one trial run at a time
    free = _fit(native_ex, tmp_path, HyperOptSearch(random_state_seed=0), space, num_samples=4)
    assert _max_overlap(_spans(free)) == 2  # without it both CPUs are used


@pytest.mark.timeout(180)
def test_repeater_runs_each_config_repeatedly_in_a_tuner(native_ex, tmp_path):
    from _tune_trainables import quadratic

    inner = OptunaSearch(seed=0)
    space = {"x": tune.uniform(-1, 1), "y": 0.0}
    results = _fit(native_ex, tmp_path, Repeater(inner, repeat=3), space, num_samples=6,
                   trainable=quadratic)
    assert len(results) == 6 and results.num_errors == 0
    configs = [r.config for r in results]
    assert [c["__trial_index__"] for c in configs] == [0, 1, 2, 0, 1, 2]
    assert configs[0]["x"] == configs[1]["x"] == configs[2]["x"] != configs[3]["x"]
    # optuna was told each group once, with the mean score of its three trials
    done = inner._study.trials
    assert len(done) == 2 and all(t.state.name == "COMPLETE" for t in done)
    assert done[0].value == pytest.approx(results[0].metrics["score"])
