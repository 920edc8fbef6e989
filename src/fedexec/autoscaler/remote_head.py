"""A cluster head started over SSH, for ``fedexec up`` with the ``ssh`` provider when
``provider.head_ip`` is not this machine (or ``provider.head_over_ssh: true``).

``start_remote_head`` syncs ``file_mounts`` to the head host, runs
``setup_commands`` there, then starts the head with ``head_start_commands`` when
there are any, else ``<head_fedexec> start --head --host HEAD_IP --port P ...``
(``provider.head_fedexec``, default ``provider.fedexec``, default ``fedexec``). The
start commands run in one shell (``set -e``) with ``FEDEXEC_HEAD_IP`` and
``FEDEXEC_START_ARGS`` (``--head --host ... --port ... --num-cpus ...``) exported, so
a custom one reads e.g. ``fedexec start $FEDEXEC_START_ARGS``; their output must
include ``fedexec start``'s "head started at ADDRESS" and "token in PATH" lines.
The cluster token is then read from PATH over SSH and kept, with the address, in
``remote-head.json`` (mode 0600) in the cluster's state directory: the monitor,
which runs where ``up`` ran, joins the head with it. A head already answering at the
recorded address with that token is kept (``up`` is idempotent).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
from typing import Any

from ..exceptions import FedexecError
from .ssh import RemoteCommandError

__all__ = ["head_over_ssh", "read_remote_head", "start_remote_head", "stop_remote_head"]

_FILE = "remote-head.json"


def head_over_ssh(config: Any) -> bool:
    """Whether ``up`` starts the head over SSH: ssh provider, and ``head_ip`` not an
    address of this machine or ``provider.head_over_ssh`` true."""
    import socket

    if config.provider.get("type") != "ssh":
        return False
    if config.provider.get("head_over_ssh"):
        return True
    ip = str(config.provider.get("head_ip", ""))
    try:
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as sock:
            sock.bind((ip, 0))
    except OSError:
        return True
    return False


def _fedexec(config: Any) -> str:
    return str(config.provider.get("head_fedexec") or config.provider.get("fedexec")
               or "fedexec")


def read_remote_head(state_dir: str) -> dict[str, Any] | None:
    """``{"address", "token"}`` of the head ``start_remote_head`` started (None: none)."""
    try:
        with open(os.path.join(state_dir, _FILE), encoding="utf-8") as f:
            return dict(json.load(f))
    except (OSError, ValueError):
        return None


def _answers(address: str, token: str) -> bool:
    from ..backends.native import state

    try:
        state.cluster_status(address, token, timeout=5.0)
    except Exception:
        return False
    return True


def _start_args(config: Any) -> list[str]:
    from ..backends.native.cluster import DEFAULT_PORT

    resources = dict(config.node_types[config.head_node_type].resources)
    args = ["--head", "--host", str(config.provider["head_ip"]),
            "--port", str(int(config.provider.get("head_port", DEFAULT_PORT))),
            "--num-cpus", f"{resources.pop('CPU', 0.0):g}",
            "--num-gpus", f"{resources.pop('GPU', 0.0):g}"]
    if config.provider.get("job_port") is not None:
        args += ["--job-port", str(int(config.provider["job_port"]))]
    if resources:
        args += ["--resources", json.dumps(resources, separators=(",", ":"))]
    return args


def start_remote_head(config: Any, state_dir: str) -> tuple[dict[str, Any], bool]:
    """Start the head over SSH (see the module docstring), or keep the one running;
    ``(head info, started now)``. Raises the :mod:`.ssh` errors (a failing setup or
    start command carries its output)."""
    from ._launcher_cli import head_runner

    known = read_remote_head(state_dir)
    if known is not None and _answers(known["address"], known["token"]):
        return known, False
    runner = head_runner(config)
    runner.sync_mounts(config.file_mounts)
    runner.run_all(config.setup_commands, what="setup command")
    args = _start_args(config)
    commands = config.head_start_commands or [f"{_fedexec(config)} start {shlex.join(args)}"]
    script = "\n".join(["set -e",
                        f"export FEDEXEC_HEAD_IP={shlex.quote(str(config.provider['head_ip']))}",
                        f"export FEDEXEC_START_ARGS={shlex.quote(' '.join(args))}", *commands])
    what = "head start command" if config.head_start_commands else "start command"
    out = runner.run(script, what=what, timeout=300)
    address = re.search(r"head started at (\S+)", out)
    token_file = re.search(r"token in (\S+/token)\b", out)
    if address is None or token_file is None:
        raise RemoteCommandError(f"the {what}s on {config.provider['head_ip']} did not print "
                                 "fedexec start's 'head started at ADDRESS' and 'token in "
                                 f"PATH' lines: {out.strip()[-500:]}", output=out)
    token = runner.run(f"cat {shlex.quote(token_file.group(1))}", what="reading the token",
                       timeout=60).strip()
    if not token:
        raise FedexecError(f"the head's token file {token_file.group(1)} on "
                           f"{config.provider['head_ip']} is empty")
    info = {"address": address.group(1), "token": token, "remote": True}
    path = os.path.join(state_dir, _FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return info, True


def stop_remote_head(config: Any, state_dir: str) -> bool:
    """Run ``<head_fedexec> stop`` on the head host and forget the head; False if
    none was recorded."""
    from ._launcher_cli import head_runner

    if read_remote_head(state_dir) is None:
        return False
    head_runner(config).run(f"{_fedexec(config)} stop", what="stop command", timeout=120)
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(state_dir, _FILE))
    return True
