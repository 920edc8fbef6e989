"""A3C: asynchronous advantage actor-critic (Mnih et al. 2016).

The loss is A2C's (:mod:`fedexec.rl.a2c`); what differs is who computes the
gradient. Every env runner loops on its own::

    runner i: set weights (ref from the object store) -> sample one fragment
              -> GAE -> gradient of the A2C loss (clipped) --(grads, metrics)--> driver
    driver:   as each result arrives (fedexec.wait, first come first served):
              Adam step with those grads -> put the new weights once ->
              runner i's next request carries that ref

So runners never wait for each other, and a gradient may be a few updates stale.
One ``training_step`` applies gradients until ``train_batch_size`` env steps have
come in. With 0 env runners it runs the same loop in this process (synchronously).
"""

from __future__ import annotations

from typing import Any

from .a2c import A2C, A2CConfig
from .env_runner import EnvRunner

__all__ = ["A3C", "A3CConfig"]


class A3CConfig(A2CConfig):
    """``A2CConfig().training(asynchronous=True)``, with A3C's classic values:
    ``rollout_fragment_length`` 10, ``train_batch_size`` 500 (env steps per iteration)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or A3C)
        self.asynchronous = True
        self.rollout_fragment_length = 10


def _runner_gradients(runner: EnvRunner, weights: Any, filter_state: Any
                      ) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """On a runner: take ``weights``, sample one fragment, return the loss's gradient,
    its stats and the sample's metrics."""
    runner.set_state(weights, filter_state)
    batch, metrics = runner.sample()
    grads, stats = runner.policy.compute_gradients(batch)
    return grads, stats, metrics


class A3C(A2C):
    """Asynchronous advantage actor-critic (see the module docstring)."""

    config_class = A3CConfig

    def setup(self, config: dict[str, Any], **parameters: Any) -> None:
        super().setup(config, **parameters)
        self._inflight: dict[int, Any] = {}  # runner index -> ref of its gradient
        #: gradients applied, per runner index (0 for the local runner)
        self.gradient_pushes: dict[int, int] = {}

    def _launch(self, index: int, weights_ref: Any) -> None:
        group = self.env_runner_group
        assert group is not None
        self._inflight[index] = group.submit(index, _runner_gradients, weights_ref,
                                             self.filter.get_state())

    def training_step(self) -> dict[str, Any]:
        cfg = self.algo_config
        group = self.env_runner_group
        assert group is not None
        stats: dict[str, Any] = {}
        start = self._steps_this_iter
        if group.local_runner is not None:  # no runner actors: the same loop, in order
            while self._steps_this_iter - start < cfg.train_batch_size:
                stats = self._apply(0, *_runner_gradients(group.local_runner,
                                                          self.policy.get_weights(),
                                                          self.filter.get_state()))
            return stats
        executor = group.executor
        weights_ref = executor.put(self.policy.get_weights())
        for index in range(len(group.runners)):
            if index not in self._inflight:
                self._launch(index, weights_ref)
        while self._steps_this_iter - start < cfg.train_batch_size:
            refs = list(self._inflight.values())
            ready, _ = executor.wait(refs, num_returns=1)
            index = next(i for i, ref in self._inflight.items() if ref == ready[0])
            ok, value = group.get(index, self._inflight.pop(index))
            if ok:
                stats = self._apply(index, *value)
                weights_ref = executor.put(self.policy.get_weights())
            self._launch(index, weights_ref)
        return stats

    def _apply(self, index: int, grads: list[Any], stats: dict[str, Any],
               metrics: dict[str, Any]) -> dict[str, Any]:
        self.policy.apply_gradients(grads)
        self.gradient_pushes[index] = self.gradient_pushes.get(index, 0) + 1
        self.record_metrics(metrics)
        self.counters["num_env_steps_trained"] += int(metrics.get("env_steps", 0))
        return {**stats, "cur_lr": self.algo_config.lr,
                "num_gradient_pushes": sum(self.gradient_pushes.values())}
