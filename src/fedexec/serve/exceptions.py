"""Errors of ``fedexec.serve`` (all are :class:`fedexec.FedexecError`)."""

from __future__ import annotations

from fedexec.exceptions import FedexecError


class ServeError(FedexecError):
    """Base of serve's errors; also raised when serve is misused (the message says
    what to change)."""


class ServeNotRunningError(ServeError):
    """Serve is not running in this cluster: call ``serve.run(app)`` or
    ``serve.start()`` first (the caller's fault)."""


class DeploymentNotFoundError(ServeError, KeyError):
    """No application or deployment of that name is running (the caller's fault)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ReplicaDiedError(ServeError):
    """The replica handling a request died after the request had started on it;
    requests that had not started are retried on another replica instead."""


class RequestTimeoutError(ServeError, TimeoutError):
    """A request or a handle's ``result(timeout_s=...)`` did not finish in time."""


class DeploymentFailedError(ServeError):
    """A deployment's replicas could not start (their constructor raised, or the
    cluster cannot place them); the message holds the replica's error."""
