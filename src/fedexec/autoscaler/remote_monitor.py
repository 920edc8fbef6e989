"""The autoscaler monitor on a head started over SSH, with ``provider.monitor_on_head:
true`` (else it runs where ``up`` ran, see :mod:`._cli`), so the cluster scales
while the machine that ran ``up`` is off.

``up`` copies the config to ``~/fedexec-clusters/<cluster_name>/cluster.yaml`` on
the head, rewritten for it (``head_over_ssh`` and ``monitor_on_head`` dropped, so
the head counts as local there; the SSH key copied beside it, mode 0600, and named
by its copy's path), and runs ``<head_fedexec> up <that config> --yes`` there: that
``up`` finds the head running and starts the monitor beside it (its log, status and
the records of the worker nodes it starts live in the head's ``FEDEXEC_HOME``).
``down`` runs ``<head_fedexec> down`` there first (the monitor and its worker
nodes), then stops the head; ``fedexec monitor`` prints the head's log over SSH.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from typing import Any

__all__ = ["monitor_log_command", "monitor_on_head", "start_monitor_on_head",
           "stop_monitor_on_head"]


def monitor_on_head(config: Any) -> bool:
    """Whether the monitor runs on the head: a head over SSH and
    ``provider.monitor_on_head`` true."""
    from .remote_head import head_over_ssh

    return bool(config.provider.get("monitor_on_head")) and head_over_ssh(config)


def _fedexec(config: Any) -> str:
    from .remote_head import _fedexec as head_fedexec

    return head_fedexec(config)


def _remote_config(config: Any, runner: Any) -> str:
    """The config's path on the head (absolute)."""
    home = runner.run("echo $HOME", what="finding the home directory", timeout=60).strip()
    return f"{home}/fedexec-clusters/{config.cluster_name}/cluster.yaml"


def _head_view(raw: dict[str, Any], key_path: str | None) -> dict[str, Any]:
    """The YAML mapping ``raw`` as the head reads it (see the module docstring)."""
    provider = {k: v for k, v in raw.get("provider", {}).items()
                if k not in ("head_over_ssh", "monitor_on_head")}
    auth = dict(raw.get("auth") or {})
    if key_path is not None:
        auth["ssh_private_key"] = key_path
    return {**raw, "provider": provider, **({"auth": auth} if auth else {})}


def start_monitor_on_head(config: Any, config_path: str, interval: float) -> str:
    """Copy the config (and key) to the head and run ``up`` there; its output.
    Raises the :mod:`.ssh` errors (a failing ``up`` carries its output)."""
    import yaml

    from ._launcher_cli import head_runner

    runner = head_runner(config)
    remote = _remote_config(config, runner)
    folder = os.path.dirname(remote)
    runner.run(f"mkdir -p {shlex.quote(folder)} && chmod 700 {shlex.quote(folder)}",
               what="making the config's folder", timeout=60)
    with open(config_path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    key = config.auth.get("ssh_private_key")
    key_copy = f"{folder}/ssh_key" if key else None
    if key and key_copy:
        runner.rsync_up(os.path.expanduser(key), key_copy)
        runner.run(f"chmod 600 {shlex.quote(key_copy)}", what="securing the key", timeout=60)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        yaml.safe_dump(_head_view(raw, key_copy), tmp)
    try:
        runner.rsync_up(tmp.name, remote)
    finally:
        os.unlink(tmp.name)
    return str(runner.run(f"{_fedexec(config)} up {shlex.quote(remote)} --yes --interval "
                          f"{interval:g}", what="'fedexec up' on the head", timeout=300))


def stop_monitor_on_head(config: Any) -> str:
    """Run ``down`` on the head (its monitor, and the worker nodes it started); its
    output."""
    from ._launcher_cli import head_runner

    runner = head_runner(config)
    remote = _remote_config(config, runner)
    return str(runner.run(f"{_fedexec(config)} down {shlex.quote(remote)} --yes",
                          what="'fedexec down' on the head", timeout=300))


def monitor_log_command(config: Any, follow: bool) -> list[str]:
    """The ``ssh`` command line printing (and following) the head's monitor log."""
    from ._launcher_cli import head_runner

    runner = head_runner(config)
    remote = _remote_config(config, runner)
    flag = "" if follow else " --no-follow"
    return list(runner.ssh_command(f"{_fedexec(config)} monitor {shlex.quote(remote)}{flag}"))
