"""Errors of ``fedexec.tune``."""

from __future__ import annotations

from fedexec.exceptions import FedexecError

__all__ = ["TuneError"]


class TuneError(FedexecError):
    """The experiment could not do what was asked: trials failed with
    ``raise_on_failed_trial=True``, ``report`` was called outside a trial, or the
    experiment directory cannot be restored. The message says which and why."""
