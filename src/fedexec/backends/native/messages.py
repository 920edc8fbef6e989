"""Typed messages of the native protocol: frozen dataclasses and one encode/decode
table per channel. A first group -- the HELLO exchange and the job agent's requests
and answers; the node manager's messages are still the positional lists that
``protocol.Op`` documents.

Schema (``[...]``: a msgpack array, ``{...}``: a msgpack map)::

    HELLO exchange, first frame each way after the HMAC handshake (a map, so that
    any version can read the other's versions):
      Hello         {"protocol": int, "fedexec": str, "role": str}     client -> server
      HelloAnswer   {"protocol": int, "fedexec": str,                  server -> client
                     "error": [type name, message] | None}

    Job agent requests (JOB_REQUESTS, tagged by jobs.JobCall), client -> agent:
      JobSubmit     [1, argv: [str, ...], package: bytes | None]  -> job record
      JobStatus     [2, job_id: str]                              -> job record
      JobLogs       [3, job_id: str, offset: int, max_bytes: int] -> [data, next, status]
      JobStop       [4, job_id: str, grace: float]                -> job record, once ended
      JobList       [5]                                           -> [job record, ...]

    Job agent answers (JOB_ANSWERS, tagged by success), agent -> client:
      JobDone       [true, value]
      JobRefused    [false, kind: JobErrorKind, message: str]

:func:`encode` gives a message's wire form; :func:`decode` checks a wire form
against the table (its tag, the number and the types of its fields) and raises
:class:`MalformedMessage` (a ``ProtocolError`` and a ``ValueError``) for anything
else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from ...exceptions import ProtocolError

__all__ = [
    "JOB_ANSWERS",
    "JOB_REQUESTS",
    "Hello",
    "HelloAnswer",
    "JobDone",
    "JobList",
    "JobLogs",
    "JobRefused",
    "JobStatus",
    "JobStop",
    "JobSubmit",
    "MalformedMessage",
    "decode",
    "decode_map",
    "encode",
]


class MalformedMessage(ProtocolError, ValueError):
    """A message does not match its schema (the module docstring)."""


def _check(name: str, value: Any, *types: type) -> None:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        want = " or ".join("None" if t is type(None) else t.__name__ for t in types)
        raise MalformedMessage(f"{name} must be {want}, not {type(value).__name__}")


# --------------------------------------------------------------- HELLO exchange
@dataclasses.dataclass(frozen=True)
class Hello:
    """The client's HELLO: its protocol version, fedexec version and role."""

    protocol: int
    fedexec: str
    role: str

    def __post_init__(self) -> None:
        _check("Hello.protocol", self.protocol, int)
        _check("Hello.fedexec", self.fedexec, str)
        _check("Hello.role", self.role, str)


@dataclasses.dataclass(frozen=True)
class HelloAnswer:
    """The server's answer: its versions, and why it refuses the client (or None)."""

    protocol: int
    fedexec: str
    error: list[str] | None = None

    def __post_init__(self) -> None:
        _check("HelloAnswer.protocol", self.protocol, int)
        _check("HelloAnswer.fedexec", self.fedexec, str)
        if self.error is not None:
            _check("HelloAnswer.error", self.error, list)


# ---------------------------------------------------------------- job agent
@dataclasses.dataclass(frozen=True)
class JobSubmit:
    """Run ``argv`` as a job, in the zipped working directory ``package`` if any."""

    TAG: ClassVar[int] = 1
    argv: list[str]
    package: bytes | None = None

    def __post_init__(self) -> None:
        _check("JobSubmit.argv", self.argv, list)
        for arg in self.argv:
            _check("JobSubmit.argv[i]", arg, str)
        if self.package is not None:
            _check("JobSubmit.package", self.package, bytes)


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """A job's record."""

    TAG: ClassVar[int] = 2
    job_id: str

    def __post_init__(self) -> None:
        _check("JobStatus.job_id", self.job_id, str)


@dataclasses.dataclass(frozen=True)
class JobLogs:
    """Up to ``max_bytes`` of a job's log from ``offset`` on."""

    TAG: ClassVar[int] = 3
    job_id: str
    offset: int
    max_bytes: int

    def __post_init__(self) -> None:
        _check("JobLogs.job_id", self.job_id, str)
        _check("JobLogs.offset", self.offset, int)
        _check("JobLogs.max_bytes", self.max_bytes, int)


@dataclasses.dataclass(frozen=True)
class JobStop:
    """SIGTERM a job's process group, SIGKILL after ``grace`` seconds."""

    TAG: ClassVar[int] = 4
    job_id: str
    grace: float

    def __post_init__(self) -> None:
        _check("JobStop.job_id", self.job_id, str)
        _check("JobStop.grace", self.grace, int, float)


@dataclasses.dataclass(frozen=True)
class JobList:
    """Every job the agent knows."""

    TAG: ClassVar[int] = 5


@dataclasses.dataclass(frozen=True)
class JobDone:
    """A request's value."""

    TAG: ClassVar[bool] = True
    value: Any


@dataclasses.dataclass(frozen=True)
class JobRefused:
    """Why the agent refused a request (``kind``: a ``jobs.JobErrorKind``)."""

    TAG: ClassVar[bool] = False
    kind: int
    message: str

    def __post_init__(self) -> None:
        _check("JobRefused.kind", self.kind, int)
        _check("JobRefused.message", self.message, str)


# ------------------------------------------------------------------- codec
#: The tables: wire tag -> message class, per channel and direction.
JOB_REQUESTS: Mapping[Any, type] = {c.TAG: c for c in (JobSubmit, JobStatus, JobLogs,
                                                       JobStop, JobList)}
JOB_ANSWERS: Mapping[Any, type] = {c.TAG: c for c in (JobDone, JobRefused)}


def encode(msg: Any) -> Any:
    """A message's wire form: a map for the HELLO exchange, ``[tag, *fields]`` else."""
    values = [getattr(msg, f.name) for f in dataclasses.fields(msg)]
    if isinstance(msg, (Hello, HelloAnswer)):
        return {f.name: v for f, v in zip(dataclasses.fields(msg), values, strict=True)}
    return [type(msg).TAG, *values]


def decode(raw: Any, table: Mapping[Any, type]) -> Any:
    """The message ``raw`` (``[tag, *fields]``) stands for in ``table``; raises
    :class:`MalformedMessage` for an unknown tag or fields that do not fit."""
    if not isinstance(raw, list) or not raw:
        raise MalformedMessage(f"a message must be [tag, ...], not {str(raw)[:40]!r}")
    tag = raw[0]
    cls: Any
    try:
        cls = table.get(tag) if isinstance(tag, (bool, int)) else None
        if cls is not None and isinstance(tag, bool) != isinstance(cls.TAG, bool):
            cls = None  # True is not 1 here
    except TypeError:
        cls = None
    if cls is None:
        raise MalformedMessage(f"unknown message tag {tag!r}")
    fields = dataclasses.fields(cls)
    required = sum(1 for f in fields if f.default is dataclasses.MISSING)
    if not required <= len(raw) - 1 <= len(fields):
        raise MalformedMessage(f"{cls.__name__} takes {required} to {len(fields)} fields, "
                               f"not {len(raw) - 1}")
    return cls(*raw[1:])


def decode_map(raw: Any, cls: type) -> Any:
    """A HELLO-exchange message from its map; :class:`MalformedMessage` if a field
    is missing or of the wrong type (unknown keys are ignored: a newer peer's)."""
    if not isinstance(raw, dict):
        raise MalformedMessage(f"{cls.__name__} must be a map, not {type(raw).__name__}")
    fields = dataclasses.fields(cls)
    missing = [f.name for f in fields if f.name not in raw and f.default is dataclasses.MISSING]
    if missing:
        raise MalformedMessage(f"{cls.__name__} lacks {', '.join(missing)}")
    return cls(**{f.name: raw[f.name] for f in fields if f.name in raw})
