"""``tune.Callback``: hooks into the experiment loop, as Ray's.

User callbacks run in the controller's thread, in order, after the controller
has decided on the result: keep them quick (a slow callback slows every trial).
Loggers (:class:`~fedexec.tune.logger.LoggerCallback`) instead run on the
writer thread, off the hot path.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Callback"]


class Callback:
    """Override the hooks you need; each gets keyword ``info`` it may ignore."""

    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        """Called once before the first trial starts."""

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Called at the start of every loop iteration of the controller."""

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Called at the end of every loop iteration of the controller."""

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial started (or restarted)."""

    def on_trial_restore(self, iteration: int, trials: list[Any], trial: Any,
                         **info: Any) -> None:
        """A trial restarted from a checkpoint."""

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        """A trial reported a result."""

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        """A trial ended normally (or was stopped)."""

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any,
                       **info: Any) -> None:
        """A trial ended with an error (after its retries)."""

    def on_checkpoint(self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        """A trial's checkpoint was registered."""

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """The experiment ended (also when interrupted)."""
