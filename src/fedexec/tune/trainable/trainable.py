"""``tune.Trainable``: the class API of trainables.

A subclass implements ``setup(config)``, ``step() -> dict`` (one iteration), and,
to be checkpointable, ``save_checkpoint(dir)`` / ``load_checkpoint(dir)``;
``cleanup()`` runs at the end and ``reset_config(new_config) -> bool`` lets a
reused actor take a new trial without a new ``setup``. Tune calls the public
methods ``train()``, ``save()``, ``restore()``, ``stop()``, which also work on an
instance made by hand (``MyTrainable(config).train()``).

The classic names of Ray 0.x (``_setup``, ``_train``, ``_save``, ``_restore``,
``_stop``) are accepted as aliases of the modern ones.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .session import Outbox, Session, TrialContext, load_dict, read_metadata, write_metadata

__all__ = ["Trainable"]

class Trainable:
    """Base class of class trainables (as Ray's ``tune.Trainable``).

    Args:
        config: the trial's hyperparameters (``self.config``).
        **parameters: objects given with ``tune.with_parameters``, passed on to
            ``setup(config, **parameters)``.
    """

    def __init__(self, config: dict[str, Any] | None = None, logger_creator: Any = None,
                 storage: Any = None, **parameters: Any) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self._session = parameters.pop("_tune_session", None) or Session(
            TrialContext("default", "default", tempfile.gettempdir(), "default"),
            Outbox(window=1 << 30))
        self.setup(dict(self.config), **parameters)

    # -- what subclasses implement ---------------------------------------------
    def setup(self, config: dict[str, Any], **parameters: Any) -> None:
        """Prepare the trial (called once, with the config)."""
        legacy = getattr(self, "_setup", None)
        if legacy is not None:
            legacy(config)

    def step(self) -> dict[str, Any]:
        """One iteration; returns its metrics (``"done": True`` ends the trial)."""
        legacy = getattr(self, "_train", None)
        if legacy is None:
            raise NotImplementedError(f"{type(self).__name__} must implement step()")
        return legacy()

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any] | None:
        """Write the state into ``checkpoint_dir`` (or return it as a dict)."""
        legacy = getattr(self, "_save", None)
        if legacy is None:
            raise NotImplementedError(f"{type(self).__name__} does not implement "
                                      "save_checkpoint(), so it cannot be checkpointed")
        return legacy(checkpoint_dir)

    def load_checkpoint(self, checkpoint: Any) -> None:
        """Load what ``save_checkpoint`` wrote (its directory, or its dict)."""
        legacy = getattr(self, "_restore", None)
        if legacy is None:
            raise NotImplementedError(f"{type(self).__name__} does not implement "
                                      "load_checkpoint(), so it cannot be restored")
        legacy(checkpoint)

    def cleanup(self) -> None:
        """Release what ``setup`` took (called once at the end)."""
        legacy = getattr(self, "_stop", None)
        if legacy is not None:
            legacy()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Take ``new_config`` in place (for a reused actor); False: not supported."""
        return False

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> Any:
        """The resources a trial of this class needs (None: one CPU)."""
        return None

    # -- what tune calls ----------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run one ``step`` and return its result with the automatic fields."""
        metrics = self.step()
        if not isinstance(metrics, dict):
            raise TypeError(f"{type(self).__name__}.step() must return a dict of metrics, "
                            f"not {type(metrics).__name__}")
        return self._session.next_result(metrics)

    def save(self, checkpoint_dir: str | None = None) -> str:
        """Save a checkpoint into ``checkpoint_dir`` (default: the trial's next
        checkpoint directory) and return the directory."""
        directory = checkpoint_dir or self._session.checkpoint_dir()
        os.makedirs(directory, exist_ok=True)
        state = self.save_checkpoint(directory)
        if isinstance(state, dict):
            self._session.save_dict(directory, state)
        elif state is not None and os.path.isdir(str(state)) and \
                os.path.abspath(str(state)) != os.path.abspath(directory):
            from shutil import copytree

            copytree(str(state), directory, dirs_exist_ok=True)
        write_metadata(directory, self._session.iteration, self._session.time_total())
        return directory

    def restore(self, checkpoint: Any) -> None:
        """Load a checkpoint (a directory, or a ``tune.Checkpoint``) and take its
        iteration counters."""
        directory = getattr(checkpoint, "path", checkpoint)
        directory = os.fspath(directory)
        state = load_dict(directory)
        self.load_checkpoint(state if state is not None else directory)
        iteration, time_total = read_metadata(directory)
        self._session.restore_counters(iteration, time_total)

    def reset(self, new_config: dict[str, Any]) -> bool:
        """Try :meth:`reset_config`; on success ``self.config`` is ``new_config``."""
        if self.reset_config(dict(new_config)):
            self.config = dict(new_config)
            return True
        return False

    def stop(self) -> None:
        """End the trainable: runs :meth:`cleanup`."""
        self.cleanup()

    # -- properties ---------------------------------------------------------------
    @property
    def iteration(self) -> int:
        """The number of ``train()`` calls so far (counting restored ones)."""
        return self._session.iteration

    training_iteration = iteration

    @property
    def trial_id(self) -> str:
        return self._session.context.trial_id

    @property
    def trial_name(self) -> str:
        return self._session.context.trial_name

    @property
    def logdir(self) -> str:
        return self._session.context.trial_dir

    @property
    def trial_resources(self) -> dict[str, float]:
        return self._session.context.get_trial_resources()
