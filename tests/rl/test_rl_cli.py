"""``fedexec rl`` end to end, in subprocesses as a user types it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def fedexec_rl(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedexec", "rl", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "default"})


SMALL = ('{"num_env_runners": 1, "train_batch_size": 300, "minibatch_size": 100, '
         '"num_epochs": 1, "model": {"fcnet_hiddens": [8]}}')


@pytest.mark.timeout(300)
def test_train_then_evaluate_the_final_checkpoint(tmp_path):
    out = fedexec_rl("train", "--run", "PPO", "--env", "CartPole-v1", "--config", SMALL,
                     "--stop", '{"training_iteration": 2}', "--checkpoint-freq", "1",
                     "--storage-path", str(tmp_path), "--name", "cli")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("iter ")]
    assert len(lines) == 2 and "steps" in lines[0] and "return_mean" in lines[0]
    final = re.search(r"final checkpoint: (\S+)", out.stdout)
    assert final is not None, out.stdout
    path = final.group(1)
    assert path == str(tmp_path / "cli" / "checkpoint_000002")
    assert os.path.exists(os.path.join(path, "algorithm_state.json"))
    assert os.path.exists(tmp_path / "cli" / "checkpoint_000001")
    with open(tmp_path / "cli" / "result.json") as f:
        assert len(f.readlines()) == 2
    ev = fedexec_rl("evaluate", path, "--episodes", "3")
    assert ev.returncode == 0, ev.stderr
    assert len(re.findall(r"^episode \d: reward [\d.]+", ev.stdout, re.M)) == 3
    assert re.search(r"mean reward over 3 episodes: [\d.]+", ev.stdout)


@pytest.mark.timeout(300)
def test_train_from_a_classic_tuned_example_file(tmp_path):
    yaml_file = tmp_path / "exp.yaml"
    yaml_file.write_text(
        "tiny-cartpole:\n"
        "    env: CartPole-v1\n"
        "    run: PPO\n"
        "    stop:\n"
        "        training_iteration: 1\n"
        "    config:\n"
        "        framework: tf\n"
        "        num_workers: 1\n"
        "        num_sgd_iter: 1\n"
        "        sgd_minibatch_size: 100\n"
        "        train_batch_size: 300\n"
        "        observation_filter: MeanStdFilter\n"
        "        enable_connectors: true\n"
        "        model:\n"
        "            fcnet_hiddens: [8]\n"
        "            vf_share_layers: true\n")
    out = fedexec_rl("train", "-f", str(yaml_file), "--storage-path", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "runs this config on torch" in out.stderr
    assert out.stdout.count("\niter ") == 1
    assert f"final checkpoint: {tmp_path / 'tiny-cartpole' / 'checkpoint_000001'}" in out.stdout


@pytest.mark.timeout(300)
def test_example_list_and_run_with_a_short_stop(tmp_path):
    listing = fedexec_rl("example", "list")
    assert listing.returncode == 0
    assert re.search(r"^cartpole-ppo\s+PPO on CartPole-v1", listing.stdout, re.M)
    assert re.search(r"^pendulum-ppo\s+", listing.stdout, re.M)
    out = fedexec_rl("example", "run", "cartpole-ppo", "--stop", '{"training_iteration": 1}',
                     "--storage-path", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert re.search(r"iter\s+1\s+steps\s+4000", out.stdout)
    assert (tmp_path / "cartpole-ppo" / "checkpoint_000001" / "algorithm_state.json").exists()
    out = fedexec_rl("example", "run", "pendulum-ppo", "--stop", '{"training_iteration": 1}',
                     "--storage-path", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert re.search(r"iter\s+1\s+steps\s+520", out.stdout)  # 20 envs x ceil(512 / 20)


def test_mistakes_are_reported_with_what_to_do(tmp_path):
    out = fedexec_rl("train", "--algo", "NOPE", "--env", "CartPole-v1")
    assert out.returncode == 2 and "unknown algorithm 'NOPE'" in out.stderr
    out = fedexec_rl("example", "run", "nope")
    assert out.returncode == 2 and "cartpole-ppo" in out.stderr
    out = fedexec_rl("evaluate", str(tmp_path))
    assert out.returncode == 2 and "not a fedexec.rl checkpoint" in out.stderr
