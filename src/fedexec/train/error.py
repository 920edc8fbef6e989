"""Errors of ``fedexec.train``."""

from __future__ import annotations

from fedexec.exceptions import FedexecError

__all__ = ["TrainingFailedError"]


class TrainingFailedError(FedexecError):
    """Training failed more often than ``FailureConfig(max_failures)`` allows (a
    worker raised, its process or node died, or a collective timed out). The
    worker's error is ``__cause__`` (also ``.cause``); fix it, or raise
    ``max_failures`` and report checkpoints so restarts resume."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.__cause__ = cause
