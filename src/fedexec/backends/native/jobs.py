"""Jobs on a native cluster: ``fedexec job submit|status|logs|stop|list`` (client side).

A *job* is a command (usually ``python script.py ...``) that the cluster's **job
agent** runs on the head's machine, in a copy of the submitter's working directory,
as a driver of that cluster. The agent (``jobs_agent.py``) is started and stopped
with the head by ``fedexec start --head`` / ``fedexec stop``::

    fedexec job submit --working-dir D -- python s.py      job agent (jobs_agent.py)
      zip D (skip .git, __pycache__, .venv; <= 100 MiB)      unzip into <session>/jobs/<id>/
      ── TCP, HMAC handshake on the cluster token ──────▶    Popen(argv, cwd=that dir,
         SUBMIT [argv, zip]                                        own process group)
      ◀── [True, job record] ───────────────────────────      stdout+stderr ─▶ output.log
      LOGS [id, offset] (polled while following) ──────▶    $FEDEXEC_HOME/jobs/<id>/
                                                                job.json, output.log

Wire format: the connection is authenticated with the runtime's handshake
and HELLO as role ``"job"`` (``protocol.client_handshake``) before anything is
decoded; then each request is
one frame (``protocol.pack_frame``) holding one message ``[JobCall, *args]``, and
the agent answers it with one frame holding ``[True, value]`` or
``[False, JobErrorKind, message]`` (typed: ``messages.JOB_REQUESTS`` and
``messages.JOB_ANSWERS``). Everything is msgpack; nothing is pickled.

A job record (what ``status``/``list`` return, and what ``job.json`` holds)::

    job_id        "fedexec_job_<hex>"
    status        PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED
    entrypoint    the argv, as a list of strings
    submitted_at, start_time, end_time   seconds since the epoch (or None)
    exit_code     the entrypoint's exit status (negative: killed by that signal)
    message       why it failed or stopped, if the runtime knows
    pid           the entrypoint's process id (its process group id too)
    working_dir, log_path   on the agent's machine
"""

from __future__ import annotations

import enum
import io
import json
import os
import shlex
import socket
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

from ..._framing import recv_frame
from ...exceptions import AuthenticationError, ClusterUnreachableError, FedexecError
from . import cluster
from .messages import (
    JOB_ANSWERS,
    JobDone,
    JobList,
    JobLogs,
    JobStop,
    JobSubmit,
    decode,
    encode,
)
from .messages import JobStatus as JobStatusQuery
from .protocol import client_handshake, pack_frame

__all__ = [
    "MAX_PACKAGE_BYTES",
    "JobCall",
    "JobClient",
    "JobErrorKind",
    "JobStatus",
    "pack_working_dir",
]

MAX_PACKAGE_BYTES = 100 << 20  # a zipped --working-dir may not exceed this
MAX_UNPACKED_BYTES = 1 << 30   # nor hold more than this, unzipped
MAX_REQUEST_BYTES = MAX_PACKAGE_BYTES + (1 << 20)
MAX_REPLY_BYTES = 256 << 20
LOG_CHUNK = 1 << 20  # bytes of log one LOGS reply carries at most
EXCLUDED_DIRS = frozenset({".git", "__pycache__", ".venv"})


class JobCall(enum.IntEnum):
    """Requests to the job agent, with their arguments and reply values."""

    SUBMIT = 1   # [op, argv, zip bytes | None]          -> job record
    STATUS = 2   # [op, job_id]                          -> job record
    LOGS = 3     # [op, job_id, offset, max_bytes]       -> [data, next_offset, status]
    STOP = 4     # [op, job_id, grace_seconds]           -> job record (once it ended)
    LIST = 5     # [op]                                  -> [job record...] oldest first


class JobErrorKind(enum.IntEnum):
    """Why the agent refused a request."""

    BAD_REQUEST = 1
    NOT_FOUND = 2
    TOO_LARGE = 3
    INTERNAL = 4


class JobStatus(str, enum.Enum):
    """A job's state; the last three are final."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def terminal(self) -> bool:
        """True once the job has ended."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)


# ------------------------------------------------------------------- framing
def recv_message(sock: socket.socket, buf: bytearray, limit: int) -> Any | None:
    """Read one frame holding one message from ``sock`` (blocking); None at EOF.

    ``buf`` carries bytes read past the frame over to the next call. A frame
    announced larger than ``limit`` raises FrameTooLargeError before its body
    is read."""
    try:
        batch = recv_frame(sock, buf, limit)
    except EOFError:
        return None
    if not isinstance(batch, list) or len(batch) != 1 or not isinstance(batch[0], list):
        raise ValueError("a job frame must hold exactly one message, a list")
    return batch[0]


def send_message(sock: socket.socket, message: list[Any]) -> None:
    """Write one frame holding ``message``."""
    sock.sendall(pack_frame([message]))


# ------------------------------------------------------------ working dir
def pack_working_dir(path: str, limit: int = MAX_PACKAGE_BYTES) -> bytes:
    """Zip the directory ``path`` (without ``.git``, ``__pycache__``, ``.venv``).

    Raises:
        ValueError: ``path`` is not a directory, or the zip would exceed ``limit``.
    """
    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise ValueError(f"--working-dir {path!r} is not a directory")
    buf = io.BytesIO()
    raw = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if not os.path.isfile(full):  # a dangling link, a socket, a fifo
                    continue
                rel = os.path.relpath(full, root)
                raw += os.path.getsize(full)
                if raw > MAX_UNPACKED_BYTES:
                    raise ValueError(
                        f"--working-dir {path!r} holds more than {MAX_UNPACKED_BYTES >> 20} "
                        f"MiB (reached at {rel!r}): submit a smaller directory and keep data "
                        "sets outside it (read them from shared storage)")
                zf.write(full, rel)
                if buf.tell() > limit:
                    raise ValueError(
                        f"--working-dir {path!r} packs to more than {limit >> 20} MiB "
                        f"(reached at {rel!r}; .git, __pycache__ and .venv are already left "
                        "out): submit a smaller directory and keep data sets outside it "
                        "(read them from shared storage)")
    if len(buf.getbuffer()) > limit:
        raise ValueError(f"--working-dir {path!r} packs to more than {limit >> 20} MiB")
    return buf.getvalue()


# ------------------------------------------------------------------- client
class JobClient:
    """An authenticated connection to a cluster's job agent.

    Args:
        address: ``"auto"`` (the cluster started on this machine: its job agent's
            address is in ``cluster.json``) or the agent's ``"host:port"``.
        token: the cluster token; default ``FEDEXEC_TOKEN``, else the local token file.
        timeout: seconds to wait for the connection and the handshake.

    Raises:
        ClusterUnreachableError: no cluster / no job agent answers there.
        AuthenticationError: the agent refused the token (or there is none).
    """

    def __init__(self, address: str = "auto", token: str | None = None,
                 timeout: float = 10.0) -> None:
        if address == "auto":
            info = cluster.read_local_cluster()
            if info is None:
                raise ClusterUnreachableError(
                    "found no running fedexec cluster on this machine; start one with "
                    "'fedexec start --head', or pass --address HOST:PORT of a job agent"
                )
            if not info.get("job_address"):
                raise ClusterUnreachableError(
                    "the fedexec cluster on this machine runs no job agent (it was started "
                    "by an older fedexec); restart it with 'fedexec stop' and "
                    "'fedexec start --head'"
                )
            address = info["job_address"]
        resolved = cluster.resolve(address, token)
        target = resolved["target"]
        self.address = f"{target[1]}:{target[2]}" if target[0] == "tcp" else target[1]
        try:
            self._sock = cluster.connect(target, timeout)
        except ClusterUnreachableError as exc:
            raise ClusterUnreachableError(
                f"cannot reach a fedexec job agent at {self.address}: check the address "
                "(the agent listens next to the head; 'job_address' in cluster.json) and "
                "that the cluster is running ('fedexec status')"
            ) from exc
        try:
            client_handshake(self._sock, resolved["token"], timeout, role="job")
        except AuthenticationError as exc:
            self._sock.close()
            raise AuthenticationError(
                f"the job agent at {self.address} refused the cluster token: set "
                "FEDEXEC_TOKEN to the token in the head's token file "
                "($FEDEXEC_HOME/token on the head's machine)"
            ) from exc
        except OSError as exc:
            self._sock.close()
            raise ClusterUnreachableError(
                f"the job agent at {self.address} closed the connection: {exc}") from exc
        self._buf = bytearray()

    # ------------------------------------------------------------- requests
    def _call(self, request: Any) -> Any:
        try:
            send_message(self._sock, encode(request))
            reply = recv_message(self._sock, self._buf, MAX_REPLY_BYTES)
        except OSError as exc:
            raise ClusterUnreachableError(
                f"lost the connection to the job agent at {self.address}: {exc}") from exc
        if reply is None:
            raise ClusterUnreachableError(
                f"the job agent at {self.address} closed the connection (did the cluster "
                "stop?)")
        answer = decode(reply, JOB_ANSWERS)
        if isinstance(answer, JobDone):
            return answer.value
        kind, message = JobErrorKind(answer.kind), answer.message
        if kind in (JobErrorKind.NOT_FOUND, JobErrorKind.BAD_REQUEST, JobErrorKind.TOO_LARGE):
            raise ValueError(message)
        raise FedexecError(f"the job agent failed: {message}")

    def submit(self, entrypoint: Sequence[str], *, working_dir: str | None = None) -> dict[str, Any]:
        """Start ``entrypoint`` (an argv) as a job, in a copy of ``working_dir`` if
        given; returns its record (``record["job_id"]``)."""
        argv = list(entrypoint)
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("the entrypoint must be a non-empty list of strings "
                             "(write it after '--': fedexec job submit -- python script.py)")
        package = pack_working_dir(working_dir) if working_dir is not None else None
        return dict(self._call(JobSubmit(argv, package)))

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's record. ``ValueError`` if there is no such job."""
        return dict(self._call(JobStatusQuery(job_id)))

    def logs(self, job_id: str, offset: int = 0,
             max_bytes: int = LOG_CHUNK) -> tuple[bytes, int, JobStatus]:
        """Log bytes from ``offset`` on: ``(data, next_offset, status)``."""
        data, nxt, status = self._call(JobLogs(job_id, offset, max_bytes))
        return bytes(data), int(nxt), JobStatus(status)

    def follow(self, job_id: str, offset: int = 0, poll: float = 0.2) -> Iterator[bytes]:
        """Yield the job's log as it grows, until the job has ended and all is read."""
        while True:
            data, offset, status = self.logs(job_id, offset)
            if data:
                yield data
            elif status.terminal:
                return
            else:
                time.sleep(poll)

    def wait(self, job_id: str, timeout: float | None = None,
             poll: float = 0.2) -> dict[str, Any]:
        """Block until the job ends; its record. ``TimeoutError`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.status(job_id)
            if JobStatus(record["status"]).terminal:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {record['status']}")
            time.sleep(poll)

    def stop(self, job_id: str, grace: float = 10.0) -> dict[str, Any]:
        """SIGTERM the job's process group, SIGKILL after ``grace`` seconds; returns
        the record once it ended (a job that already ended is left as it is)."""
        return dict(self._call(JobStop(job_id, float(grace))))

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job this cluster's agent knows, oldest first."""
        return [dict(r) for r in self._call(JobList())]

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- CLI
def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _describe(r: dict[str, Any]) -> str:
    lines = [
        f"job_id:      {r['job_id']}",
        f"status:      {r['status']}",
        f"entrypoint:  {shlex.join(r['entrypoint'])}",
        f"exit_code:   {'-' if r.get('exit_code') is None else r['exit_code']}",
        f"submitted:   {_when(r.get('submitted_at'))}",
        f"started:     {_when(r.get('start_time'))}",
        f"ended:       {_when(r.get('end_time'))}",
    ]
    if r.get("message"):
        lines.append(f"message:     {r['message']}")
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ("JOB_ID", "STATUS", "EXIT", "STARTED", "ENDED", "ENTRYPOINT")
    cells = [(r["job_id"], r["status"], "-" if r.get("exit_code") is None else str(r["exit_code"]),
              _when(r.get("start_time")), _when(r.get("end_time")), shlex.join(r["entrypoint"]))
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]
    return "\n".join(out)


def _stream(client: JobClient, job_id: str) -> None:
    out = sys.stdout.buffer
    for chunk in client.follow(job_id):
        out.write(chunk)
        out.flush()


def run_cli(args: Any) -> int:
    """``fedexec job ...`` (``args`` from the parser in ``fedexec.cli``).

    Exit status: 0 when the command did its work (``submit``: the job SUCCEEDED);
    1 when a waited-for job FAILED or was STOPPED; 2 when the command could not be
    carried out (no cluster, a refused token, an unknown job id, a bad argument).
    """
    what = f"fedexec job {args.job_command}"
    try:
        with JobClient(args.address) as client:
            return _run(client, args)
    except KeyboardInterrupt:
        print(f"\n{what}: interrupted; the job keeps running (stop it with "
              "'fedexec job stop JOB_ID')", file=sys.stderr)
        return 130
    except (FedexecError, ValueError, TimeoutError) as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return 2


def _run(client: JobClient, args: Any) -> int:
    cmd = args.job_command
    if cmd == "submit":
        argv = list(args.entrypoint)
        if argv and argv[0] == "--":
            argv = argv[1:]
        record = client.submit(argv, working_dir=args.working_dir)
        job_id = record["job_id"]
        if args.no_wait:
            print(job_id)
            return 0
        print(f"submitted {job_id}; following its output (Ctrl-C detaches, the job keeps "
              "running)", file=sys.stderr)
        _stream(client, job_id)
        record = client.status(job_id)
        tail = f" (exit code {record['exit_code']})" if record.get("exit_code") else ""
        note = f": {record['message']}" if record.get("message") else ""
        print(f"job {job_id} {record['status']}{tail}{note}", file=sys.stderr)
        return 0 if record["status"] == JobStatus.SUCCEEDED else 1
    if cmd == "status":
        record = client.status(args.job_id)
        print(json.dumps(record, indent=2) if args.format == "json" else _describe(record))
        return 0
    if cmd == "logs":
        if args.follow:
            _stream(client, args.job_id)
        else:
            offset = 0
            while True:
                data, offset, _ = client.logs(args.job_id, offset)
                if not data:
                    break
                sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return 0
    if cmd == "stop":
        record = client.stop(args.job_id, args.grace)
        print(f"job {record['job_id']} {record['status']}")
        return 0
    if cmd == "list":
        rows = client.list_jobs()
        if args.format == "json":
            print(json.dumps(rows, indent=2))
        elif rows:
            print(_table(rows))
        else:
            print("no jobs")
        return 0
    raise ValueError(f"unknown job command {cmd!r}")
