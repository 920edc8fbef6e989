"""``fedexec up|down|monitor cluster.yaml`` (hooked into ``fedexec.cli``).

``up`` starts the cluster's head on this machine (or keeps the one running) and a
detached autoscaler monitor process for it (re-running ``up`` replaces the monitor,
so a changed config takes effect, and duplicates nothing); ``down`` stops the
monitor, terminates every node it started, and stops the head if ``up`` started it;
``monitor`` prints the autoscaler's log (and follows it unless ``--no-follow``;
with ``--no-follow`` and no log here, the latest round its monitor, wherever it
runs, reported to the head).

With the ``ssh`` provider the head runs on this machine, listening on
``provider.head_ip``, when that is one of this machine's addresses; else (or with
``provider.head_over_ssh: true``) ``up`` starts it on the head host over SSH
(:mod:`.remote_head`) and the monitor runs here, joining it with the token read
there, or with ``provider.monitor_on_head: true`` on the head (:mod:`.remote_monitor`). Worker nodes start on ``provider.worker_ips`` over SSH; exec, submit, attach, rsync-up/down
and get-head-ip are in :mod:`._launcher_cli`. The head listens on the usual ports
(6390, jobs 6391) unless ``provider: {head_port: N, job_port: M}`` say otherwise.
What ``up`` started is kept under ``$FEDEXEC_HOME/autoscaler/<cluster_name>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from .._pids import pid_alive

__all__ = ["add_parser", "status_lines"]


def add_parser(sub: Any) -> None:
    """Add ``up``, ``down``, ``monitor`` and the launcher commands (exec, submit,
    attach, rsync-up, rsync-down, get-head-ip: :mod:`._launcher_cli`)."""
    u = sub.add_parser("up", help="start or update an autoscaling cluster from a YAML config")
    u.add_argument("config", help="cluster YAML (cluster_name, provider, "
                                  "available_node_types, ...)")
    u.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    u.add_argument("--interval", type=float, default=5.0,
                   help="seconds between autoscaler rounds (default 5)")
    u.set_defaults(func=_cmd_up)
    d = sub.add_parser("down", help="stop an autoscaling cluster and every node it started")
    d.add_argument("config")
    d.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    d.set_defaults(func=_cmd_down)
    m = sub.add_parser("monitor", help="print the autoscaler's log (its decisions and "
                                       "reasons), following it")
    m.add_argument("config")
    m.add_argument("--no-follow", action="store_true", help="print the log and return")
    m.add_argument("--run", action="store_true", help=argparse.SUPPRESS)  # the daemon
    m.add_argument("--interval", type=float, default=5.0, help=argparse.SUPPRESS)
    m.set_defaults(func=_cmd_monitor)
    from ._launcher_cli import add_parser as add_launcher_parser

    add_launcher_parser(sub)


def _state_dir(cluster_name: str) -> str:
    from ..backends.native.cluster import cluster_dir

    path = os.path.join(cluster_dir(), "autoscaler", cluster_name)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _load(path: str) -> Any:
    from ..exceptions import BackendUnavailableError, ClusterConfigError
    from .config import load_config

    try:
        return load_config(path)
    except OSError as exc:
        print(f"fedexec: cannot read {path}: {exc.strerror}", file=sys.stderr)
    except (ClusterConfigError, BackendUnavailableError) as exc:
        print(f"fedexec: {exc}", file=sys.stderr)
    return None


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        print("fedexec: cancelled (pass --yes to skip this question)", file=sys.stderr)
        return False
    return True




def _stop_monitor(state: str) -> bool:
    """Stop the monitor process ``up`` started; False if none ran."""
    path = os.path.join(state, "monitor.pid")
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    running = pid_alive(pid)
    if running:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return running


def _head_host(config: Any) -> str | None:
    """The address ``up`` starts the head on here: 127.0.0.1 (local, fake),
    ``provider.head_ip`` (ssh, when it is this machine's: else the head starts over
    SSH, :mod:`.remote_head`); None after printing why not."""
    kind = config.provider.get("type")
    if kind in ("local", "fake"):
        return "127.0.0.1"
    if kind != "ssh":
        print(f"fedexec up: provider type {kind!r} is not available in this build; use "
              "provider: {type: local}, {type: fake} or {type: ssh, ...}", file=sys.stderr)
        return None
    return str(config.provider.get("head_ip", ""))


def _previously_started(up_file: str) -> bool:
    with contextlib.suppress(OSError, ValueError), open(up_file) as f:
        return bool(json.load(f).get("started_head"))
    return False


def _monitor_was_on_head(state: str) -> bool:
    """Whether the last ``up`` started the monitor on the head (see :mod:`.remote_monitor`)."""
    with contextlib.suppress(OSError, ValueError), open(os.path.join(state, "up.json")) as f:
        return bool(json.load(f).get("monitor_on_head"))
    return False


def _up_head_over_ssh(config: Any, state: str, up_file: str) -> tuple[Any, bool] | None:
    """Start (or keep) the head over SSH: (head info, started by an ``up``)."""
    from ..exceptions import FedexecError
    from .remote_head import start_remote_head

    try:
        head, started = start_remote_head(config, state)
    except FedexecError as exc:
        print(f"fedexec up: could not start the head on {config.provider.get('head_ip')} "
              f"over SSH: {exc}", file=sys.stderr)
        return None
    if started:
        print(f"fedexec up: head started over SSH at {head['address']}")
    else:
        print(f"fedexec up: using the head already running at {head['address']}")
    return head, started or _previously_started(up_file)


def _head_of(state: str) -> tuple[str, str | None] | None:
    """(address, token) of the cluster's head: the one started over SSH, else this
    machine's (token None: its token file)."""
    from ..backends.native import cluster
    from .remote_head import read_remote_head

    remote = read_remote_head(state)
    if remote is not None:
        return remote["address"], remote["token"]
    local = cluster.read_local_cluster()
    return (local["address"], None) if local is not None else None


def _up_monitor_on_head(config: Any, args: argparse.Namespace) -> int:
    """Start (or replace) the monitor on the head over SSH (see :mod:`.remote_monitor`)."""
    from ..exceptions import FedexecError
    from .remote_monitor import start_monitor_on_head

    try:
        out = start_monitor_on_head(config, args.config, args.interval)
    except FedexecError as exc:
        print(f"fedexec up: could not start the autoscaler monitor on the head: {exc}",
              file=sys.stderr)
        return 1
    print("".join(f"fedexec up: on the head: {line}\n" for line in out.splitlines()), end="")
    print(f"fedexec up: autoscaler monitor running on the head; follow its decisions with: "
          f"fedexec monitor {args.config}")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from ..backends.native import cluster
    from .remote_head import head_over_ssh
    from .remote_monitor import monitor_on_head

    config = _load(args.config)
    if config is None:
        return 1
    kind = config.provider.get("type")
    remote = head_over_ssh(config)
    host = None if remote else _head_host(config)
    if host is None and not remote:
        return 1
    unused = (() if remote else ("head_start_commands",)) + (
        ("setup_commands", "file_mounts", "worker_start_commands") if kind != "ssh" else ())
    ignored = [k for k in unused if getattr(config, k)]
    if ignored:
        print(f"fedexec up: warning: {', '.join(ignored)} are not used by the {kind} "
              "provider in this build" + (" with the head on this machine"
                                          if kind == "ssh" else ""), file=sys.stderr)
    if not _confirm(f"Start or update cluster {config.cluster_name!r} ({kind} provider, up "
                    f"to {config.max_workers} worker nodes)?", args.yes):
        return 1
    state = _state_dir(config.cluster_name)
    up_file = os.path.join(state, "up.json")
    if remote:
        found = _up_head_over_ssh(config, state, up_file)
        if found is None:
            return 1
        head, started_head = found
    else:
        head = cluster.read_local_cluster()
        started_head = False
    if head is None:
        assert host is not None  # not over SSH: _head_host gave it
        head_type = config.node_types[config.head_node_type].resources
        custom = {k: v for k, v in head_type.items() if k not in ("CPU", "GPU")}
        port = config.provider.get("head_port", cluster.DEFAULT_PORT)
        try:
            head = cluster.start_head(host=host, num_cpus=head_type.get("CPU", 0.0),
                                      num_gpus=head_type.get("GPU", 0.0), resources=custom,
                                      port=int(port), job_port=config.provider.get("job_port"))
        except (RuntimeError, ValueError, OSError) as exc:
            print(f"fedexec up: could not start the head: {exc}", file=sys.stderr)
            return 1
        started_head = True
        print(f"fedexec up: head started at {head['address']} (pid {head['pid']})")
    elif not remote:
        print(f"fedexec up: using the head already running at {head['address']}")
        started_head = _previously_started(up_file)
    if _stop_monitor(state):
        print("fedexec up: replaced the running autoscaler monitor")
    on_head = remote and monitor_on_head(config)
    with open(up_file, "w") as f:
        json.dump({"started_head": started_head, "address": head["address"],
                   "config": os.path.abspath(args.config), "monitor_on_head": on_head}, f)
    if on_head:
        return _up_monitor_on_head(config, args)
    out = open(os.path.join(state, "monitor.out"), "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedexec", "monitor", os.path.abspath(args.config), "--run",
         "--interval", str(args.interval)],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True)
    out.close()
    with open(os.path.join(state, "monitor.pid"), "w") as f:
        f.write(f"{proc.pid}\n")
    print(f"fedexec up: autoscaler monitor running (pid {proc.pid}); follow its decisions "
          f"with: fedexec monitor {args.config}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from ..backends.native import cluster
    from ..exceptions import FedexecError
    from .providers import make_provider
    from .remote_head import read_remote_head, stop_remote_head
    from .remote_monitor import stop_monitor_on_head

    config = _load(args.config)
    if config is None:
        return 1
    if not _confirm(f"Stop cluster {config.cluster_name!r} and every node it started?",
                    args.yes):
        return 1
    state = _state_dir(config.cluster_name)
    if _stop_monitor(state):
        print("fedexec down: autoscaler monitor stopped")
    if _monitor_was_on_head(state) and read_remote_head(state) is not None:
        try:  # its monitor and the worker nodes it started: recorded there
            out = stop_monitor_on_head(config)
        except FedexecError as exc:
            print(f"fedexec down: could not run 'fedexec down' on the head: {exc}",
                  file=sys.stderr)
            return 1
        print("".join(f"fedexec down: on the head: {line}\n" for line in out.splitlines()),
              end="")
    head = _head_of(state)
    provider = make_provider(config.provider, config.cluster_name,
                             head[0] if head else "", head[1] if head else None, config)
    ids = provider.non_terminated_nodes()
    for pid in ids:
        provider.terminate_node(pid)
    print(f"fedexec down: terminated {len(ids)} worker node(s)")
    up_file = os.path.join(state, "up.json")
    started_head = _previously_started(up_file)
    if started_head and read_remote_head(state) is not None:
        try:
            if stop_remote_head(config, state):
                print("fedexec down: head stopped (over SSH)")
        except FedexecError as exc:
            print(f"fedexec down: could not stop the head over SSH: {exc}", file=sys.stderr)
            return 1
    elif started_head and cluster.stop_head():
        print("fedexec down: head stopped")
    with contextlib.suppress(OSError):
        os.unlink(up_file)
    return 0


def _run_monitor(config: Any, state: str, interval: float) -> int:
    """The daemon ``up`` starts: the monitor loop until SIGTERM."""
    from .monitor import Monitor
    from .providers import make_provider

    head = _head_of(state)
    if head is None:
        print("fedexec monitor: no head is running on this machine", file=sys.stderr)
        return 1
    address, token = head
    provider = make_provider(config.provider, config.cluster_name, address, token, config)
    monitor = Monitor(config, provider, address, token,
                      log_path=os.path.join(state, "monitor.log"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    monitor.run(interval, stop)
    getattr(provider, "wait_launches", lambda _: None)(60)
    return 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    state = _state_dir(config.cluster_name)
    if args.run:
        return _run_monitor(config, state, args.interval)
    if _monitor_was_on_head(state):
        from .remote_monitor import monitor_log_command

        try:
            return subprocess.call(monitor_log_command(config, follow=not args.no_follow))
        except KeyboardInterrupt:
            return 0
    path = os.path.join(state, "monitor.log")
    if not os.path.exists(path) and args.no_follow:
        reported = _head_round(state, config.cluster_name)
        if reported:  # a monitor running elsewhere told the head
            print("\n".join(reported))
            return 0
        print(f"fedexec monitor: no autoscaler log yet for {config.cluster_name!r} "
              f"(start the cluster with: fedexec up {args.config})", file=sys.stderr)
        return 1
    pos = 0
    try:
        while True:
            with contextlib.suppress(OSError), open(path) as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
                sys.stdout.write(chunk)
                sys.stdout.flush()
            if args.no_follow:
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def _head_round(state: str, cluster_name: str) -> list[str]:
    """The latest round the cluster's head was told of by the monitor of
    ``cluster_name`` (see :func:`status_lines`); [] when there is none or no head."""
    from ..backends.native import state as cluster_state
    from ..exceptions import FedexecError

    head = _head_of(state)
    if head is None:
        return []
    try:
        status = cluster_state.cluster_status(head[0], head[1])
    except (FedexecError, OSError, ValueError):
        return []
    return status_lines({"nodes": [n for n in status["nodes"]
                                   if (n.get("autoscaler") or {}).get("cluster_name")
                                   == cluster_name]}, local=False)


def status_lines(status: dict[str, Any] | None = None, local: bool = True) -> list[str]:
    """For ``fedexec status``: the latest round of each autoscaler monitor, its age
    and every decision with its reason; first the one the head of ``status``
    (``cluster_status``) was told about, wherever that monitor runs, then those of
    the monitors on this machine it was not told about, with ``local`` (none: [])."""
    from ..backends.native.cluster import cluster_dir

    lines: list[str] = []
    reported = set()
    for node in (status or {}).get("nodes", []):
        last = node.get("autoscaler")
        if not node.get("is_head") or last is None:
            continue
        reported.add(last["cluster_name"])
        lines += _round_lines(last["cluster_name"], float(last["age"]), last["decisions"],
                              " (no round since: is the monitor running?)"
                              if last.get("stale") else "")
    root = os.path.join(cluster_dir(), "autoscaler")
    for name in sorted(os.listdir(root)) if local and os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, name, "status.json"), encoding="utf-8") as f:
                last = json.load(f)
        except (OSError, ValueError):
            continue
        if last.get("cluster_name", name) in reported:
            continue  # the same monitor: the head's copy is the one shown
        age = max(0.0, time.time() - float(last["time"]))
        lines += _round_lines(name, age, last["decisions"], "")
    return lines


def _round_lines(name: str, age: float, decisions: list[str], note: str) -> list[str]:
    return [f"autoscaler {name!r} (last round {age:.0f} s ago){note}:",
            *(f"  {d}" for d in decisions or ["nothing to do"])]
