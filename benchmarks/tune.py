"""fedexec.tune side by side with Ray Tune and plain Optuna (issue 13).

Usage::

    python benchmarks/tune.py [--only T1,T2,T3,T4] [--systems fedexec,ray,optuna]
                              [--quick] [--json out.json] [--timeout SECONDS]

Cases (targets from the issue):

    T1  1,000 trivial trials, one report each -> trials/s
        (fedexec >= 20x Ray Tune, within 10x of plain Optuna; trials in worker processes)
    T2  16 trials x 200 reports, default loggers on -> results/s  (>= 2,000/s)
    T3  100 trials with OptunaSearch on a cheap objective -> wall time  (<= 2 s)
    T4  examples/tune_digits.py (ConvNet on digits, ASHA, 30 samples) -> wall time and
        best accuracy  (faster than Ray Tune, equal accuracy)

Systems: ``fedexec`` (``Executor(num_cpus=2)``, native backend), ``ray`` (Ray Tune,
``ray.init(num_cpus=2)``), ``optuna`` (plain Optuna in one process: the floor; T1
with ``RandomSampler``, T2 as ``trial.report`` calls, T3 with TPE as OptunaSearch
uses). Both tuners run with their defaults (actor reuse for function trainables,
JSON/CSV/TensorBoard loggers on) and with a runtime already started: the time is
``Tuner.fit()`` alone. Each (system, case) runs in a child process of its own;
``--quick`` divides the sizes by 5 (T4: 10 samples).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _env import child_env  # noqa: E402  (needs HERE on sys.path)

MARK = "@@RESULT@@ "
CASES = ("T1", "T2", "T3", "T4")
SYSTEMS = ("fedexec", "ray", "optuna")


def sizes(quick: bool, system: str) -> dict[str, int]:
    """The sizes of the cases. Ray Tune runs T1 and T3 with fewer trials (env
    ``TUNE_BENCH_RAY_T1``/``_T3``, default 50 and 20): at the few trials per second
    it manages on 2 cores, 1,000 trials would take most of an hour; the rate
    (trials/s) and the time per trial are what is compared. ``TUNE_BENCH_T4``
    sets T4's samples for every system (default 30)."""
    d = 5 if quick else 1
    out = {"T1": 1000 // d, "T2_trials": 16, "T2_reports": 200 // d, "T3": 100 // d,
           "T4": int(os.environ.get("TUNE_BENCH_T4", 10 if quick else 30))}
    if system == "ray":
        out["T1"] = min(out["T1"], int(os.environ.get("TUNE_BENCH_RAY_T1", 50)))
        out["T3"] = min(out["T3"], int(os.environ.get("TUNE_BENCH_RAY_T3", 20)))
    return out


# ------------------------------------------------------------------ trainables
def trivial(config: dict[str, Any]) -> None:
    from fedexec import tune

    tune.report({"score": config["x"]})


def trivial_ray(config: dict[str, Any]) -> None:
    from ray import tune

    tune.report({"score": config["x"]})


def make_reporter(report: Any, n: int) -> Any:
    def reporter(config: dict[str, Any]) -> None:
        for i in range(n):
            report({"i": i, "score": config["x"] * i})

    return reporter


def cheap(config: dict[str, Any], report: Any) -> None:
    report({"loss": (config["x"] - 0.3) ** 2 + (config["y"] + 0.1) ** 2})


def _one() -> int:
    return 1


# ------------------------------------------------------------------ systems
class Fedexec:
    name = "fedexec"

    def start(self) -> None:
        import fedexec
        from fedexec import tune

        self.ex = fedexec.Executor(num_cpus=2)
        self.ex.get(self.ex.submit(abs, 1))
        self.tune = tune

    def stop(self) -> None:
        self.ex.shutdown()

    def fit(self, trainable: Any, space: dict[str, Any], storage: str, **tune_kwargs: Any) -> Any:
        tune = self.tune
        return tune.Tuner(trainable, param_space=space, executor=self.ex,
                          tune_config=tune.TuneConfig(**tune_kwargs),
                          run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()

    def report(self) -> Any:
        return self.tune.report

    def optuna_search(self, **kw: Any) -> Any:
        from fedexec.tune.search.optuna import OptunaSearch

        return OptunaSearch(**kw)

    def asha(self, **kw: Any) -> Any:
        return self.tune.schedulers.ASHAScheduler(**kw)


class Ray(Fedexec):
    name = "ray"

    def start(self) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        from ray import tune

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.get(ray.remote(_one).remote())
        self.ray, self.tune = ray, tune

    def stop(self) -> None:
        self.ray.shutdown()

    def fit(self, trainable: Any, space: dict[str, Any], storage: str, **tune_kwargs: Any) -> Any:
        tune = self.tune
        return tune.Tuner(trainable, param_space=space,
                          tune_config=tune.TuneConfig(**tune_kwargs),
                          run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()

    def optuna_search(self, **kw: Any) -> Any:
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(**kw)

    def asha(self, **kw: Any) -> Any:
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(**kw)


# ------------------------------------------------------------------ cases
def case_t1(system: Any, n: int, storage: str) -> dict[str, Any]:
    if system is None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        t0 = time.perf_counter()
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=n)
        wall = time.perf_counter() - t0
        return {"trials/s": n / wall, "wall_s": wall, "trials": len(study.trials)}
    trainable = trivial if system.name == "fedexec" else trivial_ray
    t0 = time.perf_counter()
    results = system.fit(trainable, {"x": system.tune.uniform(0, 1)}, storage, num_samples=n)
    wall = time.perf_counter() - t0
    done = sum(1 for r in results if r.error is None and "score" in r.metrics)
    return {"trials/s": n / wall, "wall_s": wall, "trials": done}


def case_t2(system: Any, trials: int, reports: int, storage: str) -> dict[str, Any]:
    total = trials * reports
    if system is None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study()

        def objective(trial: Any) -> float:
            x = trial.suggest_float("x", 0, 1)
            for i in range(reports):
                trial.report(x * i, i)
            return x

        t0 = time.perf_counter()
        study.optimize(objective, n_trials=trials)
        wall = time.perf_counter() - t0
        return {"results/s": total / wall, "wall_s": wall, "results": total}
    t0 = time.perf_counter()
    results = system.fit(make_reporter(system.report(), reports),
                         {"x": system.tune.uniform(0, 1)}, storage, num_samples=trials)
    wall = time.perf_counter() - t0
    got = sum(int(r.metrics.get("training_iteration", 0)) for r in results)
    rows = sum(1 for r in results for _ in open(os.path.join(r.path, "result.json")))
    return {"results/s": total / wall, "wall_s": wall, "results": got, "result.json rows": rows}


def case_t3(system: Any, n: int, storage: str) -> dict[str, Any]:
    if system is None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))

        def objective(trial: Any) -> float:
            x, y = trial.suggest_float("x", -1, 1), trial.suggest_float("y", -1, 1)
            return (x - 0.3) ** 2 + (y + 0.1) ** 2

        t0 = time.perf_counter()
        study.optimize(objective, n_trials=n)
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "best_loss": study.best_value, "trials": n}
    report = system.report()
    space = {"x": system.tune.uniform(-1, 1), "y": system.tune.uniform(-1, 1)}

    def objective(config: dict[str, Any]) -> None:
        cheap(config, report)

    t0 = time.perf_counter()
    results = system.fit(objective, space, storage, num_samples=n, metric="loss", mode="min",
                         search_alg=system.optuna_search(seed=0))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "best_loss": results.get_best_result().metrics["loss"],
            "trials": len(results), "s/trial": wall / n}


def case_t4(system: Any, n: int, storage: str) -> dict[str, Any]:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))
    # workers do not have examples/ on their path: ship the module's code by value
    import cloudpickle
    import tune_digits

    cloudpickle.register_pickle_by_value(tune_digits)
    if system.name == "ray":
        from ray import cloudpickle as ray_cloudpickle

        ray_cloudpickle.register_pickle_by_value(tune_digits)

    space = {"lr": system.tune.choice([0.001, 0.01, 0.05, 0.1]),
             "momentum": system.tune.uniform(0.1, 0.9)}
    scheduler = system.asha(max_t=tune_digits.MAX_EPOCHS, grace_period=1, reduction_factor=2)
    t0 = time.perf_counter()
    results = system.fit(tune_digits.make_trainable(system.report()), space, storage,
                         num_samples=n, metric="mean_accuracy", mode="max",
                         scheduler=scheduler)
    wall = time.perf_counter() - t0
    best = results.get_best_result()
    epochs = sum(int(r.metrics.get("training_iteration", 0)) for r in results)
    return {"wall_s": wall, "best_accuracy": best.metrics["mean_accuracy"], "epochs": epochs,
            "samples": n}


def child(system_name: str, case: str, quick: bool) -> None:
    out: dict[str, Any] = {"system": system_name, "case": case}
    if system_name == "fedexec":
        import fedexec

        out["fedexec_from"] = os.path.dirname(os.path.dirname(fedexec.__file__))
    size = sizes(quick, system_name)
    system = {"fedexec": Fedexec, "ray": Ray}.get(system_name)
    instance = system() if system else None
    storage = tempfile.mkdtemp(prefix="tune_bench_")
    try:
        if instance is None and case == "T4":
            out.update(status="n/a")
        else:
            if instance is not None:
                instance.start()
            if case == "T1":
                out["values"] = case_t1(instance, size["T1"], storage)
            elif case == "T2":
                out["values"] = case_t2(instance, size["T2_trials"], size["T2_reports"], storage)
            elif case == "T3":
                out["values"] = case_t3(instance, size["T3"], storage)
            else:
                out["values"] = case_t4(instance, size["T4"], storage)
            out["status"] = "ok"
    except Exception:
        out.update(status="error", error=traceback.format_exc(limit=6))
    sys.stdout.write(MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
    if instance is not None:
        try:
            instance.stop()
        except Exception:
            pass


# ------------------------------------------------------------------ driver
def run_child(system: str, case: str, quick: bool, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", system, case]
    if quick:
        cmd.append("--quick")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              start_new_session=True, env=child_env())
    except subprocess.TimeoutExpired:
        return {"system": system, "case": case, "status": "timeout"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])  # type: ignore[no-any-return]
    return {"system": system, "case": case, "status": "error",
            "error": (proc.stderr or proc.stdout)[-2000:]}


def available(system: str) -> bool:
    module = {"fedexec": "fedexec", "ray": "ray", "optuna": "optuna"}[system]
    import importlib.util

    return importlib.util.find_spec(module) is not None


def render(results: list[dict[str, Any]]) -> str:
    lines = ["| case | system | values |", "|---|---|---|"]
    for r in results:
        if r.get("status") != "ok":
            detail = r.get("status", "?")
            if r.get("error"):
                detail += ": " + r["error"].strip().splitlines()[-1][:120]
            lines.append(f"| {r['case']} | {r['system']} | {detail} |")
            continue
        values = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in r["values"].items())
        lines.append(f"| {r['case']} | {r['system']} | {values} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "CASE"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.quick)
        return
    results = []
    for case in args.only.split(","):
        for system in args.systems.split(","):
            if not available(system):
                print(f"skipping {system}: not installed", flush=True)
                continue
            began = time.time()
            result = run_child(system, case, args.quick, args.timeout)
            print(f"{case} {system}: {result.get('status')} {result.get('values', '')} "
                  f"{result.get('fedexec_from', '')} "
                  f"({time.time() - began:.0f} s)", flush=True)
            results.append(result)
    print()
    print(render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load": os.getloadavg(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
