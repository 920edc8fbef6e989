"""DQN, A2C, A3C and ES by name: their tuned examples through ``fedexec rl`` (as a
user types it, in subprocesses) and ``tune.run``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from fedexec import tune
from fedexec.rl import get_algorithm_class


def fedexec_rl(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedexec", "rl", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_names_resolve_to_the_algorithms():
    assert [get_algorithm_class(n).__name__ for n in ("DQN", "a2c", "A3C", "es")] == \
        ["DQN", "A2C", "A3C", "ES"]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("example,algo", [("cartpole-dqn", "DQN"), ("cartpole-a2c", "A2C"),
                                          ("cartpole-es", "ES")])
def test_tuned_example_runs_as_written_then_evaluates(example, algo, tmp_path):
    listed = fedexec_rl("example", "list")
    assert listed.returncode == 0 and re.search(rf"^{example}\s", listed.stdout, re.M)
    out = fedexec_rl("example", "run", example, "--stop", '{"training_iteration": 1}',
                     "--storage-path", str(tmp_path), "--seed", "0")
    assert out.returncode == 0, out.stderr
    assert len([line for line in out.stdout.splitlines() if line.startswith("iter ")]) == 1
    final = re.search(r"final checkpoint: (\S+)", out.stdout)
    assert final is not None, out.stdout
    with open(os.path.join(final.group(1), "algorithm_state.json")) as f:
        assert json.load(f)["algorithm"] == algo
    ev = fedexec_rl("evaluate", final.group(1), "--episodes", "2")
    assert ev.returncode == 0, ev.stderr
    assert re.search(r"mean reward over 2 episodes: [\d.]+", ev.stdout)


SMALL = {
    "DQN": {"num_env_runners": 0, "model": {"fcnet_hiddens": [8]}, "hiddens": [8],
            "num_steps_sampled_before_learning_starts": 100,
            "min_sample_timesteps_per_iteration": 200},
    "A2C": {"num_env_runners": 0, "train_batch_size": 100, "model": {"fcnet_hiddens": [8]}},
    "A3C": {"num_env_runners": 1, "train_batch_size": 100, "rollout_fragment_length": 20,
            "model": {"fcnet_hiddens": [8]}},
    "ES": {"num_env_runners": 1, "noise_size": 100_000, "episodes_per_batch": 4,
           "train_batch_size": 100, "model": {"fcnet_hiddens": [8]}},
}


@pytest.mark.timeout(240)
def test_tune_runs_each_algorithm_by_name(native_ex, tmp_path):
    for name, config in SMALL.items():
        analysis = tune.run(name, config={"env": "CartPole-v1", "seed": 0, **config},
                            stop={"training_iteration": 1}, storage_path=str(tmp_path),
                            name=name.lower(), verbose=0, executor=native_ex)
        [trial] = analysis.trials
        result = trial.last_result
        assert result["training_iteration"] == 1, name
        assert result["timesteps_total"] >= 100, name
