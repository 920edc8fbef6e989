"""fedexec.rl PPO side by side with RLlib 2.60 PPO and Stable-Baselines3 PPO (issue 16).

Usage::

    python benchmarks/rl.py [--systems fedexec,rllib,sb3] [--seeds 0] [--max-steps 300000]
                            [--python-bench /tmp/venv/bin/python] [--es] [--json out.json]

CartPole-v1, the same seeds, each system with its own tuned settings for CartPole:

    fedexec  the classic tuned example ``fedexec/rl/examples/cartpole-ppo.yaml`` as
             written (1 env runner actor, MeanStdFilter, [32] linear, 6 epochs, lr 3e-4)
    rllib    RLlib 2.60's tuned example ``tuned_examples/ppo/cartpole_ppo.py`` (same
             hyperparameters, new API stack), with 1 env runner like fedexec's
    sb3      rl-zoo3's tuned CartPole-v1 PPO (8 envs in one process, n_steps 32,
             batch 256, 20 epochs, gamma 0.98, gae_lambda 0.8, lr and clip linear from
             1e-3 / 0.2 to 0 over the step budget): the single-process floor

Each (system, seed) runs in a cold child process. Measured at each training
iteration's end (SB3: each rollout's end): the mean return over the last 100
episodes; the first time it reaches 150 and 450 gives the env steps and the wall
time since the child started (runtime start and imports included). A system that
does not reach a bound within ``--max-steps`` reports "-".

``--es``: env steps per second of fedexec.rl's ES with 1 and 2 env runners (the
issue's scaling target >= 1.7x); skipped when ``fedexec.rl.es`` is not there yet.
``--sb3-threads 1`` gives SB3's process one torch thread, as fedexec's learner has
(its ``num_cpus_for_main_process``); by default torch uses every core.
``--python-bench`` names the interpreter with ``ray[rllib]==2.60`` and
``stable-baselines3`` (each system is skipped if its interpreter cannot import it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from _env import child_env

MARK = "@@RESULT@@ "
BOUNDS = (150.0, 450.0)
ES_ITERATIONS = 6


class Progress:
    """Records when the mean return first reaches each bound."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.reached: dict[str, dict[str, float]] = {}
        self.last: dict[str, float] = {}

    def update(self, steps: int, mean_return: float) -> bool:
        """Record one measurement; True once every bound is reached."""
        now = time.monotonic() - self.began
        self.last = {"steps": steps, "return": round(float(mean_return), 1),
                     "wall_s": round(now, 1)}
        for bound in BOUNDS:
            key = str(int(bound))
            if key not in self.reached and mean_return == mean_return and mean_return >= bound:
                self.reached[key] = {"steps": steps, "wall_s": round(now, 1)}
        return len(self.reached) == len(BOUNDS)


# ------------------------------------------------------------------ the systems (children)
def child_fedexec(seed: int, max_steps: int, began: float) -> dict[str, Any]:
    import fedexec
    from fedexec.rl import PPOConfig
    from fedexec.rl._cli import examples, load_experiments

    spec = load_experiments(examples()["cartpole-ppo"])["cartpole-ppo"]
    fedexec.init(worker_preload=["torch"])  # as `fedexec rl train` starts its runtime
    algo = PPOConfig.from_dict({**spec["config"], "env": spec["env"], "seed": seed}).build()
    progress = Progress(began)
    while True:
        result = algo.train()
        if progress.update(result["timesteps_total"], result["episode_reward_mean"]) or \
                result["timesteps_total"] >= max_steps:
            break
    algo.stop()
    return {"reached": progress.reached, "last": progress.last}


def child_rllib(seed: int, max_steps: int, began: float) -> dict[str, Any]:
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    config = (PPOConfig().environment("CartPole-v1")
              .env_runners(num_env_runners=1)
              .training(lr=0.0003, num_epochs=6, vf_loss_coeff=0.01)
              .rl_module(model_config=DefaultModelConfig(
                  fcnet_hiddens=[32], fcnet_activation="linear", vf_share_layers=True))
              .debugging(seed=seed))
    algo = config.build_algo()
    progress = Progress(began)
    while True:
        result = algo.train()
        steps = int(result.get("num_env_steps_sampled_lifetime")
                    or result["env_runners"]["num_env_steps_sampled_lifetime"])
        mean_return = result["env_runners"].get("episode_return_mean", float("nan"))
        if progress.update(steps, mean_return) or steps >= max_steps:
            break
    algo.stop()
    ray.shutdown()
    return {"reached": progress.reached, "last": progress.last}


def child_sb3(seed: int, max_steps: int, began: float, threads: int = 0) -> dict[str, Any]:
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    progress = Progress(began)

    class Watch(BaseCallback):
        """Measures at each rollout's end; stops learning once every bound is reached."""

        done = False

        def _on_step(self) -> bool:
            return not self.done

        def _on_rollout_end(self) -> None:
            buffer = self.model.ep_info_buffer
            if buffer:
                mean = float(np.mean([info["r"] for info in buffer]))
                self.done = progress.update(int(self.model.num_timesteps), mean)

    def linear(start: float) -> Any:
        return lambda remaining: remaining * start

    if threads:
        torch.set_num_threads(threads)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                n_epochs=20, ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2),
                seed=seed, verbose=0, device="cpu")
    model.learn(total_timesteps=max_steps, callback=Watch())
    return {"reached": progress.reached, "last": progress.last}


def _runner_cpu_seconds(runner: Any) -> float:
    return time.process_time()


def child_es(runners: int, began: float) -> dict[str, Any]:
    """ES env steps per second with ``runners`` env runners: the shipped
    ``cartpole-es.yaml`` with 10,000 env steps per iteration (so each iteration is the
    same work however well the policy does), timed over ``ES_ITERATIONS`` after one
    warm-up iteration (the runners read the noise table then). Also the runners' CPU
    seconds in that time: on a loaded machine a runner gets less than a core, and
    ``steps_per_runner_cpu_s`` shows whether the work itself scales."""
    import fedexec
    from fedexec.rl import get_algorithm_class
    from fedexec.rl._cli import examples, load_experiments

    spec = load_experiments(examples()["cartpole-es"])["cartpole-es"]
    es = get_algorithm_class("ES")
    fedexec.init()
    config = es.get_default_config().update_from_dict(
        {**spec["config"], "env": spec["env"], "num_env_runners": runners,
         "train_batch_size": 10_000, "seed": 0})
    algo = config.build()
    group = algo.env_runner_group
    first = algo.train()
    start, steps0 = time.monotonic(), first["timesteps_total"]
    cpu0 = sum(group.foreach_runner(_runner_cpu_seconds))
    for _ in range(ES_ITERATIONS):
        result = algo.train()
    wall = time.monotonic() - start
    cpu = sum(group.foreach_runner(_runner_cpu_seconds)) - cpu0
    steps = result["timesteps_total"] - steps0
    algo.stop()
    return {"runners": runners, "env_steps_per_s": round(steps / wall, 1),
            "runner_cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
            "steps_per_runner_cpu_s": round(steps / cpu, 1)}


CHILDREN = {"fedexec": child_fedexec, "rllib": child_rllib, "sb3": child_sb3}
IMPORTS = {"fedexec": "fedexec.rl", "rllib": "ray.rllib", "sb3": "stable_baselines3"}


# ------------------------------------------------------------------ the parent
def run_child(python: str, argv: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run([python, os.path.abspath(__file__), *argv], capture_output=True,
                         text=True, env=child_env(), timeout=timeout)
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK):]))
    return {"error": (out.stderr or out.stdout)[-2000:]}


def es_available(python: str) -> bool:
    code = "from fedexec.rl import get_algorithm_class as g; g('ES')"
    return subprocess.run([python, "-c", code], capture_output=True, env=child_env()
                          ).returncode == 0


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--systems", default="fedexec,rllib,sb3")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--max-steps", type=int, default=300_000)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--python-bench", default=sys.executable)
    parser.add_argument("--es", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--child")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runners", type=int, default=1)
    parser.add_argument("--sb3-threads", type=int, default=0,
                        help="torch threads of SB3's process (0: torch's default, all cores)")
    args = parser.parse_args()
    if args.child:
        began = time.monotonic()
        if args.child == "es":
            row = child_es(args.runners, began)
        elif args.child == "sb3":
            row = child_sb3(args.seed, args.max_steps, began, args.sb3_threads)
        else:
            row = CHILDREN[args.child](args.seed, args.max_steps, began)
        print(MARK + json.dumps(row), flush=True)
        return
    print("load before:", uptime(), flush=True)
    rows: list[dict[str, Any]] = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for system in args.systems.split(","):
            python = sys.executable if system == "fedexec" else args.python_bench
            if subprocess.run([python, "-c", f"import {IMPORTS[system]}"], capture_output=True,
                              env=child_env()).returncode != 0:
                print(f"skipping {system}: {python} cannot import {IMPORTS[system]}")
                continue
            row = {"system": system, "seed": seed, **run_child(
                python, ["--child", system, "--seed", str(seed), "--max-steps",
                         str(args.max_steps), "--sb3-threads", str(args.sb3_threads)],
                args.timeout)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    es_rows: list[dict[str, Any]] = []
    if args.es:
        if es_available(sys.executable):
            for runners in (1, 2):
                es_rows.append(run_child(sys.executable, ["--child", "es", "--runners",
                                                          str(runners)], args.timeout))
                print(json.dumps(es_rows[-1]), flush=True)
        else:
            print("skipping ES: fedexec.rl has no ES algorithm in this checkout")
    print("load after:", uptime(), flush=True)
    print(table(rows, es_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ppo": rows, "es": es_rows}, f, indent=1)


def table(rows: list[dict[str, Any]], es_rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], bound: str, key: str) -> str:
        hit = row.get("reached", {}).get(bound)
        return "-" if hit is None else f"{hit[key]:,}" if key == "steps" else f"{hit[key]}"

    lines = ["| system | seed | steps to 150 | wall s to 150 | steps to 450 | wall s to 450 | "
             "last (steps, return) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['system']} | {row['seed']} | error: "
                         f"{row['error'].splitlines()[-1][:80]} | | | | |")
            continue
        last = row.get("last", {})
        lines.append(f"| {row['system']} | {row['seed']} | {cell(row, '150', 'steps')} | "
                     f"{cell(row, '150', 'wall_s')} | {cell(row, '450', 'steps')} | "
                     f"{cell(row, '450', 'wall_s')} | {last.get('steps')}, "
                     f"{last.get('return')} |")
    if len(es_rows) == 2 and all("env_steps_per_s" in r for r in es_rows):
        one, two = es_rows[0]["env_steps_per_s"], es_rows[1]["env_steps_per_s"]
        lines.append(f"\nES env steps/s: 1 runner {one}, 2 runners {two} ({two / one:.2f}x)")
        busy = [r["runner_cpu_s"] / r["wall_s"] for r in es_rows]
        lines.append(f"ES runners' CPU use (cores busy): 1 runner {busy[0]:.2f}, "
                     f"2 runners {busy[1]:.2f}; env steps per runner CPU-second: "
                     f"{es_rows[0]['steps_per_runner_cpu_s']}, "
                     f"{es_rows[1]['steps_per_runner_cpu_s']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
