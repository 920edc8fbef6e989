"""``fedexec rl``: train, evaluate, and run the tuned examples.

::

    fedexec rl train --algo PPO --env CartPole-v1 [--config JSON] [--stop JSON]
                     [--checkpoint-freq N] [--storage-path DIR] [--address HOST:PORT]
                                                                     (--run = --algo)
    fedexec rl train -f experiments.yaml    # {name: {env, run, stop, config}} per experiment
    fedexec rl evaluate CHECKPOINT [--algo PPO] [--env ID] [--episodes N] [--render]
    fedexec rl example list | run NAME

Training runs in this process (env runners as actors on the current executor),
prints one line per iteration, writes each result as a JSON line to
``<storage-path>/<name>/result.json``, checkpoints every ``--checkpoint-freq``
iterations and at the end, and prints the final checkpoint's path. Stop criteria
are ``{key: bound}``, any reached; a key may be a path into the nested result
(``sampler_results/episode_reward_mean``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from collections.abc import Sequence
from importlib import resources
from typing import Any

__all__ = ["main"]

EXAMPLES_PACKAGE = "fedexec.rl.examples"


def _json_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedexec rl",
                                     description="reinforcement learning with fedexec.rl")
    sub = parser.add_subparsers(dest="rl_command", required=True)
    t = sub.add_parser("train", help="train an algorithm (or the experiments of a YAML file)")
    t.add_argument("-f", "--file", default=None, help="tuned-example YAML: {name: {env, run, "
                   "stop, config}}")
    t.add_argument("--algo", "--run", dest="algo", default=None, help="algorithm (PPO, DQN ...)")
    t.add_argument("--env", default=None, help="environment (a gymnasium id)")
    t.add_argument("--config", type=_json_arg, default={}, help="settings as JSON")
    t.add_argument("--stop", type=_json_arg, default=None,
                   help='stop criteria as JSON, any reached: {"training_iteration": 10}')
    _add_run_options(t)
    e = sub.add_parser("evaluate", help="run episodes with a checkpoint's policy")
    e.add_argument("checkpoint")
    e.add_argument("--algo", "--run", dest="algo", default=None)
    e.add_argument("--env", default=None, help="another environment than the checkpoint's")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--explore", action="store_true", help="sample actions (default: greedy)")
    e.add_argument("--render", action="store_true", help="render the env (render_mode human)")
    x = sub.add_parser("example", help="the tuned examples shipped with fedexec")
    xsub = x.add_subparsers(dest="example_command", required=True)
    xsub.add_parser("list", help="list the tuned examples")
    xr = xsub.add_parser("run", help="train a tuned example")
    xr.add_argument("name")
    xr.add_argument("--stop", type=_json_arg, default=None, help="replaces the example's stop")
    _add_run_options(xr)
    return parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint-freq", type=int, default=0,
                   help="checkpoint every N iterations (always at the end)")
    p.add_argument("--storage-path", default=None, help="default ~/fedexec_results")
    p.add_argument("--name", default=None, help="the run's directory name")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--address", default=None,
                   help="a cluster to run the env runners on (HOST:PORT or auto; default: "
                        "a runtime in this process)")


def main(argv: Sequence[str] | None = None) -> int:
    """``fedexec rl ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.rl_command == "train":
            return _train_command(args)
        if args.rl_command == "evaluate":
            return _evaluate_command(args)
        return _example_command(args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"fedexec rl: error: {exc}", file=sys.stderr)
        return 2


# -- train ------------------------------------------------------------------------------
def _train_command(args: argparse.Namespace) -> int:
    if args.file:
        experiments = load_experiments(args.file)
    else:
        if not args.algo:
            raise ValueError("give --algo (or --run) NAME, or -f FILE.yaml")
        env = args.env or args.config.get("env")
        if env is None:
            raise ValueError("give --env ID (or \"env\" in --config)")
        experiments = {args.name or "": {"run": args.algo, "env": env, "config": args.config,
                                         "stop": args.stop or {}}}
    return _run_experiments(experiments, args)


def load_experiments(path: str) -> dict[str, dict[str, Any]]:
    """The experiments of a tuned-example YAML file."""
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{name: {{env, run, stop, config}}}} per experiment")
    for name, spec in data.items():
        if "run" not in spec:
            raise ValueError(f"{path}: experiment {name!r} has no 'run' (the algorithm)")
    return data


def _run_experiments(experiments: dict[str, dict[str, Any]], args: argparse.Namespace) -> int:
    import fedexec

    if args.address:
        fedexec.init(address=args.address, ignore_reinit_error=True)
    else:  # this process's runtime; its workers (the env runners) start with torch imported
        fedexec.init(worker_preload=["torch"], ignore_reinit_error=True)
    for name, spec in experiments.items():
        stop = args.stop if args.stop is not None else dict(spec.get("stop") or {})
        config = dict(spec.get("config") or {})
        if spec.get("env") is not None:
            config["env"] = spec["env"]
        if args.seed is not None:
            config["seed"] = args.seed
        freq = args.checkpoint_freq or int(spec.get("checkpoint_freq", 0) or 0)
        storage = args.storage_path or spec.get("storage_path") or "~/fedexec_results"
        train(spec["run"], config, stop, name=name or args.name, storage_path=storage,
              checkpoint_freq=freq)
    return 0


def train(algo_name: str, config: dict[str, Any], stop: dict[str, Any], *,
          name: str | None = None, storage_path: str = "~/fedexec_results",
          checkpoint_freq: int = 0, out: Any = None) -> tuple[dict[str, Any], str]:
    """Train until a ``stop`` criterion holds; returns the last result and the final
    checkpoint's path."""
    from .registry import get_algorithm_class

    out = out or sys.stdout
    cls = get_algorithm_class(algo_name)
    algo = cls(config=cls.get_default_config().update_from_dict(config))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    env_name = str(algo.algo_config.env).replace("/", "_")
    run_dir = os.path.join(os.path.abspath(os.path.expanduser(storage_path)),
                           name or f"{cls.__name__}_{env_name}_{stamp}")
    os.makedirs(run_dir, exist_ok=True)
    print(f"training {cls.__name__} on {algo.algo_config.env} (results in {run_dir}); "
          f"stop: {json.dumps(stop) if stop else 'never (Ctrl-C to end)'}", file=out, flush=True)
    result: dict[str, Any] = {}
    path = ""
    try:
        with open(os.path.join(run_dir, "result.json"), "a", encoding="utf-8") as log:
            while True:
                result = algo.train()
                log.write(json.dumps(result, default=_json_default) + "\n")
                log.flush()
                print(progress_line(result), file=out, flush=True)
                it = int(result["training_iteration"])
                done = stop_reached(result, stop)
                if checkpoint_freq and it % checkpoint_freq == 0 and not done:
                    path = algo.save(os.path.join(run_dir, f"checkpoint_{it:06d}"))
                if done:
                    break
    except KeyboardInterrupt:
        print("interrupted", file=out, flush=True)
    finally:
        if result:
            it = int(result["training_iteration"])
            path = algo.save(os.path.join(run_dir, f"checkpoint_{it:06d}"))
            print(f"final checkpoint: {path}", file=out, flush=True)
        algo.stop()
    return result, path


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def lookup(result: dict[str, Any], key: str) -> Any:
    """``result[key]``, or the value at a ``a/b/c`` path into nested dicts."""
    if key in result:
        return result[key]
    node: Any = result
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def stop_reached(result: dict[str, Any], stop: dict[str, Any]) -> bool:
    """True when any ``result[key] >= bound`` (NaN never reaches)."""
    for key, bound in stop.items():
        value = lookup(result, key)
        if isinstance(value, (int, float)) and not math.isnan(value) and value >= bound:
            return True
    return False


def progress_line(result: dict[str, Any]) -> str:
    """One line per iteration: iteration, env steps, mean return, episode length, time."""
    def num(key: str, fmt: str) -> str:
        value = result.get(key)
        return "nan" if value is None or value != value else format(value, fmt)

    return (f"iter {result['training_iteration']:4d}  steps {result['timesteps_total']:8d}  "
            f"return_mean {num('episode_return_mean', '8.2f')}  "
            f"len_mean {num('episode_len_mean', '7.1f')}  "
            f"episodes {result.get('episodes_this_iter', 0):4d}  "
            f"time {result['time_total_s']:7.1f}s")


# -- evaluate -----------------------------------------------------------------------------
def _evaluate_command(args: argparse.Namespace) -> int:
    from .checkpoint import read_state
    from .registry import get_algorithm_class

    state = read_state(args.checkpoint)
    cls = get_algorithm_class(args.algo or state["algorithm"])
    config = cls.get_default_config()
    for key, value in state["config"].items():
        try:
            config.update_from_dict({key: value})
        except ValueError:
            continue  # a setting this version does not know
    config.env_runners(num_env_runners=0, num_envs_per_env_runner=1)
    config.evaluation(evaluation_num_env_runners=0)
    if args.env:
        config.environment(args.env)
    if args.render:
        config.environment(env_config={**config.env_config, "render_mode": "human"})
    algo = cls(config=config)
    try:
        algo.restore(args.checkpoint)
        runner = algo.env_runner_group.local_runner if algo.env_runner_group else None
        if runner is None:
            raise ValueError(f"{cls.__name__} cannot be evaluated episode by episode here")
        out = runner.sample_episodes(args.episodes, explore=args.explore)
        for i, (ret, length) in enumerate(zip(out["episode_returns"], out["episode_lengths"]),
                                          start=1):
            print(f"episode {i}: reward {ret:.2f} (length {length})")
        mean = sum(out["episode_returns"]) / max(1, len(out["episode_returns"]))
        print(f"mean reward over {len(out['episode_returns'])} episodes: {mean:.2f}")
    finally:
        algo.stop()
    return 0


# -- examples -----------------------------------------------------------------------------
def examples() -> dict[str, str]:
    """Name -> path of each tuned example shipped in the package."""
    root = resources.files(EXAMPLES_PACKAGE)
    return {p.name[:-5]: str(p) for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")}


def _describe(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                return line.lstrip("# ").strip()
    return ""


def _example_command(args: argparse.Namespace) -> int:
    found = examples()
    if args.example_command == "list":
        width = max((len(n) for n in found), default=0)
        for name, path in found.items():
            print(f"{name:<{width}}  {_describe(path)}")
        return 0
    if args.name not in found:
        raise ValueError(f"no tuned example {args.name!r}; there are: {', '.join(found)}")
    return _run_experiments(load_experiments(found[args.name]), args)
