"""A native cluster started from the command line (``fedexec start --head``) and
how drivers find and join it (``Executor(address="auto" | "host:port")``).

The head is a node manager that is not owned by any driver: it listens on a Unix
socket and on TCP (127.0.0.1 unless told otherwise), runs until ``fedexec stop``,
and writes two files in the cluster directory (``$FEDEXEC_HOME``, else
``<tmp>/fedexec-<uid>``), both mode 0600::

    cluster.json   address, Unix socket, pid, node id, session directories
    token          the cluster token (hex); drivers and joiners need it

Every connection, local or TCP, is authenticated with an HMAC challenge on the
token before anything it sends is decoded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import tempfile
import time
from typing import Any

from ..._pids import pid_alive
from ...exceptions import AuthenticationError, ClusterUnreachableError

__all__ = ["DEFAULT_PORT", "cluster_dir", "driver_job_id", "forget_head_token", "join",
           "read_local_cluster", "remember_head_token", "resolve", "start_head", "start_node",
           "stop_head", "stop_node", "stop_nodes"]

DEFAULT_PORT = 6390


def cluster_dir() -> str:
    """Where this machine's cluster files live (created 0700)."""
    path = os.environ.get("FEDEXEC_HOME") or os.path.join(
        tempfile.gettempdir(), f"fedexec-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _write_private(path: str, text: str) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def read_local_cluster() -> dict[str, Any] | None:
    """The head started on this machine, if one is running."""
    path = os.path.join(cluster_dir(), "cluster.json")
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if not pid_alive(info.get("pid")):
        return None
    return dict(info)


def _local_token() -> str | None:
    try:
        with open(os.path.join(cluster_dir(), "token")) as f:
            return f.read().strip()
    except OSError:
        return None


def start_head(*, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
               num_cpus: float | None = None, num_gpus: float | None = None,
               resources: dict[str, float] | None = None,
               object_store_memory: int | None = None,
               job_port: int | None = None,
               worker_preload: list[str] | None = None,
               dashboard: bool = True, dashboard_host: str = "127.0.0.1",
               dashboard_port: int = 8265) -> dict[str, Any]:
    """Start a head node manager in the background, its job agent (on
    ``job_port``, default the head's port + 1) and, with ``dashboard``, its
    dashboard (``fedexec.dashboard``); returns its cluster info
    (``dashboard_url``, or ``dashboard_error`` saying why there is none: a head
    runs without its dashboard rather than not at all).
    ``worker_preload``: modules its workers start with (the backend option)."""
    from ...config import RuntimeConfig
    from .runtime import NodeProcess

    running = read_local_cluster()
    if running is not None:
        raise RuntimeError(
            f"a fedexec head is already running here (pid {running['pid']}, address "
            f"{running['address']}); run 'fedexec stop' first"
        )
    state_dir = os.path.join(cluster_dir(), "head-state")
    # A head that was killed left its state (a clean stop removes it): the new head
    # takes it back with the old token, so the nodes still running rejoin it.
    from .headstore import FILE_NAME

    crashed = os.path.exists(os.path.join(state_dir, FILE_NAME))
    token = (_local_token() if crashed else None) or os.urandom(32).hex()
    config = RuntimeConfig.make(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                                object_store_memory=object_store_memory, token=token,
                                backend_options={"worker_preload": worker_preload or [],
                                                 "state_dir": state_dir})
    log_path = os.path.join(cluster_dir(), "head.log")
    node = NodeProcess.launch(config, embedded=False, tcp=(host, port), log_path=log_path)
    from .jobs_agent import default_job_port, launch_agent

    try:
        agent = launch_agent(
            host=host, port=default_job_port(port) if job_port is None else job_port,
            head_address=node.info["address"], head_pid=node.proc.pid, token=token,
            session_dir=node.dirs[-1], home=cluster_dir())
    except BaseException:
        node.proc.terminate()
        node.stop()
        raise
    board: dict[str, Any] = {}
    if dashboard:
        from ...dashboard import launch as launch_dashboard

        try:
            started = launch_dashboard(
                head_address=node.info["address"], token=token, host=dashboard_host,
                port=dashboard_port, job_address=agent["address"], head_pid=node.proc.pid,
                log_path=os.path.join(cluster_dir(), "dashboard.log"))
            board = {"dashboard_url": started["url"], "dashboard_pid": started["pid"]}
        except RuntimeError as exc:
            board = {"dashboard_error": str(exc)}
    info = {
        **board,
        "address": node.info["address"],
        "socket_path": node.info["socket_path"],
        "pid": node.proc.pid,
        "node_id": node.info["node_id"],
        "dirs": node.dirs,
        "log": log_path,
        "job_address": agent["address"],
        "job_agent_pid": agent["pid"],
    }
    _write_private(os.path.join(cluster_dir(), "token"), token + "\n")
    _write_private(os.path.join(cluster_dir(), "cluster.json"), json.dumps(info))
    return info


def _nodes_dir() -> str:
    path = os.path.join(cluster_dir(), "nodes")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def start_node(address: str, *, token: str | None = None, host: str = "127.0.0.1",
               port: int = 0, num_cpus: float | None = None, num_gpus: float | None = None,
               resources: dict[str, float] | None = None,
               object_store_memory: int | None = None,
               worker_preload: list[str] | None = None) -> dict[str, Any]:
    """Start a node manager on this machine that joins the head at ``address``
    (``host:port``), in the background; returns its info. The token comes from
    ``token``, ``FEDEXEC_TOKEN`` or this machine's token file; ``worker_preload``
    names modules its workers start with (the backend option)."""
    from ...config import RuntimeConfig
    from .runtime import NodeProcess

    token = token or os.environ.get("FEDEXEC_TOKEN") or _local_token()
    if not token:
        raise AuthenticationError(
            "no cluster token: pass --token, set FEDEXEC_TOKEN, or copy the head's token "
            f"file to {os.path.join(cluster_dir(), 'token')}"
        )
    host_part, sep, port_part = address.rpartition(":")
    if not sep or not port_part.isdigit():
        raise ValueError(f"--address must be HOST:PORT, got {address!r}")
    # Fail fast, with the usual errors, if the head is not there or refuses the token.
    from .protocol import client_handshake

    probe = connect(("tcp", host_part.strip("[]") or "127.0.0.1", int(port_part)))
    try:
        client_handshake(probe, token_bytes(token), role="node")
    finally:
        probe.close()
    config = RuntimeConfig.make(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                                object_store_memory=object_store_memory, token=token,
                                backend_options={"worker_preload": worker_preload or []})
    log_path = os.path.join(_nodes_dir(), f"node-{os.getpid()}-{time.time_ns()}.log")
    node = NodeProcess.launch(config, embedded=False, tcp=(host, port), log_path=log_path,
                              head_address=address)
    info = {"address": node.info["address"], "pid": node.proc.pid,
            "node_id": node.info["node_id"], "dirs": node.dirs, "log": log_path,
            "head": address}
    _write_private(os.path.join(_nodes_dir(), f"{node.info['node_id']}.json"),
                   json.dumps(info))
    return info


def _stop_pid(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop_node(node_id: str, timeout: float = 15.0) -> bool:
    """Stop one node started on this machine by ``start_node`` (SIGTERM, then SIGKILL
    after ``timeout`` s) and remove its files; False if it was not running."""
    import shutil

    path = os.path.join(_nodes_dir(), f"{node_id}.json")
    try:
        with open(path) as f:
            info = json.load(f)
        os.kill(info["pid"], 0)
    except (OSError, ValueError, KeyError):
        info = None
    if info is not None:
        _stop_pid(info["pid"], timeout)
        for d in info.get("dirs", []):
            shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return info is not None


def stop_nodes(timeout: float = 15.0) -> int:
    """Stop the (non-head) nodes started on this machine; how many were running."""
    names = sorted(os.listdir(_nodes_dir()))
    return sum(stop_node(name[:-len(".json")], timeout) for name in names
               if name.endswith(".json"))


def stop_head(timeout: float = 15.0) -> bool:
    """Stop this machine's head (and its workers); False if none was running."""
    import shutil

    info = read_local_cluster()
    files = [os.path.join(cluster_dir(), n) for n in ("cluster.json", "token")]
    if info is None:
        for f in files:
            with contextlib.suppress(OSError):
                os.unlink(f)
        return False
    from .jobs_agent import stop_agent

    stop_agent(info.get("job_agent_pid"))  # it stops the jobs still running first
    if info.get("dashboard_pid"):
        from ...dashboard import stop as stop_dashboard

        stop_dashboard(info["dashboard_pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], signal.SIGKILL)
    for d in info.get("dirs", []):
        shutil.rmtree(d, ignore_errors=True)
    for f in files:
        with contextlib.suppress(OSError):
            os.unlink(f)
    return True


def resolve(address: str, token: str | None) -> dict[str, Any]:
    """How a driver connects to ``address`` ("auto" or "host:port"): the socket to
    use and the token (from ``token``, ``FEDEXEC_TOKEN``, or the local token file)."""
    token = token or _known_head_token(address) or os.environ.get("FEDEXEC_TOKEN") or \
        _local_token()
    if address == "auto":
        info = read_local_cluster()
        if info is None:
            raise ClusterUnreachableError(
                "address='auto' found no running fedexec cluster on this machine; start "
                "one with 'fedexec start --head', or pass address='host:port'"
            )
        target: tuple[Any, ...] = ("unix", info["socket_path"])
    else:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(
                f"address must be 'auto' or 'host:port' for the native backend, got {address!r}"
            )
        target = ("tcp", host.strip("[]") or "127.0.0.1", int(port))
    if not token:
        raise AuthenticationError(
            "no cluster token: pass token=..., set FEDEXEC_TOKEN, or run on the machine "
            "where 'fedexec start --head' wrote its token file"
        )
    return {"target": target, "token": token_bytes(token), "role": "driver"}


# Set by the job agent for the processes of a job (see jobs_agent.py).
ADDRESS_ENV, JOB_ID_ENV = "FEDEXEC_ADDRESS", "FEDEXEC_JOB_ID"
# Executor arguments that only shape a runtime the executor starts itself.
_OWN_RUNTIME_ONLY = ("num_cpus", "num_gpus", "resources", "object_store_memory", "initializer")


def join(config: Any) -> dict[str, Any] | None:
    """How a native driver made with ``config`` connects (what :func:`resolve`
    returns, plus a ``hint`` for connection errors), or None when it starts an
    embedded runtime.

    ``config.address`` wins; ``"local"`` always means an embedded runtime. With no
    address, a process of a job (``FEDEXEC_ADDRESS`` set; read here, at
    construction, never at import) joins the job's cluster, as ``ray.init()``
    does inside a Ray job. ``max_workers`` is accepted and ignored when joining.

    Raises:
        ValueError: it joins a cluster but ``config`` sets an argument that only
            shapes a runtime of its own (``num_cpus``, ``num_gpus``, ``resources``,
            ``object_store_memory``, ``initializer``), as Ray refuses them.
    """
    address, hint = config.address, ""
    if address is None and os.environ.get(ADDRESS_ENV):
        address = os.environ[ADDRESS_ENV]
        hint = (f"; the address came from {ADDRESS_ENV}, set for the processes of a "
                "'fedexec job submit' job: is that cluster still running? (address='local' "
                "starts a private runtime instead)")
    if address in (None, "local"):
        return None
    asked = [name for name in _OWN_RUNTIME_ONLY if getattr(config, name)]
    if asked:
        where = f"{address!r} (from {ADDRESS_ENV})" if hint else repr(address)
        raise ValueError(
            f"{', '.join(asked)} only shape a runtime this executor starts, but it joins "
            f"the cluster at {where}: leave them out (a cluster offers what its nodes were "
            "started with, 'fedexec start --num-cpus N --num-gpus N --resources JSON', and "
            "its workers are shared: do per-worker setup inside your tasks), or pass "
            "address='local' for a private runtime")
    return {**resolve(address, config.token), "hint": hint}




def driver_job_id(cluster_id: str) -> str:
    """This process's job id on the cluster whose head is ``cluster_id``: the
    job's id (``FEDEXEC_JOB_ID``) in a process of a job, else one derived from
    this process (pid and start time) and the cluster, the same for every
    executor of one driver and different in a forked child."""
    job_id = os.environ.get(JOB_ID_ENV)
    if job_id:
        return job_id
    import hashlib

    import psutil

    me = f"{os.getpid()}:{psutil.Process().create_time()}:{cluster_id}"
    return hashlib.blake2b(me.encode(), digest_size=4).hexdigest()


def _heads_dir() -> str:
    path = os.path.join(cluster_dir(), "heads")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _head_file(address: str) -> str:
    return os.path.join(_heads_dir(), address.replace(":", "_").replace("/", "_") + ".json")


def remember_head_token(address: str, token: str, pid: int) -> None:
    """Record (mode 0600) the token of a head started from Python on this machine,
    so ``Executor(address=address)`` here finds it while process ``pid`` lives."""
    _write_private(_head_file(address), json.dumps({"token": token, "pid": pid}))


def forget_head_token(address: str) -> None:
    """Remove what :func:`remember_head_token` recorded for ``address``."""
    with contextlib.suppress(OSError):
        os.unlink(_head_file(address))


def _known_head_token(address: str) -> str | None:
    """The token recorded for the head at ``address`` if that head still runs."""
    if address == "auto":
        return None
    try:
        with open(_head_file(address)) as f:
            info = json.load(f)
        os.kill(int(info["pid"]), 0)
    except PermissionError:
        pass
    except (OSError, ValueError, KeyError, TypeError):
        return None
    token = info.get("token")
    return token if isinstance(token, str) else None


def token_bytes(token: str) -> bytes:
    """The key a token string stands for: its bytes if it is hex, else its UTF-8."""
    try:
        return bytes.fromhex(token)
    except ValueError:
        return token.encode()


def connect(target: tuple[Any, ...], timeout: float = 10.0) -> socket.socket:
    """Open the socket to a node manager ("unix", path) or ("tcp", host, port)."""
    try:
        if target[0] == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(target[1])
        else:
            sock = socket.create_connection((target[1], target[2]), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return sock
    except OSError as exc:
        where = target[1] if target[0] == "unix" else f"{target[1]}:{target[2]}"
        raise ClusterUnreachableError(
            f"cannot reach a fedexec node manager at {where} ({exc.strerror or exc}); check "
            "the address, and that the cluster is running ('fedexec status')"
        ) from exc
