"""The job agent: the process that runs a cluster's jobs (``fedexec job ...``).

``fedexec start --head`` launches it next to the head (:func:`launch_agent`;
``python -m fedexec.backends.native.jobs_agent`` with its configuration as JSON on
stdin) and ``fedexec stop`` stops it (:func:`stop_agent`), which stops the jobs
still running. It also exits, stopping its jobs, when the head's process is gone.

Threads::

    main        accept loop (timeout 0.5 s): a thread per connection; watches the
                head's pid and SIGTERM, then stops the running jobs and exits
    conn-N      HMAC handshake on the cluster token (nothing is read before it
                succeeds; a failed one closes the connection), then one request
                frame at a time -> one reply frame (see ``jobs.py``)
    reap-<id>   waits for a job's process; records how it ended
    watch-<id>  the same for a job adopted after an agent restart (polls its pid)

State: ``JobAgent.jobs`` maps job ids to :class:`_Job` (a record, its process,
an ``ended`` event), guarded by ``JobAgent.lock``. Every record change is written
to ``$FEDEXEC_HOME/jobs/<job_id>/job.json`` (0600) before it is answered, so a
restarted agent lists the same jobs; a job it finds still running (same pid and
start time) it adopts, one whose process is gone it marks FAILED.

A job's process gets ``FEDEXEC_ADDRESS`` (the head's host:port), ``FEDEXEC_TOKEN``,
``FEDEXEC_JOB_ID`` and ``FEDEXEC_HOME``: a native executor made there without an
address joins the head (``cluster.join``) and reports the job's id as its
``job_id`` (``cluster.driver_job_id``).

Files per job: ``$FEDEXEC_HOME/jobs/<id>/{job.json,output.log}`` (kept after the
cluster stops) and its working directory ``<session>/jobs/<id>/`` (the head's
session directory, removed by ``fedexec stop``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import zipfile
from typing import Any

import psutil

from ...exceptions import FrameTooLargeError
from .jobs import (
    LOG_CHUNK,
    MAX_REQUEST_BYTES,
    MAX_UNPACKED_BYTES,
    JobErrorKind,
    JobStatus,
    recv_message,
    send_message,
)
from .messages import (
    JOB_REQUESTS,
    JobDone,
    JobList,
    JobLogs,
    JobRefused,
    JobStop,
    JobSubmit,
    MalformedMessage,
    decode,
    encode,
)
from .messages import JobStatus as JobStatusQuery
from .protocol import ServerHandshake

__all__ = ["JobAgent", "default_job_port", "launch_agent", "main", "stop_agent"]

STOP_GRACE = 5.0              # SIGTERM -> SIGKILL when the cluster stops
_HANDSHAKE_TIMEOUT = 10.0


def default_job_port(head_port: int) -> int:
    """The job agent's port when ``--job-port`` is not given: the head's + 1
    (0, any free port, when the head's is 0)."""
    return head_port + 1 if head_port else 0


class _Refusal(Exception):
    def __init__(self, kind: JobErrorKind, message: str):
        super().__init__(message)
        self.kind = kind


class _Job:
    __slots__ = ("create_time", "ended", "proc", "record", "stop_reason")

    def __init__(self, record: dict[str, Any]):
        self.record = record
        self.proc: subprocess.Popen[bytes] | None = None
        self.create_time: float | None = record.get("create_time")
        self.ended = threading.Event()
        self.stop_reason: str | None = None  # set when a stop was asked for

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.record["status"])


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "create_time"}


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class JobAgent:
    """Runs jobs for one cluster; see the module docstring."""

    def __init__(self, config: dict[str, Any], token: bytes):
        self.config = config
        self.token = token
        self.home = os.path.abspath(config["home"])
        self.jobs_dir = os.path.join(self.home, "jobs")
        self.work_root = os.path.join(config["session_dir"], "jobs")
        os.makedirs(self.jobs_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.work_root, mode=0o700, exist_ok=True)
        self.lock = threading.Lock()
        self.jobs: dict[str, _Job] = {}
        self.stopping = threading.Event()
        self._head = self._process(config.get("head_pid"))
        self._recover()

    # ---------------------------------------------------------- persistence
    def _save(self, job: _Job) -> None:
        job_dir = os.path.join(self.jobs_dir, job.record["job_id"])
        path = os.path.join(job_dir, "job.json")
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(job.record, f)
        os.replace(path + ".tmp", path)

    def _recover(self) -> None:
        """Load the jobs a previous agent recorded; adopt those still running."""
        for name in sorted(os.listdir(self.jobs_dir)):
            try:
                with open(os.path.join(self.jobs_dir, name, "job.json")) as f:
                    record = json.load(f)
                job = _Job(record)
                JobStatus(record["status"])
            except (OSError, ValueError, KeyError):
                continue
            self.jobs[record["job_id"]] = job
            if job.status.terminal:
                job.ended.set()
                continue
            proc = self._process(record.get("pid"), record.get("create_time"))
            if proc is None:
                self._finish(job, None, "the job agent exited while the job ran; its exit "
                                        "status is unknown")
            else:
                threading.Thread(target=self._watch, args=(job, proc), daemon=True,
                                 name=f"watch-{record['job_id']}").start()

    @staticmethod
    def _process(pid: int | None, create_time: float | None = None) -> psutil.Process | None:
        if not pid:
            return None
        try:
            proc = psutil.Process(pid)
            if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    # ----------------------------------------------------------- lifecycle
    def _finish(self, job: _Job, code: int | None, message: str | None = None) -> None:
        with self.lock:
            r = job.record
            r["exit_code"] = code
            r["end_time"] = time.time()
            if job.stop_reason is not None:
                r["status"] = JobStatus.STOPPED.value
                r["message"] = job.stop_reason
            elif code == 0:
                r["status"] = JobStatus.SUCCEEDED.value
            else:
                r["status"] = JobStatus.FAILED.value
                r["message"] = message or (_describe_exit(code) if code is not None else None)
            self._save(job)
        job.ended.set()

    def _reap(self, job: _Job) -> None:
        assert job.proc is not None
        code = job.proc.wait()
        self._finish(job, code)

    def _watch(self, job: _Job, proc: psutil.Process) -> None:
        while True:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.Error:
                break
            time.sleep(0.2)
        self._finish(job, None, "the job agent restarted while the job ran; its exit "
                                "status is unknown")

    def _submit(self, argv: Any, package: Any) -> dict[str, Any]:
        if (not isinstance(argv, list) or not argv
                or not all(isinstance(a, str) and "\0" not in a for a in argv)):
            raise _Refusal(JobErrorKind.BAD_REQUEST,
                           "the entrypoint must be a non-empty list of strings")
        if package is not None and not isinstance(package, bytes):
            raise _Refusal(JobErrorKind.BAD_REQUEST, "the working dir must be zip bytes")
        job_id = f"fedexec_job_{os.urandom(6).hex()}"
        job_dir = os.path.join(self.jobs_dir, job_id)
        work = os.path.join(self.work_root, job_id)
        os.makedirs(job_dir, mode=0o700)
        os.makedirs(work, mode=0o700)
        log_path = os.path.join(job_dir, "output.log")
        job = _Job({
            "job_id": job_id, "status": JobStatus.PENDING.value, "entrypoint": argv,
            "submitted_at": time.time(), "start_time": None, "end_time": None,
            "exit_code": None, "message": None, "pid": None,
            "working_dir": work, "log_path": log_path,
        })
        with self.lock:
            self.jobs[job_id] = job
            self._save(job)
        log = open(log_path, "ab")  # the child gets a copy; ours is closed below
        try:
            if package is not None:
                self._unpack(package, work)
            with self.lock:
                stopped = job.stop_reason is not None
            if stopped:
                self._finish(job, None)
                return _public(job.record)
            env = dict(os.environ)
            env.update({
                "FEDEXEC_ADDRESS": self.config["head_address"],
                "FEDEXEC_TOKEN": self.token.hex(),
                "FEDEXEC_JOB_ID": job_id,
                "FEDEXEC_HOME": self.home,
                "PYTHONUNBUFFERED": "1",
            })
            # 'python' in an entrypoint is the interpreter the cluster runs on.
            env["PATH"] = os.pathsep.join(
                [os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
            proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            why = f"could not start the job: {exc}"
            if isinstance(exc, FileNotFoundError) and exc.filename == argv[0]:
                why = (f"could not start the job: no program {argv[0]!r} (give the command "
                       "after '--' as separate words: -- python script.py ARGS)")
            log.write(f"fedexec: {why}\n".encode())
            self._finish(job, None, why)
            return _public(job.record)
        finally:
            log.close()
        with self.lock:
            job.proc = proc
            job.create_time = self._create_time(proc.pid)
            job.record.update(status=JobStatus.RUNNING.value, start_time=time.time(),
                              pid=proc.pid, create_time=job.create_time)
            self._save(job)
        threading.Thread(target=self._reap, args=(job,), daemon=True,
                         name=f"reap-{job_id}").start()
        return _public(job.record)

    @staticmethod
    def _create_time(pid: int) -> float | None:
        try:
            return float(psutil.Process(pid).create_time())
        except psutil.Error:
            return None

    @staticmethod
    def _unpack(package: bytes, dest: str) -> None:
        import io

        with zipfile.ZipFile(io.BytesIO(package)) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
                raise ValueError(f"the working dir unpacks to more than "
                                 f"{MAX_UNPACKED_BYTES >> 20} MiB")
            zf.extractall(dest)  # names with '..' or a leading '/' are made safe
            for info in infos:
                mode = (info.external_attr >> 16) & 0o777
                if mode & 0o111 and not info.is_dir():
                    path = os.path.join(dest, info.filename)
                    with contextlib.suppress(OSError):
                        if os.path.realpath(path).startswith(os.path.realpath(dest) + os.sep):
                            os.chmod(path, mode | 0o600)

    def _signal(self, job: _Job, sig: int) -> None:
        pid = job.record.get("pid")
        if not pid or job.ended.is_set():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # the job leads its own process group

    def _stop(self, job_id: str, grace: float, reason: str = "stopped by 'fedexec job stop'"
              ) -> dict[str, Any]:
        job = self._get(job_id)
        with self.lock:
            if job.ended.is_set() or job.status.terminal:
                return _public(job.record)
            job.stop_reason = reason
        self._signal(job, signal.SIGTERM)
        if not job.ended.wait(max(0.0, grace)):
            self._signal(job, signal.SIGKILL)
            job.ended.wait(10)
        return _public(job.record)

    def _get(self, job_id: Any) -> _Job:
        with self.lock:
            job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise _Refusal(JobErrorKind.NOT_FOUND,
                           f"no job {job_id!r} on this cluster; 'fedexec job list' shows its jobs")
        return job

    def _logs(self, job_id: str, offset: int, max_bytes: int) -> list[Any]:
        job = self._get(job_id)
        status = job.record["status"]  # read before the data: a final status means all is in
        try:
            with open(job.record["log_path"], "rb") as f:
                f.seek(max(0, int(offset)))
                data = f.read(max(0, min(int(max_bytes), LOG_CHUNK)))
        except FileNotFoundError:
            data = b""
        return [data, int(offset) + len(data), status]

    def _list(self) -> list[dict[str, Any]]:
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j.record.get("submitted_at") or 0)
            return [_public(j.record) for j in jobs]

    def handle(self, msg: list[Any]) -> Any:
        """Answer one request message (``messages.JOB_REQUESTS``); raises ``_Refusal``."""
        try:
            request = decode(msg, JOB_REQUESTS)
        except MalformedMessage as exc:
            raise _Refusal(JobErrorKind.BAD_REQUEST, f"malformed request: {exc}") from None
        try:
            if isinstance(request, JobSubmit):
                return self._submit(request.argv, request.package)
            if isinstance(request, JobStatusQuery):
                job = self._get(request.job_id)
                with self.lock:
                    return _public(job.record)
            if isinstance(request, JobLogs):
                return self._logs(request.job_id, request.offset, request.max_bytes)
            if isinstance(request, JobStop):
                return self._stop(request.job_id, float(request.grace))
            if isinstance(request, JobList):
                return self._list()
        except (TypeError, ValueError, IndexError) as exc:
            raise _Refusal(JobErrorKind.BAD_REQUEST,
                           f"malformed {type(request).__name__} request: {exc}") from None
        raise _Refusal(JobErrorKind.BAD_REQUEST, f"unsupported request {type(request).__name__}")

    # ------------------------------------------------------------- network
    def _serve_conn(self, sock: socket.socket, peer: Any) -> None:
        with sock:
            sock.settimeout(_HANDSHAKE_TIMEOUT)
            auth = ServerHandshake(self.token, roles=("job",), server="the job agent")
            try:
                sock.sendall(auth.greeting())
                while True:
                    data = sock.recv(4096)
                    if not data:
                        return
                    step = auth.feed(data)
                    if step.reply:
                        sock.sendall(step.reply)
                    if step.done:
                        break
            except OSError:
                return
            if step.error is not None:
                print(f"job agent: refused {peer}: {step.error}", flush=True)
                return
            leftover = step.leftover
            sock.settimeout(None)
            buf = bytearray(leftover)
            while True:
                try:
                    msg = recv_message(sock, buf, MAX_REQUEST_BYTES)
                except FrameTooLargeError as exc:
                    with contextlib.suppress(OSError):
                        send_message(sock, encode(JobRefused(JobErrorKind.TOO_LARGE,
                                                             str(exc))))
                    return
                except (OSError, ValueError):
                    return
                if msg is None:
                    return
                try:
                    answer = encode(JobDone(self.handle(msg)))
                except _Refusal as exc:
                    answer = encode(JobRefused(int(exc.kind), str(exc)))
                except Exception as exc:
                    traceback.print_exc()
                    answer = encode(JobRefused(JobErrorKind.INTERNAL,
                                               f"{type(exc).__name__}: {exc}"))
                try:
                    send_message(sock, answer)
                except OSError:
                    return

    def _head_alive(self) -> bool:
        if self._head is None:
            return True
        try:
            return self._head.is_running() and self._head.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def serve(self, server: socket.socket) -> None:
        """Accept connections until SIGTERM or the head's exit; then stop the jobs."""
        server.settimeout(0.5)
        reason = "the cluster was stopped ('fedexec stop')"
        last_check = 0.0
        while not self.stopping.is_set():
            try:
                sock, peer = server.accept()
            except TimeoutError:
                sock = None
            except OSError:
                if self.stopping.is_set():
                    break
                time.sleep(0.1)
                continue
            if sock is not None:
                threading.Thread(target=self._serve_conn, args=(sock, peer), daemon=True,
                                 name="conn").start()
            now = time.monotonic()
            if now - last_check > 1.0:
                last_check = now
                if not self._head_alive():
                    reason = "the cluster's head exited"
                    break
        server.close()
        self.shutdown(reason)

    def shutdown(self, reason: str) -> None:
        """Stop every running job (SIGTERM, SIGKILL after :data:`STOP_GRACE`)."""
        with self.lock:
            running = [j for j in self.jobs.values() if not j.ended.is_set()]
            for job in running:
                job.stop_reason = f"stopped: {reason}"
        for job in running:
            self._signal(job, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for job in running:
            if not job.ended.wait(max(0.0, deadline - time.monotonic())):
                self._signal(job, signal.SIGKILL)
        for job in running:
            job.ended.wait(5)


# ------------------------------------------------------------------ launch
def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + 3.0  # a just-stopped agent may still hold the port
    while True:
        try:
            return socket.create_server((host, port), family=family, backlog=64)
        except OSError as exc:
            if exc.errno != 98 or time.monotonic() > deadline:  # EADDRINUSE
                raise
            time.sleep(0.2)


def main() -> None:
    """Entry point: ``python -m fedexec.backends.native.jobs_agent``, the config as
    JSON on stdin (token included); the fd in ``ready_fd`` gets ``ready HOST:PORT``
    or ``error MESSAGE``."""
    config = json.loads(sys.stdin.buffer.read())
    token = bytes.fromhex(config.pop("token"))
    ready_fd = config.pop("ready_fd")
    try:
        server = _listen(config["host"], config["port"])
    except OSError as exc:
        os.write(ready_fd, f"error cannot listen on {config['host']}:{config['port']}: "
                           f"{exc.strerror or exc}".encode())
        sys.exit(1)
    agent = JobAgent(config, token)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    host, port = server.getsockname()[:2]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(f"job agent: serving on {address} for the head at {config['head_address']}",
          flush=True)
    os.write(ready_fd, f"ready {address}".encode())
    os.close(ready_fd)
    agent.serve(server)
    print("job agent: stopped", flush=True)


def launch_agent(*, host: str, port: int, head_address: str, head_pid: int, token: str,
                 session_dir: str, home: str, timeout: float = 30.0) -> dict[str, Any]:
    """Start a job agent in the background; returns ``{"address", "pid"}``.

    Raises:
        RuntimeError: it could not start (the message says why, e.g. a busy port).
    """
    home = os.path.abspath(home)
    ready_r, ready_w = os.pipe()
    config = {"host": host, "port": port, "head_address": head_address, "head_pid": head_pid,
              "token": token, "session_dir": session_dir, "home": home, "ready_fd": ready_w}
    with open(os.path.join(home, "job_agent.log"), "ab") as log:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedexec.backends.native.jobs_agent"],
                stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(ready_w,),
                cwd=home, start_new_session=True)
        finally:
            os.close(ready_w)
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(config).encode())
        proc.stdin.close()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            r, _, _ = select.select([ready_r], [], [], max(0.0, min(left, 0.5)))
            line = os.read(ready_r, 512).decode(errors="replace") if r else ""
            if line.startswith("ready "):
                return {"address": line[6:].strip(), "pid": proc.pid}
            if line.startswith("error "):
                proc.wait(5)
                raise RuntimeError(f"the job agent {line[6:]}; choose another port with "
                                   "--job-port (0: any free port)")
            if r or proc.poll() is not None or left <= 0:
                proc.kill()
                proc.wait(5)
                raise RuntimeError(f"the job agent did not start; see "
                                   f"{os.path.join(home, 'job_agent.log')}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        raise
    finally:
        os.close(ready_r)


def stop_agent(pid: int | None, timeout: float = STOP_GRACE + 10.0) -> None:
    """SIGTERM the job agent ``pid`` (it stops its jobs first); SIGKILL after
    ``timeout``. Does nothing if ``pid`` is not a job agent."""
    if not pid:
        return
    try:
        proc = psutil.Process(pid)
        if "fedexec.backends.native.jobs_agent" not in " ".join(proc.cmdline()):
            return
        proc.terminate()
    except psutil.Error:
        return
    if not _wait_gone(proc, timeout):
        with contextlib.suppress(psutil.Error):
            proc.kill()
        _wait_gone(proc, 5)


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait until ``proc`` exited (a zombie counts: its parent may reap it late)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            return True
        time.sleep(0.02)
    return False


if __name__ == "__main__":
    main()
