"""End to end: trials as actors on the backends, their files, checkpoints,
failures and retries, restore, resources, reuse, the registry and trainers,
stoppers, and the classic API."""

from __future__ import annotations

import csv
import json
import os
import struct
import time

import pytest

import fedexec
from _tune_trainables import (
    Scripted,
    StandInTrainer,
    checkpointing,
    counting,
    failing,
    quadratic,
    stamped,
)
from fedexec import tune

pytestmark = pytest.mark.timeout(180)
GRID = [-1, -0.5, 0, 0.5, 1]


def run_config(tmp_path, **kwargs):
    return tune.RunConfig(storage_path=str(tmp_path), verbose=0, **kwargs)


# ---------------------------------------------------------------------- every backend
def test_grid_runs_as_actors_and_writes_every_file(any_ex, tmp_path):
    tuner = tune.Tuner(counting, param_space={"n": tune.grid_search([1, 3]), "sleep": 0},
                       executor=any_ex, run_config=run_config(tmp_path, name="exp"))
    results = tuner.fit()
    assert len(results) == 2 and results.num_errors == 0 and results.num_terminated == 2
    driver = os.getpid()
    for result, n in zip(results, [1, 3]):
        m = result.metrics
        assert m["training_iteration"] == n and m["step"] == n - 1 and m["done"] is True
        assert {"time_total_s", "timestamp", "trial_id", "time_this_iter_s"} <= set(m)
        if any_ex.backend != "local":
            assert m["pid"] != driver  # the trial ran in a worker process
        path = result.path
        assert os.path.dirname(path) == str(tmp_path / "exp")
        assert json.load(open(os.path.join(path, "params.json"))) == {"n": n, "sleep": 0}
        lines = [json.loads(x) for x in open(os.path.join(path, "result.json"))]
        assert [x["step"] for x in lines] == list(range(n))
        assert lines[0]["config"] == {"n": n, "sleep": 0}
        rows = list(csv.DictReader(open(os.path.join(path, "progress.csv"))))
        assert [int(r["training_iteration"]) for r in rows] == list(range(1, n + 1))
        events = [f for f in os.listdir(path) if f.startswith("events.out.tfevents")]
        assert len(events) == 1
        assert len(result.metrics_dataframe) == n
    assert tune.Tuner.can_restore(str(tmp_path / "exp"))


def test_failures_retry_from_checkpoints_and_restore_on_every_backend(any_ex, tmp_path):
    # a trial that raises once at count 3 is retried (FailureConfig) from its checkpoint
    # at 2; one that raises every time errs, and Tuner.restore resumes it once fixed
    markers = {True: str(tmp_path / "once"), False: str(tmp_path / "always")}
    space = {"n": 4, "raise_at": 3, "raise_once": tune.grid_search([True, False]),
             "marker": tune.sample_from(lambda spec: markers[spec.config.raise_once])}
    results = tune.Tuner(checkpointing, param_space=space, executor=any_ex,
                         run_config=run_config(tmp_path, name="exp", failure_config=(
                             tune.FailureConfig(max_failures=1)))).fit()
    retried, failed = results
    assert retried.config["raise_once"] and not failed.config["raise_once"]
    assert retried.error is None and retried.metrics["count"] == 4
    assert retried.metrics["resumed"] is True
    rows = [json.loads(x)["count"] for x in open(os.path.join(retried.path, "result.json"))]
    assert rows == [1, 2, 3, 4]  # resumed after 2, not from 0
    assert isinstance(failed.error, ValueError) and failed.metrics["count"] == 2
    assert results.num_errors == 1
    assert open(os.path.join(failed.path, "error.txt")).read().count("Failure #") == 2
    (tmp_path / "always").touch()  # the cause is fixed
    again = tune.Tuner.restore(str(tmp_path / "exp"), checkpointing, resume_errored=True,
                               executor=any_ex).fit()
    assert again.num_errors == 0 and [r.metrics["count"] for r in again] == [4, 4]
    resumed = again[1]
    assert resumed.metrics["resumed"] is True
    rows = [json.loads(x)["count"] for x in open(os.path.join(resumed.path, "result.json"))]
    assert rows == [1, 2, 3, 4]
    fresh = tune.Tuner.restore(str(tmp_path / "exp"), checkpointing, restart_errored=True,
                               executor=any_ex).fit()  # nothing errored any more: no-op
    assert [r.metrics["count"] for r in fresh] == [4, 4]


def test_short_trials_queued_on_actors_on_every_backend(any_ex, tmp_path):
    # more trials than actors: the next ones are queued on the actors (pipelined)
    results = tune.Tuner(stamped, param_space={"i": tune.grid_search(list(range(8)))},
                         executor=any_ex, tune_config=tune.TuneConfig(max_concurrent_trials=1),
                         run_config=run_config(tmp_path)).fit()
    assert results.num_errors == 0 and results.num_terminated == 8
    assert [r.config["i"] for r in results] == list(range(8))
    starts = [r.metrics["start"] for r in results]
    assert starts == sorted(starts)  # one at a time, in order
    for r in results:
        assert len(open(os.path.join(r.path, "result.json")).readlines()) == 1


def test_a_time_budget_keeps_the_results_of_every_trial_that_ran(native_ex, tmp_path):
    # trials queued on actors when the budget ends either ran (their result is kept)
    # or did not start (they stay PENDING, for Tuner.restore)
    results = tune.Tuner(stamped, param_space={"i": tune.grid_search(list(range(3000)))},
                         executor=native_ex, tune_config=tune.TuneConfig(time_budget_s=1.0),
                         run_config=run_config(tmp_path)).fit()
    trials = results._analysis.trials
    done = [t for t in trials if t.status == "TERMINATED"]
    assert done and len(done) < 3000
    assert [t.trial_id for t in done if "start" not in t.last_result] == []
    assert {t.status for t in trials} <= {"TERMINATED", "PENDING", "PAUSED"}


# ---------------------------------------------------------------------- native
def test_classic_grid_program(native_ex, tmp_path):
    analysis = tune.run(quadratic, config={"x": tune.grid_search(GRID), "y": tune.grid_search(
        GRID)}, storage_path=str(tmp_path), executor=native_ex, verbose=0)
    assert len(analysis.trials) == 25
    assert analysis.get_best_config(metric="score", mode="min") == {"x": 0, "y": 0}
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    df = analysis.dataframe()
    assert len(df) == 25 and {"config/x", "config/y", "score", "logdir"} <= set(df.columns)
    assert len(analysis.results) == 25 and len(analysis.results_df) == 25
    best = analysis.get_best_trial("score", "min")
    assert best.last_result["score"] == 0 and best.trial_id in analysis.results
    loaded = tune.ExperimentAnalysis(analysis.experiment_path)  # from the directory alone
    assert loaded.get_best_config(metric="score", mode="min") == {"x": 0, "y": 0}


def test_experiment_state_keeps_any_config_value(native_ex, tmp_path):
    # configs of plain values are saved by the C pickler, others (a lambda, a class of
    # this test) by cloudpickle: both load back from the directory alone
    class Local:
        value = 7

    space = {"fn": tune.grid_search([lambda x: x + 1, abs]), "cls": Local, "n": 1}
    tune.Tuner(counting, param_space=space, executor=native_ex,
               run_config=run_config(tmp_path, name="exp")).fit()
    loaded = tune.ExperimentAnalysis(str(tmp_path / "exp"))
    first, second = loaded.trials
    assert first.config["fn"](1) == 2 and second.config["fn"] is abs
    assert first.config["cls"].value == 7 and first.status == "TERMINATED"


def test_classic_reporting_spellings(native_ex, tmp_path):
    def with_reporter(config, reporter):
        for i in range(3):
            reporter(mean_accuracy=i / 10)

    def with_track(config):
        tune.track.log(mean_accuracy=0.5)
        tune.report({"mean_accuracy": 0.7})

    for fn, last, n in [(with_reporter, 0.2, 3), (with_track, 0.7, 2)]:
        analysis = tune.run(fn, storage_path=str(tmp_path), executor=native_ex, verbose=0,
                            metric="mean_accuracy", mode="max")
        assert analysis.best_result["mean_accuracy"] == last
        assert analysis.trials[0].last_result["training_iteration"] == n
    with pytest.raises(tune.TuneError, match="outside a trial"):
        tune.report(score=1)


def test_class_trainable_keeps_the_best_checkpoints(native_ex, tmp_path):
    scores = [1, 9, 3, 8, 2, 7]
    results = tune.Tuner(
        Scripted, param_space={"scores": scores}, executor=native_ex,
        run_config=run_config(
            tmp_path, stop={"training_iteration": 6},
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="score", checkpoint_frequency=1))).fit()
    (result,) = results
    kept = sorted(d for d in os.listdir(result.path) if d.startswith("checkpoint_"))
    # the two best (iterations 2 and 4: scores 9, 8) and the latest (6)
    assert kept == ["checkpoint_000002", "checkpoint_000004", "checkpoint_000006"]
    assert [m["score"] for _, m in result.best_checkpoints] == [9, 8, 7]
    assert result.checkpoint.path.endswith("checkpoint_000006")
    with result.checkpoint.as_directory() as d:
        assert json.load(open(os.path.join(d, "state.json")))["i"] == 6


def test_function_trainable_rejects_checkpoint_frequency(native_ex, tmp_path):
    with pytest.raises(ValueError, match="class trainables"):
        tune.run(counting, config={"n": 1}, checkpoint_freq=1, executor=native_ex,
                 storage_path=str(tmp_path), verbose=0)


def test_a_failing_trial_never_stops_the_others(native_ex, tmp_path):
    tuner = tune.Tuner(failing, param_space={"fail": tune.grid_search([False, True, False])},
                       executor=native_ex, run_config=run_config(tmp_path))
    results = tuner.fit()
    assert results.num_errors == 1 and results.num_terminated == 2
    (error,) = results.errors
    assert isinstance(error, ValueError) and "on purpose" in str(error)
    assert "on purpose" in open(os.path.join(results[1].path, "error.txt")).read()
    with pytest.raises(tune.TuneError, match="did not complete"):
        tune.run(failing, config={"fail": True}, executor=native_ex, storage_path=str(tmp_path),
                 verbose=0)
    analysis = tune.run(failing, config={"fail": True}, executor=native_ex, verbose=0,
                        storage_path=str(tmp_path), raise_on_failed_trial=False)
    assert analysis.trials[0].status == "ERROR"


def test_killed_trial_is_retried_from_its_last_checkpoint(native_ex, tmp_path):
    config = {"n": 5, "die_at": 3, "marker": str(tmp_path / "died")}
    results = tune.Tuner(checkpointing, param_space=config, executor=native_ex,
                         run_config=run_config(tmp_path, failure_config=tune.FailureConfig(
                             max_failures=1))).fit()
    (result,) = results
    assert os.path.exists(config["marker"])  # the process really died (SIGKILL)
    assert result.error is None and result.metrics["count"] == 5
    assert result.metrics["resumed"] is True  # tune.get_checkpoint() gave the checkpoint
    rows = [json.loads(x) for x in open(os.path.join(result.path, "result.json"))]
    assert [r["count"] for r in rows] == [1, 2, 3, 4, 5]  # resumed after 2, not from 0
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4, 5]


def test_restore_resumes_errored_trials(native_ex, tmp_path):
    marker = tmp_path / "raised"
    space = {"n": 4, "raise_at": tune.grid_search([3, 99]), "marker": str(marker)}
    results = tune.Tuner(checkpointing, param_space=space, executor=native_ex,
                         run_config=run_config(tmp_path, name="exp")).fit()
    assert results.num_errors == 1 and results[0].metrics["count"] == 2
    marker.touch()  # the cause is fixed
    path = str(tmp_path / "exp")
    assert tune.Tuner.can_restore(path)
    restored = tune.Tuner.restore(path, checkpointing, resume_errored=True, executor=native_ex)
    again = restored.fit()
    assert again.num_errors == 0 and [r.metrics["count"] for r in again] == [4, 4]
    assert again[0].metrics["resumed"] is True
    rows = [json.loads(x)["count"] for x in open(os.path.join(again[0].path, "result.json"))]
    assert rows == [1, 2, 3, 4]
    with pytest.raises(tune.TuneError, match="no experiment state"):
        tune.Tuner.restore(str(tmp_path), checkpointing)


class StopAllOnce(tune.Stopper):
    """Ends the whole experiment after 3 results, once (a marker file remembers)."""

    def __init__(self, marker):
        self.marker, self.seen = marker, 0

    def __call__(self, trial_id, result):
        self.seen += 1
        return False

    def stop_all(self):
        if self.seen >= 3 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            return True
        return False


def test_restore_unfinished_trials_or_end_them(native_ex, tmp_path):
    import shutil

    # the run ends with trial 0 (all the CPUs) stopped part way and trial 1 waiting;
    # trial 2 is not made yet
    space = {"n": 10, "sleep": 0.05, "i": tune.grid_search([0, 1, 2])}
    trainable = tune.with_resources(counting, {"cpu": 2})
    first = tune.Tuner(trainable, param_space=space, executor=native_ex,
                       run_config=run_config(tmp_path, name="exp", stop=StopAllOnce(
                           str(tmp_path / "stopped")))).fit()
    assert len(first) == 2 and first[0].metrics["training_iteration"] < 10
    assert "step" not in first[1].metrics
    shutil.copytree(tmp_path / "exp", tmp_path / "copy")
    ended = tune.Tuner.restore(str(tmp_path / "exp"), trainable, resume_unfinished=False,
                               executor=native_ex).fit()
    # trial 1 is ended without running; the search goes on with trial 2
    assert [r.metrics.get("step") for r in ended][1:] == [None, 9]
    assert ended.num_terminated == 3
    resumed = tune.Tuner.restore(str(tmp_path / "copy"), trainable, executor=native_ex).fit()
    assert [r.metrics.get("step") for r in resumed][1:] == [9, 9]  # run to the end
    assert resumed[0].metrics["training_iteration"] == first[0].metrics["training_iteration"]


def test_classic_resume(native_ex, tmp_path):
    marker = tmp_path / "fixed"
    kwargs = dict(config={"n": 3, "raise_at": 2, "marker": str(marker)}, name="exp",
                  storage_path=str(tmp_path), executor=native_ex, verbose=0,
                  raise_on_failed_trial=False)
    assert tune.run(checkpointing, **kwargs).trials[0].status == "ERROR"
    marker.touch()
    analysis = tune.run(checkpointing, resume="ERRORED_ONLY", **kwargs)
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED" and trial.last_result["count"] == 3
    assert trial.last_result["resumed"] is True
    with pytest.raises(tune.TuneError, match="no experiment to resume"):
        tune.run(checkpointing, resume=True, **{**kwargs, "name": "missing"})


def test_best_trial_by_scope(tmp_path):
    from fedexec.tune.experiment.trial import Trial
    from fedexec.tune.resources import normalize

    def trial(i, scores):
        t = Trial(f"t{i}", "f", {"i": i}, str(i), str(tmp_path / str(i)), normalize(None), f"f{i}")
        for s in scores:
            t.update_last_result({"score": s})
        return t

    # last: t0 (5); all (max ever): t1 (9); avg: t2 (4.33)
    analysis = tune.ExperimentAnalysis(str(tmp_path), [trial(0, [1, 1, 5]), trial(1, [9, 0, 0]),
                                                       trial(2, [4, 4.5, 4.5])])
    assert analysis.get_best_config("score", "max", scope="last") == {"i": 0}
    assert analysis.get_best_config("score", "max", scope="all") == {"i": 1}
    assert analysis.get_best_config("score", "max", scope="avg") == {"i": 2}
    assert analysis.get_best_config("score", "min", scope="all") == {"i": 1}  # 0 is lowest
    assert analysis.get_best_config("score", "max", scope="last-5-avg") == {"i": 2}
    with pytest.raises(ValueError, match="scope"):
        analysis.get_best_config("score", "max", scope="first")


def test_trials_share_the_cluster_by_their_resources(native_ex, tmp_path):
    def spans(results):
        out = []
        for r in results:
            rows = [json.loads(x) for x in open(os.path.join(r.path, "result.json"))]
            out.append((rows[0]["start"], rows[-1]["start"] + 0.3))
        return out

    def max_overlap(intervals):
        events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
        now = best = 0
        for _, delta in events:
            now += delta
            best = max(best, now)
        return best

    space = {"n": 2, "sleep": 0.3, "i": tune.grid_search(list(range(4)))}
    whole = tune.Tuner(tune.with_resources(counting, {"cpu": 2}), param_space=space,
                       executor=native_ex, run_config=run_config(tmp_path)).fit()
    assert max_overlap(spans(whole)) == 1  # 2 CPUs each on a 2-CPU cluster: one at a time
    capped = tune.Tuner(counting, param_space=space, executor=native_ex,
                        tune_config=tune.TuneConfig(max_concurrent_trials=1),
                        run_config=run_config(tmp_path)).fit()
    assert max_overlap(spans(capped)) == 1
    with pytest.raises(ValueError, match="lower the trial's resources"):
        tune.Tuner(tune.with_resources(counting, {"cpu": 3}), param_space=space,
                   executor=native_ex, run_config=run_config(tmp_path)).fit()


def test_actors_are_reused_and_parameters_shared(native_ex, tmp_path):
    import numpy as np

    data = np.arange(100_000)

    def uses_data(config, data=None):
        tune.report(total=int(data.sum()), pid=os.getpid())

    space = {"i": tune.grid_search(list(range(6)))}
    results = tune.Tuner(tune.with_parameters(uses_data, data=data), param_space=space,
                         executor=native_ex, run_config=run_config(tmp_path)).fit()
    assert {r.metrics["total"] for r in results} == {int(data.sum())}
    assert len({r.metrics["pid"] for r in results}) <= 2  # 6 trials in at most 2 actors
    fresh = tune.Tuner(tune.with_parameters(uses_data, data=data), param_space=space,
                       tune_config=tune.TuneConfig(reuse_actors=False),
                       executor=native_ex, run_config=run_config(tmp_path)).fit()
    assert len({r.metrics["pid"] for r in fresh}) == 6  # one actor (process) per trial


def test_registered_names_and_trainer_objects(native_ex, tmp_path):
    tune.register_trainable("scripted_for_test", Scripted)
    results = tune.Tuner("scripted_for_test", param_space={"scores": [5]}, executor=native_ex,
                         run_config=run_config(tmp_path, stop={"training_iteration": 2})).fit()
    assert results[0].metrics["score"] == 5 and results[0].metrics["training_iteration"] == 2
    with pytest.raises(ValueError, match="unknown trainable 'PPO_not_registered'"):
        tune.Tuner("PPO_not_registered")
    trainer = StandInTrainer({"lr": 1.0, "scale": 3})
    results = tune.Tuner(trainer, param_space={"train_loop_config": {
        "lr": tune.grid_search([0.1, 0.2])}}, executor=native_ex,
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=run_config(tmp_path)).fit()
    assert [round(r.metrics["loss"], 6) for r in results] == [0.3, 0.6]
    assert results.get_best_result().config == {"train_loop_config": {"lr": 0.1}}


class SlowDriver(tune.Callback):
    """Makes the driver take 0.3 s over each result (as a busy driver would)."""

    def __init__(self):
        self.handled_at = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        time.sleep(0.3)
        self.handled_at[trial.trial_id] = time.time()


def test_the_next_trial_starts_without_waiting_for_the_driver(native_ex, tmp_path):
    slow = SlowDriver()
    results = tune.Tuner(stamped, param_space={"i": tune.grid_search(list(range(5)))},
                         executor=native_ex,
                         tune_config=tune.TuneConfig(max_concurrent_trials=1),
                         run_config=run_config(tmp_path, callbacks=[slow])).fit()
    assert results.num_errors == 0 and len({r.metrics["pid"] for r in results}) == 1
    starts = [r.metrics["start"] for r in results]
    handled = [slow.handled_at[r.metrics["trial_id"]] for r in results]
    assert starts == sorted(starts)  # one actor: one trial after the other
    # trial i+1 ran on the actor while the driver was still busy with trial i's result
    early = sum(1 for i in range(4) if starts[i + 1] < handled[i])
    assert early >= 3, (starts, handled)
    for r in results:
        assert len(open(os.path.join(r.path, "result.json")).readlines()) == 1


def test_queued_trials_behind_long_ones_run_once_each(native_ex, tmp_path):
    # trials that report several times: a trial queued behind one is turned away and
    # started later; every trial still runs once, with all its files
    space = {"n": 3, "sleep": 0.05, "i": tune.grid_search(list(range(5)))}
    results = tune.Tuner(counting, param_space=space, executor=native_ex,
                         tune_config=tune.TuneConfig(max_concurrent_trials=1),
                         run_config=run_config(tmp_path)).fit()
    assert results.num_errors == 0 and results.num_terminated == 5
    for r in results:
        rows = [json.loads(x) for x in open(os.path.join(r.path, "result.json"))]
        assert [x["step"] for x in rows] == [0, 1, 2]
        assert len([f for f in os.listdir(r.path) if f.startswith("events.out")]) == 1
    assert [t.num_failures for t in results._analysis.trials] == [0] * 5


def test_errors_and_deaths_stay_with_their_own_trials(native_ex, tmp_path):
    fails = [False, True, False, True, False]
    results = tune.Tuner(failing, param_space={"fail": tune.grid_search(fails)},
                         executor=native_ex,
                         tune_config=tune.TuneConfig(max_concurrent_trials=1),
                         run_config=run_config(tmp_path)).fit()
    assert [r.error is not None for r in results] == fails
    assert all("on purpose" in str(r.error) for r in results if r.error is not None)
    # a trial whose process is killed: the trials queued behind it are not charged
    space = {"n": 3, "die_at": tune.grid_search([2, 0, 0, 0]), "marker": str(tmp_path / "m")}
    results = tune.Tuner(checkpointing, param_space=space, executor=native_ex,
                         tune_config=tune.TuneConfig(max_concurrent_trials=1),
                         run_config=run_config(tmp_path, failure_config=tune.FailureConfig(
                             max_failures=1))).fit()
    assert os.path.exists(tmp_path / "m") and results.num_errors == 0
    assert [r.metrics["count"] for r in results] == [3, 3, 3, 3]
    assert [t.num_failures for t in results._analysis.trials] == [1, 0, 0, 0]


def test_stoppers(native_ex, tmp_path):
    class StopAllAfter(tune.Stopper):
        def __init__(self):
            self.seen = 0

        def __call__(self, trial_id, result):
            self.seen += 1
            return False

        def stop_all(self):
            return self.seen >= 3

    base = {"scores": [1]}
    by_fn = tune.Tuner(Scripted, param_space=base, executor=native_ex, run_config=run_config(
        tmp_path, stop=lambda tid, r: r["training_iteration"] >= 3)).fit()
    assert by_fn[0].metrics["training_iteration"] == 3
    all_stopped = tune.Tuner(Scripted, param_space=base, executor=native_ex,
                             run_config=run_config(tmp_path, stop=StopAllAfter())).fit()
    assert all_stopped[0].metrics["training_iteration"] == 3
    budget = tune.Tuner(Scripted, param_space={"scores": [1], "delay": 0.05},
                        executor=native_ex, tune_config=tune.TuneConfig(time_budget_s=1.0),
                        run_config=run_config(tmp_path)).fit()
    assert 1 <= budget[0].metrics["training_iteration"] < 100


def test_result_grid(native_ex, tmp_path):
    results = tune.Tuner(quadratic, param_space={"x": tune.grid_search(GRID), "y": 1},
                         executor=native_ex,
                         tune_config=tune.TuneConfig(metric="score", mode="min"),
                         run_config=run_config(tmp_path)).fit()
    assert results.get_best_result().config == {"x": 0, "y": 1}
    assert results.get_best_result("score", "max").config["x"] in (-1, 1)
    df = results.get_dataframe()
    assert len(df) == 5 and "config/x" in df.columns
    assert [r.config["x"] for r in results] == GRID and len(results) == 5
    with pytest.raises(RuntimeError, match="no trial reported"):
        results.get_best_result("missing", "min")


def test_event_files_are_valid_records(native_ex, tmp_path):
    from fedexec.tune.logger.tfevents import _crc32c_python, _masked, crc32c

    assert crc32c(b"123456789") == _crc32c_python(b"123456789") == 0xE3069283  # check value
    results = tune.Tuner(counting, param_space={"n": 2}, executor=native_ex,
                         run_config=run_config(tmp_path)).fit()
    path = results[0].path
    (name,) = [f for f in os.listdir(path) if f.startswith("events.out.tfevents")]
    data = open(os.path.join(path, name), "rb").read()
    records, i = [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        record = data[i + 12:i + 12 + n]
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == _masked(data[i:i + 8])
        assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == _masked(record)
        records.append(record)
        i += 12 + n + 4
    assert i == len(data) and len(records) == 3  # the file-version event and 2 results
    assert b"brain.Event:2" in records[0] and b"tune/step" in records[2]


def test_spark_has_no_actors_for_trials():
    assert "actors" not in fedexec.backends.capabilities("spark")
