"""``fedexec exec|submit|attach|rsync-up|rsync-down|get-head-ip CONFIG ...``.

Each acts on the cluster's head: ``provider.head_ip`` over SSH for the ``ssh``
provider (with the config's ``auth`` and ``provider.ssh_port``; see
:mod:`.ssh`), this machine for ``local``. ``submit`` copies a script to
``~/fedexec-submit/`` on the head and runs it there with ``provider.python``
(default ``python3``) and ``FEDEXEC_ADDRESS`` set to the head's address
(``head_ip:head_port``, port default 6390). None of them asks a question; ``--yes``
is accepted for symmetry with ``up``/``down``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

__all__ = ["add_parser", "head_address", "head_ip", "head_runner"]


def add_parser(sub: Any) -> None:
    """Add the launcher commands to the ``fedexec`` parser."""
    def command(name: str, help: str, func: Any) -> Any:
        p = sub.add_parser(name, help=help)
        p.add_argument("config", help="cluster YAML")
        p.add_argument("-y", "--yes", action="store_true", help="do not ask (none ask)")
        p.set_defaults(func=func)
        return p

    e = command("exec", "run a shell command on the cluster's head", _cmd_exec)
    e.add_argument("cmd", help="the command (one shell string)")
    for name, func, where in (("rsync-up", _cmd_rsync_up, "this machine to the head"),
                              ("rsync-down", _cmd_rsync_down, "the head to this machine")):
        r = command(name, f"copy files from {where} with rsync", func)
        r.add_argument("source")
        r.add_argument("target")
    command("get-head-ip", "print the head's IP address", _cmd_get_head_ip)
    s = command("submit", "copy a Python script to the head and run it against the "
                          "cluster", _cmd_submit)
    s.add_argument("script")
    s.add_argument("script_args", nargs=argparse.REMAINDER, help="the script's arguments")
    a = command("attach", "open an interactive shell on the head", _cmd_attach)
    a.add_argument("--print", dest="print_only", action="store_true",
                   help="print the command instead of running it")


def head_ip(config: Any) -> str:
    """The head's IP: ``provider.head_ip`` (ssh), 127.0.0.1 (local)."""
    from ..exceptions import ClusterConfigError

    if config.provider.get("type") == "ssh":
        ip = config.provider.get("head_ip")
        if not ip:
            raise ClusterConfigError("provider.head_ip: the ssh provider needs the head's "
                                     "address", [("provider.head_ip", "a host name or IP")])
        return str(ip)
    return "127.0.0.1"


def head_address(config: Any) -> str:
    """``head_ip:head_port`` of the cluster's head."""
    from ..backends.native.cluster import DEFAULT_PORT

    return f"{head_ip(config)}:{int(config.provider.get('head_port', DEFAULT_PORT))}"


def head_runner(config: Any) -> Any:
    """An :class:`~.ssh.SSHRunner` for the head (ssh provider), or a
    :class:`~.ssh.LocalRunner` (local provider)."""
    from ._cli import _state_dir
    from .ssh import LocalRunner, runner_for

    if config.provider.get("type") != "ssh":
        return LocalRunner()
    return runner_for(head_ip(config), config.provider, config.auth,
                      _state_dir(config.cluster_name))


def _run(args: argparse.Namespace, action: Any) -> int:
    """Load the config, run ``action(config)`` (returns an exit status or None), and
    turn errors into messages."""
    from ..exceptions import FedexecError
    from ._cli import _load

    config = _load(args.config)
    if config is None:
        return 1
    try:
        return int(action(config) or 0)
    except FedexecError as exc:
        print(f"fedexec {args.command_name}: {exc}", file=sys.stderr)
        return 1


def _cmd_exec(args: argparse.Namespace) -> int:
    args.command_name = "exec"

    def run(config: Any) -> None:
        sys.stdout.write(head_runner(config).run(args.cmd))

    return _run(args, run)


def _cmd_rsync_up(args: argparse.Namespace) -> int:
    args.command_name = "rsync-up"
    return _run(args, lambda c: head_runner(c).rsync_up(args.source, args.target))


def _cmd_rsync_down(args: argparse.Namespace) -> int:
    args.command_name = "rsync-down"
    return _run(args, lambda c: head_runner(c).rsync_down(args.source, args.target))


def _cmd_get_head_ip(args: argparse.Namespace) -> int:
    args.command_name = "get-head-ip"
    return _run(args, lambda c: print(head_ip(c)))


def _cmd_submit(args: argparse.Namespace) -> int:
    args.command_name = "submit"

    def submit(config: Any) -> int:
        runner = head_runner(config)
        remote_dir = "fedexec-submit"  # relative: under the login directory
        runner.run(f"mkdir -p {remote_dir}", what="mkdir")
        target = f"{remote_dir}/{os.path.basename(args.script)}"
        runner.rsync_up(args.script, target)
        python = str(config.provider.get("python", "python3"))
        command = (f"cd ~ && FEDEXEC_ADDRESS={shlex.quote(head_address(config))} "
                   f"{python} {shlex.join([target, *args.script_args])}")
        sys.stdout.write(runner.run(command, what="submitted script", timeout=24 * 3600))
        return 0

    return _run(args, submit)


def _cmd_attach(args: argparse.Namespace) -> int:
    args.command_name = "attach"

    def attach(config: Any) -> int:
        argv = head_runner(config).interactive_command()
        if args.print_only:
            print(shlex.join(argv))
            return 0
        sys.stdout.flush()
        os.execvp(argv[0], argv)
        return 1  # not reached

    return _run(args, attach)
