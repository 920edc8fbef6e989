"""``EnvRunnerGroup``: the env runners of one algorithm, and their failures.

With ``num_env_runners == 0`` there is one runner in the driver's process and no
actor; otherwise one ``EnvRunner`` actor per runner (``num_cpus_per_env_runner``
CPUs each), created on the current executor. Per training iteration::

    sync(weights, filter_state): one put of the weights; every runner's
        set_state gets the ref (each reads the weights from the object store)
    sample(n): rounds of sample() on every runner in parallel until n env steps

A runner whose actor died (``ActorDiedError``, ``WorkerCrashedError``,
``ActorUnavailableError``) is replaced by a new actor with the same index and
the latest synced state, if ``restart_failed_env_runners`` (and fewer than
``max_num_env_runner_restarts`` restarts so far); its lost work is sampled again
by the next round. Otherwise the error propagates.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import fedexec
from fedexec.backends import capabilities

from .env_runner import EnvRunner

__all__ = ["RUNNER_DEATHS", "EnvRunnerGroup"]

logger = logging.getLogger(__name__)

#: the errors that mean "the runner's process is gone" (it is replaced)
RUNNER_DEATHS: tuple[type[BaseException], ...] = (
    fedexec.ActorDiedError, fedexec.WorkerCrashedError, fedexec.ActorUnavailableError)


class EnvRunnerGroup:
    """The env runners of one algorithm (see the module docstring).

    Args:
        config: the algorithm's config.
        policy_class: the policy class runners act with.
        env_creator: the env creator shipped to each runner.
        num_runners: how many remote runners (default ``config.num_env_runners``).
        executor: where the actors run (default: the current executor).
    """

    def __init__(self, config: Any, policy_class: type, env_creator: Callable[..., Any],
                 num_runners: int | None = None, executor: Any = None) -> None:
        self.config = config
        self.policy_class = policy_class
        self.env_creator = env_creator
        self.num_runners = config.num_env_runners if num_runners is None else num_runners
        self.num_restarts = 0
        self._state: tuple[Any, Any] = (None, None)
        self.local_runner: EnvRunner | None = None
        self.runners: list[Any] = []
        if self.num_runners == 0:
            self.local_runner = EnvRunner(config, policy_class, env_creator, 0, 0)
            self.executor = executor
            return
        self.executor = executor or fedexec.current_executor()
        if "actors" not in capabilities(self.executor.backend):
            raise fedexec.UnsupportedOnBackendError(
                f"env runners are actors, which the {self.executor.backend!r} backend lacks: "
                "use another backend, or num_env_runners=0 (sample in this process)")
        self._check_fits()
        try:
            self.runners = [self._start(i) for i in range(1, self.num_runners + 1)]
            self.executor.get([r.pid.remote() for r in self.runners])  # started, envs made
        except BaseException:
            self.stop()
            raise

    def _check_fits(self) -> None:
        """Refuse runners that could never all run at once: each holds its CPUs
        for its lifetime, and sampling waits for every one of them."""
        per = float(self.config.num_cpus_per_env_runner or 0)
        need = self.num_runners * per
        have = float(self.executor.cluster_resources().get("CPU", 0.0))
        if need > have:
            raise ValueError(
                f"{self.num_runners} env runners with num_cpus_per_env_runner={per:g} need "
                f"{need:g} CPUs, and the cluster has {have:g}: lower num_env_runners (or "
                f"num_cpus_per_env_runner, e.g. 0.5), or run on a bigger cluster")

    def _start(self, index: int, recreated: bool = False) -> Any:
        options = {"num_cpus": self.config.num_cpus_per_env_runner, "max_restarts": 0}
        if self.config.num_gpus_per_env_runner:
            options["num_gpus"] = self.config.num_gpus_per_env_runner
        return self.executor.options(**options).actor(
            EnvRunner, self.config, self.policy_class, self.env_creator, index,
            self.num_runners, recreated)

    # -- state --------------------------------------------------------------------------
    @property
    def num_healthy_runners(self) -> int:
        return len(self.runners) if self.runners else int(self.local_runner is not None)

    def sync(self, weights: Any, filter_state: Any = None) -> None:
        """Give every runner ``weights`` (one object-store put) and the filter state."""
        if self.local_runner is not None:
            self._state = (weights, filter_state)
            self.local_runner.set_state(weights, filter_state)
            return
        ref = self.executor.put(weights)
        self._state = (ref, filter_state)
        self.foreach_runner("set_state", ref, filter_state)

    # -- calling runners ----------------------------------------------------------------
    def foreach_runner(self, method: str | Callable[..., Any], *args: Any) -> list[Any]:
        """Call ``method`` (a name, or ``fn(runner, *args)``) on every runner at once;
        the results of those that answered (dead runners are replaced, see above)."""
        if self.local_runner is not None:
            return [self._call_local(method, *args)]
        refs = [self.submit(i, method, *args) for i in range(len(self.runners))]
        results = []
        for index, ref in enumerate(refs):
            try:
                results.append(self.executor.get(ref))
            except RUNNER_DEATHS as exc:
                self.replace(index, exc)
        return results

    def submit(self, index: int, method: str | Callable[..., Any], *args: Any) -> Any:
        """An ObjectRef of ``method(*args)`` on remote runner ``index`` (0-based);
        for asynchronous algorithms (collect it with :meth:`get`)."""
        runner = self.runners[index]
        if callable(method):
            return runner.apply.remote(method, *args)
        return getattr(runner, method).remote(*args)

    def get(self, index: int, ref: Any) -> tuple[bool, Any]:
        """``(True, value)`` of ``ref`` from runner ``index``, or ``(False, None)``
        when that runner died (it was replaced)."""
        try:
            return True, self.executor.get(ref)
        except RUNNER_DEATHS as exc:
            self.replace(index, exc)
            return False, None

    def _call_local(self, method: str | Callable[..., Any], *args: Any) -> Any:
        assert self.local_runner is not None
        if callable(method):
            return method(self.local_runner, *args)
        return getattr(self.local_runner, method)(*args)

    def replace(self, index: int, error: BaseException | None = None) -> None:
        """Start a new runner in place of runner ``index`` (0-based), with the last
        synced state.

        Raises:
            the runner's error: restarts are off or used up.
        """
        cfg = self.config
        if not cfg.restart_failed_env_runners or \
                self.num_restarts >= cfg.max_num_env_runner_restarts:
            if error is not None:
                raise error
            raise fedexec.ActorDiedError(f"env runner {index + 1} died and restarting is off")
        logger.warning("env runner %d died (%s); starting a new one", index + 1,
                       type(error).__name__ if error else "killed")
        with contextlib.suppress(Exception):
            self.executor.kill(self.runners[index])
        self.num_restarts += 1
        runner = self._start(index + 1, recreated=True)
        weights, filter_state = self._state
        self.executor.get(runner.set_state.remote(weights, filter_state))
        self.runners[index] = runner

    # -- sampling -----------------------------------------------------------------------
    def sample(self, num_steps: int) -> list[tuple[Any, dict[str, Any]]]:
        """``(batch, metrics)`` pieces from all runners, at least ``num_steps`` steps."""
        pieces: list[tuple[Any, dict[str, Any]]] = []
        total = 0
        rounds_without_data = 0
        while total < num_steps:
            got = self.foreach_runner("sample")
            pieces.extend(got)
            steps = sum(int(m["env_steps"]) for _, m in got)
            total += steps
            rounds_without_data = 0 if steps else rounds_without_data + 1
            if rounds_without_data > 10:
                raise fedexec.FedexecError("no env runner returned samples in 10 rounds: "
                                           "see the runners' logs")
        return pieces

    def sample_episodes(self, num_episodes: int, explore: bool = False) -> dict[str, Any]:
        """``num_episodes`` whole episodes split over the runners."""
        n = max(1, self.num_runners)
        shares = [num_episodes // n + (1 if i < num_episodes % n else 0) for i in range(n)]
        if self.local_runner is not None:
            return self.local_runner.sample_episodes(num_episodes, explore)
        refs = [(i, self.submit(i, "sample_episodes", share, explore))
                for i, share in enumerate(shares) if share]
        out: dict[str, Any] = {"episode_returns": [], "episode_lengths": []}
        for index, ref in refs:
            ok, value = self.get(index, ref)
            if ok:
                out["episode_returns"] += value["episode_returns"]
                out["episode_lengths"] += value["episode_lengths"]
        return out

    def pids(self) -> list[int]:
        """The process id of every remote runner (for tests and operators)."""
        return [int(p) for p in self.executor.get([r.pid.remote() for r in self.runners])]

    def stop(self) -> None:
        """End the runners (kill the actors; close the local runner's envs)."""
        if self.local_runner is not None:
            with contextlib.suppress(Exception):
                self.local_runner.stop()
        for runner in self.runners:
            with contextlib.suppress(Exception):
                self.executor.kill(runner)
        self.runners = []
