"""Ctrl-C (a real SIGINT to a driver process) stops an experiment cleanly: the
driver exits by itself, no trial process is left, and the experiment restores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from _backend_support import poll_until

DRIVER = textwrap.dedent("""
    import sys
    import fedexec
    from fedexec import tune
    from _tune_trainables import checkpointing

    storage, mode = sys.argv[1], sys.argv[2]
    with fedexec.Executor(num_cpus=2) as ex:
        if mode == "start":
            space = {"n": 40, "sleep": 0, "i": tune.grid_search([0, 1, 2])}
            tuner = tune.Tuner(tune.with_parameters(slow, delay=0.1), param_space=space,
                               executor=ex, run_config=tune.RunConfig(
                                   storage_path=storage, name="exp", verbose=1))
        else:
            tuner = tune.Tuner.restore(storage + "/exp", tune.with_parameters(slow, delay=0),
                                       executor=ex)
        results = tuner.fit()
        print("RESULTS", sorted(r.metrics.get("count", 0) for r in results), flush=True)
""")
SLOW = textwrap.dedent("""
    import time
    from _tune_trainables import checkpointing
    from fedexec import tune

    def slow(config, delay=0.1):
        orig = tune.report
        def report(metrics, checkpoint=None):
            time.sleep(delay)
            orig(metrics, checkpoint=checkpoint)
        tune.report = report
        try:
            checkpointing(config)
        finally:
            tune.report = orig
""")


@pytest.mark.timeout(180)
def test_sigint_stops_cleanly_and_the_experiment_restores(tmp_path):
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / "driver.py").write_text(SLOW + DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests_dir, str(tmp_path)])}
    storage = tmp_path / "results"
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(storage),
                               "start"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env)
    try:
        checkpoints = lambda: [d for _, dirs, _ in os.walk(storage) for d in dirs  # noqa: E731
                               if d.startswith("checkpoint_")]
        assert poll_until(lambda: len(checkpoints()) >= 4, timeout=90)
        children = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    assert "Experiment interrupted" in out and "Traceback" not in out, out
    counts = [int(x) for x in out.split("RESULTS")[1].strip(" []\n").split(",")]
    assert max(counts) < 40  # stopped part way
    assert poll_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                      for p in children), timeout=30)
    began = time.monotonic()
    again = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(storage),
                            "restore"], capture_output=True, text=True, env=env, timeout=150)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "RESULTS [40, 40, 40]" in again.stdout
    assert time.monotonic() - began < 150
    for trial_dir in (storage / "exp").iterdir():
        if trial_dir.is_dir():  # resumed from its checkpoint: counts go on, never restart
            rows = [json.loads(x) for x in open(trial_dir / "result.json")]
            assert [r["count"] for r in rows] == list(range(1, 41))
