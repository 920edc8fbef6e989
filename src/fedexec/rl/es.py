"""ES: evolution strategies (Salimans et al. 2017, "Evolution Strategies as a
Scalable Alternative to Reinforcement Learning").

The policy is a flat parameter vector ``theta``. A table of Gaussian noise is
made once, from the seed, and placed once in the object store; every worker
reads it from there (a worker caches it by its ref), so a perturbation travels
as one integer: its offset into the table. One ``training_step``::

    driver: theta (a few KB) + [noise ref] ──▶ each env runner (in parallel), in
    calls of a quarter of its share, a runner's next call sent as its last answers,
    until the answers hold episodes_per_batch episodes and train_batch_size steps:
        per call, repeat until the call's share is done:
            i ~ U[0, len(noise) - dim];  eps = noise[i : i + dim]
            R+ = episode return of theta + noise_stdev * eps     (mirrored pair)
            R- = episode return of theta - noise_stdev * eps
        (and, with probability eval_prob, at least once per runner and iteration,
         an episode of theta itself: the reported episode_reward_mean)
    ◀── offsets, (R+, R-) pairs, episode lengths, observation-filter delta
    driver: F = centered_ranks([R+, R-])       (each return -> its rank in [-0.5, 0.5])
            g = sum_k (F+_k - F-_k) * eps_k / (2 * pairs)
            theta <- Adam(stepsize) step on the loss gradient  -g + l2_coeff * theta

Actions are deterministic (argmax; Box actions plus ``action_noise_std`` noise
while exploring). Observations go through the runner's filter (``MeanStdFilter``
by default), whose statistics the driver merges and hands back each round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import nn

import fedexec

from .algorithm import Algorithm
from .config import AlgorithmConfig
from .env import obs_size, preprocess_obs, to_env_action
from .env_runner import EnvRunner
from .models import build_mlp
from .policy import TorchPolicy

__all__ = ["ES", "Adam", "ESConfig", "ESPolicy", "centered_ranks", "create_noise",
           "es_gradient"]


class ESConfig(AlgorithmConfig):
    """ES's settings (RLlib's classic values): ``noise_size`` 250,000,000 floats
    (1 GB: lower it on small machines), ``episodes_per_batch`` 1000,
    ``train_batch_size`` 10000 (both are minimums per iteration), ``noise_stdev``
    0.02, ``stepsize`` 0.01 (Adam), ``l2_coeff`` 0.005, ``action_noise_std`` 0.01,
    ``eval_prob`` 0.03, ``observation_filter`` "MeanStdFilter", 10 env runners."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or ES)
        self.noise_size = 250_000_000
        self.episodes_per_batch = 1000
        self.train_batch_size = 10000
        self.noise_stdev = 0.02
        self.stepsize = 0.01
        self.l2_coeff = 0.005
        self.action_noise_std = 0.01
        self.eval_prob = 0.03
        self.return_proc_mode = "centered_rank"
        self.observation_filter = "MeanStdFilter"
        self.num_env_runners = 10

    def validate(self) -> None:
        super().validate()
        if self.noise_size < 1 or self.noise_stdev <= 0 or self.stepsize <= 0:
            raise ValueError("noise_size, noise_stdev and stepsize must be > 0")
        if self.episodes_per_batch < 1:
            raise ValueError(f"episodes_per_batch must be >= 1, not {self.episodes_per_batch}")
        if self.return_proc_mode != "centered_rank":
            raise ValueError(f"return_proc_mode={self.return_proc_mode!r} is not supported: "
                             "fedexec.rl's ES shapes fitness by centered ranks")


# -- the maths ---------------------------------------------------------------------------
def create_noise(size: int, seed: int | None) -> np.ndarray:
    """The shared noise table: ``size`` standard normal float32 values from ``seed``."""
    return np.random.default_rng(seed).standard_normal(int(size), dtype=np.float32)


def centered_ranks(x: np.ndarray) -> np.ndarray:
    """Each entry of ``x`` replaced by its rank over all entries, scaled to
    ``[-0.5, 0.5]`` (same shape; the smallest is -0.5, the largest 0.5)."""
    x = np.asarray(x)
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[x.ravel().argsort(kind="stable")] = np.arange(x.size, dtype=np.float64)
    scaled = ranks / (x.size - 1) - 0.5 if x.size > 1 else np.zeros(x.size)
    return scaled.astype(np.float32).reshape(x.shape)


def _weighted_noise_sum(noise: np.ndarray, offsets: np.ndarray, weights: np.ndarray,
                        dim: int) -> np.ndarray:
    total = np.zeros(dim, dtype=np.float64)
    for offset, weight in zip(np.asarray(offsets).tolist(), np.asarray(weights).tolist()):
        total += weight * noise[offset:offset + dim]
    return total


def es_gradient(noise: np.ndarray, offsets: np.ndarray, returns: np.ndarray,
                dim: int) -> np.ndarray:
    """The ascent direction of Salimans et al.: with ``F = centered_ranks(returns)``
    (``returns`` of shape ``[pairs, 2]``: R+ and R- of each mirrored pair) and
    ``eps_k = noise[offsets[k] : offsets[k] + dim]``,
    ``g = sum_k (F+_k - F-_k) * eps_k / (2 * pairs)``."""
    returns = np.asarray(returns, dtype=np.float64).reshape(-1, 2)
    ranks = centered_ranks(returns)
    weights = ranks[:, 0] - ranks[:, 1]
    return _weighted_noise_sum(noise, offsets, weights, dim) / returns.size


class Adam:
    """Adam on a numpy vector (Kingma & Ba 2015), as ES's optimizer.

    ``update(theta, grad)`` takes the gradient of the loss to *minimise* and returns
    the new ``theta`` and ``|step| / |theta|``.
    """

    def __init__(self, dim: int, stepsize: float, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8) -> None:
        self.stepsize, self.beta1, self.beta2, self.epsilon = stepsize, beta1, beta2, epsilon
        self.m = np.zeros(dim, dtype=np.float64)
        self.v = np.zeros(dim, dtype=np.float64)
        self.t = 0

    def update(self, theta: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, float]:
        self.t += 1
        a = self.stepsize * math.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        step = -a * self.m / (np.sqrt(self.v) + self.epsilon)
        ratio = float(np.linalg.norm(step) / max(np.linalg.norm(theta), 1e-12))
        return (theta + step).astype(np.float32), ratio

    def get_state(self) -> dict[str, Any]:
        return {"m": self.m, "v": self.v, "t": self.t}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.m, self.v = np.asarray(state["m"]), np.asarray(state["v"])
        self.t = int(state["t"])


# -- the policy --------------------------------------------------------------------------
class _ESModel(nn.Module):
    """An MLP from observation to action-distribution inputs (no value head)."""

    def __init__(self, in_size: int, num_outputs: int, model_config: Mapping[str, Any]) -> None:
        super().__init__()
        self.net, _ = build_mlp(in_size, list(model_config.get("fcnet_hiddens", [256, 256])),
                                model_config.get("fcnet_activation", "tanh"), num_outputs, 0.01)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(obs)
        return out, torch.zeros(out.shape[0], device=out.device)


class ESPolicy(TorchPolicy):
    """A deterministic policy whose parameters are one flat vector, and ES's Adam."""

    def __init__(self, observation_space: Any, action_space: Any, config: Any,
                 device: str = "cpu") -> None:
        super().__init__(observation_space, action_space, config, device)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.es_optimizer = Adam(self.num_params, float(config.stepsize))

    def make_model(self) -> nn.Module:
        return _ESModel(obs_size(self.observation_space),
                        self.dist_class.required_inputs(self.action_space), self.config.model)

    def compute_actions(self, obs: np.ndarray, explore: bool = True
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with torch.no_grad():
            inputs, _ = self.model(self._tensor(obs))
        actions = self.dist_class(inputs).deterministic_sample().cpu().numpy()
        if explore and actions.dtype.kind == "f" and self.config.action_noise_std:
            actions = actions + self.rng.normal(0.0, self.config.action_noise_std,
                                                 actions.shape).astype(actions.dtype)
        return actions, {}

    def get_flat(self) -> np.ndarray:
        return nn.utils.parameters_to_vector(self.model.parameters()).detach().cpu().numpy()

    def set_flat(self, theta: np.ndarray) -> None:
        nn.utils.vector_to_parameters(torch.as_tensor(np.asarray(theta, dtype=np.float32),
                                                      device=self.device),
                                      self.model.parameters())

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "es_optimizer": self.es_optimizer.get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        if "es_optimizer" in state:
            self.es_optimizer.set_state(state["es_optimizer"])


# -- the workers' part (runs on an env runner through EnvRunner.apply) --------------------
def _runner_noise(runner: EnvRunner, holder: list[Any]) -> np.ndarray:
    """The noise table: ``holder[0]`` itself (a runner in the driver), or read from
    the object store by its ref the first time and cached on the runner by ref id."""
    ref = holder[0]
    if isinstance(ref, np.ndarray):
        return ref
    cached = getattr(runner, "_es_noise", None)
    if cached is None or cached[0] != ref.id:
        runner._es_noise = (ref.id, fedexec.get(ref))  # type: ignore[attr-defined]
    return runner._es_noise[1]  # type: ignore[attr-defined]


def _episode(runner: EnvRunner, explore: bool) -> tuple[float, int]:
    """One episode on the runner's first env with its policy; (return, length)."""
    env, space, cfg = runner.envs[0], runner.observation_space, runner.config
    seed = getattr(runner, "_es_seed", None)
    runner._es_seed = None  # type: ignore[attr-defined]  # seed only the first reset
    obs, _ = env.reset(seed=seed)
    total, length, done = 0.0, 0, False
    while not done:
        flat = runner.filter(preprocess_obs(space, obs))
        actions, _ = runner.policy.compute_actions(flat[None], explore)
        obs, reward, terminated, truncated, _ = env.step(
            to_env_action(runner.action_space, actions[0], cfg.clip_actions,
                          cfg.normalize_actions))
        total += float(reward)
        length += 1
        done = bool(terminated or truncated)
    return total, length


def evaluate_perturbations(runner: EnvRunner, theta: np.ndarray, noise_holder: list[Any],
                           filter_state: Any, min_steps: int, min_pairs: int, seed: int,
                           force_eval: bool = False) -> dict[str, Any]:
    """On a runner: mirrored pairs of episodes until ``min_steps`` env steps and
    ``min_pairs`` pairs (see the module docstring), plus an episode of ``theta``
    itself with probability ``eval_prob`` per pair (at least one if ``force_eval``).
    ``noise_holder`` is ``[ref]`` (in a list, so the ref arrives as a ref and the
    table is read once per runner)."""
    began, cpu_began = time.time(), time.process_time()
    cfg = runner.config
    noise = _runner_noise(runner, noise_holder)
    if not hasattr(runner, "_es_seed"):  # the first call here: seed the first reset
        seed0 = None if cfg.seed is None else cfg.seed + 1000 * runner.worker_index
        runner._es_seed = seed0  # type: ignore[attr-defined]
    runner.set_state(None, filter_state)
    policy: ESPolicy = runner.policy
    rng = np.random.default_rng(seed)
    dim = len(theta)
    offsets: list[int] = []
    returns: list[tuple[float, float]] = []
    lengths: list[tuple[int, int]] = []
    eval_returns: list[float] = []
    eval_lengths: list[int] = []
    steps = 0
    while steps < min_steps or len(offsets) < min_pairs or (force_eval and not eval_returns):
        if rng.random() < cfg.eval_prob or (force_eval and not eval_returns and
                                            steps >= min_steps and len(offsets) >= min_pairs):
            policy.set_flat(theta)
            ret, length = _episode(runner, explore=False)
            eval_returns.append(ret)
            eval_lengths.append(length)
            steps += length
            continue
        offset = int(rng.integers(0, len(noise) - dim + 1))
        eps = noise[offset:offset + dim]
        policy.set_flat(theta + cfg.noise_stdev * eps)
        ret_pos, len_pos = _episode(runner, explore=True)
        policy.set_flat(theta - cfg.noise_stdev * eps)
        ret_neg, len_neg = _episode(runner, explore=True)
        offsets.append(offset)
        returns.append((ret_pos, ret_neg))
        lengths.append((len_pos, len_neg))
        steps += len_pos + len_neg
    return {"offsets": offsets, "returns": returns, "lengths": lengths,
            "eval_returns": eval_returns, "eval_lengths": eval_lengths, "env_steps": steps,
            "filter_delta": runner.filter.take_delta(), "began": began,
            "wall_s": time.time() - began, "cpu_s": time.process_time() - cpu_began,
            "noise_ref_id": getattr(noise_holder[0], "id", None),
            "noise_checksum": float(noise[:1000].sum())}


# -- the algorithm -----------------------------------------------------------------------
class ES(Algorithm):
    """Evolution strategies (see the module docstring)."""

    config_class = ESConfig
    #: calls per runner per iteration (see :meth:`_evaluate_on_runners`)
    CHUNKS = 4

    @classmethod
    def get_default_policy_class(cls, config: AlgorithmConfig) -> type:
        return ESPolicy

    def setup(self, config: dict[str, Any], **parameters: Any) -> None:
        super().setup(config, **parameters)
        cfg = cast(ESConfig, self.algo_config)
        self.noise = create_noise(cfg.noise_size, cfg.seed)
        if self.policy.num_params > len(self.noise):
            raise ValueError(f"noise_size ({cfg.noise_size}) is smaller than the policy's "
                             f"{self.policy.num_params} parameters: raise noise_size")
        group = self.env_runner_group
        # placed in the object store once; remote runners read it from there
        self.noise_ref = group.executor.put(self.noise) if group and group.runners else None

    def training_step(self) -> dict[str, Any]:
        cfg = cast(ESConfig, self.algo_config)
        theta = self.policy.get_flat()
        offsets: list[int] = []
        returns: list[tuple[float, float]] = []
        lengths: list[tuple[int, int]] = []
        results = self._evaluate_on_runners(theta)
        for result in results:
            offsets += result["offsets"]
            returns += [tuple(r) for r in result["returns"]]
            lengths += [tuple(x) for x in result["lengths"]]
            self.record_metrics({"episode_returns": result["eval_returns"],
                                 "episode_lengths": result["eval_lengths"],
                                 "env_steps": result["env_steps"],
                                 "filter_delta": result["filter_delta"]})
        grad = es_gradient(self.noise, np.asarray(offsets), np.asarray(returns),
                           self.policy.num_params)
        theta, update_ratio = self.policy.es_optimizer.update(
            theta, -grad + cfg.l2_coeff * theta)
        self.policy.set_flat(theta)
        self.counters["num_env_steps_trained"] += int(sum(a + b for a, b in lengths))
        noisy = np.asarray(returns, dtype=np.float64)
        return {"weights_norm": float(np.linalg.norm(theta)), "grad_norm":
                float(np.linalg.norm(grad)), "update_ratio": update_ratio,
                "episodes_this_iter": 2 * len(returns), "noisy_return_mean":
                float(noisy.mean()), "noisy_return_std": float(noisy.std()),
                # < 1: the runners' processes waited for a CPU (a loaded machine)
                "runner_cpu_fraction": sum(r["cpu_s"] for r in results)
                / max(1e-9, sum(r["wall_s"] for r in results))}

    def _evaluate_on_runners(self, theta: np.ndarray) -> list[dict[str, Any]]:
        """Results of :func:`evaluate_perturbations` of ``theta`` until they hold
        ``episodes_per_batch`` episodes and ``train_batch_size`` steps.

        Each runner's share is cut into ``CHUNKS`` calls, and a runner that
        answers gets its next call at once while more is needed, so no runner
        idles while another finishes a long share; the last calls in flight are
        waited for (their episodes count too).
        """
        cfg = cast(ESConfig, self.algo_config)
        group = self.env_runner_group
        assert group is not None
        filter_state = self.filter.get_state()
        base = (0 if cfg.seed is None else cfg.seed) * 7919 + 10**6 * self.iteration
        need_pairs, need_steps = math.ceil(cfg.episodes_per_batch / 2), cfg.train_batch_size
        if group.local_runner is not None:
            return [evaluate_perturbations(group.local_runner, theta, [self.noise], filter_state,
                                           need_steps, need_pairs, base, True)]
        n = len(group.runners)
        chunk_steps = math.ceil(need_steps / (n * self.CHUNKS))
        chunk_pairs = math.ceil(need_pairs / (n * self.CHUNKS))
        calls = 0

        def launch(index: int, first: bool) -> Any:
            nonlocal calls
            calls += 1
            return group.submit(index, evaluate_perturbations, theta, [self.noise_ref],
                                filter_state, chunk_steps, chunk_pairs, base + calls, first)

        inflight = {i: launch(i, True) for i in range(n)}
        results: list[dict[str, Any]] = []
        pairs = steps = 0
        while inflight:
            ready, _ = group.executor.wait(list(inflight.values()), num_returns=1)
            index = next(i for i, ref in inflight.items() if ref == ready[0])
            ok, value = group.get(index, inflight.pop(index))
            if ok:
                results.append(value)
                pairs += len(value["offsets"])
                steps += int(value["env_steps"])
            if pairs < need_pairs or steps < need_steps:
                inflight[index] = launch(index, not ok)
        return results

