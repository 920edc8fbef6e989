"""Running commands on a cluster host over SSH, and syncing files with rsync.

:class:`SSHRunner` wraps the system ``ssh`` and ``rsync`` binaries for one host:
non-interactive (``BatchMode``), a private ``known_hosts`` under the cluster's
directory (``StrictHostKeyChecking=accept-new``: a host's key is learnt on first
contact and checked afterwards) and a ``ConnectTimeout``. Failures raise specific
errors: :class:`HostUnreachableError` (no SSH server answers at host:port),
:class:`SSHAuthError` (the key is missing, unreadable or refused) and
:class:`RemoteCommandError` (the command ran and failed; carries its output tail).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ..exceptions import FedexecError

__all__ = ["HostUnreachableError", "LocalRunner", "RemoteCommandError", "SSHAuthError",
           "SSHRunner", "runner_for"]

#: how much of a failed command's output the error carries
TAIL_LINES = 20


class HostUnreachableError(FedexecError, ConnectionError):
    """No SSH server answered at the host and port (down, wrong address or port, or a
    firewall). The message names host:port and what ssh said."""


class SSHAuthError(FedexecError, PermissionError):
    """The SSH key is missing or unreadable, or the host refused it for the user.
    Check ``auth: {ssh_user, ssh_private_key}`` and the host's authorized_keys."""


class RemoteCommandError(FedexecError):
    """A command run over SSH exited non-zero. ``output`` holds the tail of what it
    printed (stdout and stderr) and ``returncode`` its exit status."""

    def __init__(self, message: str, output: str = "", returncode: int = 1):
        super().__init__(message)
        self.output = output
        self.returncode = returncode


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-TAIL_LINES:])


class SSHRunner:
    """Commands and file syncs on ``user@host:port`` with ``key`` (see the module
    docstring). ``known_hosts`` is the private known-hosts file to use."""

    def __init__(self, host: str, user: str, key: str | None, known_hosts: str, *,
                 port: int = 22, connect_timeout: float = 10.0):
        self.host, self.user, self.port = host, user, int(port)
        self.key = os.path.expanduser(key) if key else None
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_options(self) -> list[str]:
        """The ``-o``/``-i``/``-p`` options every ssh call uses."""
        opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", f"ConnectTimeout={self.connect_timeout:g}",
                "-o", "LogLevel=ERROR", "-p", str(self.port)]
        if self.key:
            opts += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        return opts

    def ssh_command(self, command: str | None = None, *, tty: bool = False) -> list[str]:
        """The argv that runs ``command`` on the host (None: a login shell)."""
        argv = ["ssh", *self.ssh_options(), *(["-tt"] if tty else []), self.target]
        return argv + ([command] if command is not None else [])

    def interactive_command(self) -> list[str]:
        """The argv of an interactive login shell on the host (``fedexec attach``)."""
        return self.ssh_command(None, tty=True)

    def _check_key(self) -> None:
        if self.key and not os.access(self.key, os.R_OK):
            raise SSHAuthError(f"cannot read the SSH private key {self.key!r} (for "
                               f"{self.target}): check auth.ssh_private_key in the config")

    def _raise_for_ssh(self, returncode: int, stderr: str) -> None:
        """Map ssh's own failure (exit 255) to the specific error."""
        where = f"{self.host}:{self.port}"
        said = _tail(stderr).rstrip(".") or "no output"
        if any(s in stderr for s in ("Permission denied", "Load key", "invalid format",
                                     "bad permissions", "Too many authentication")):
            raise SSHAuthError(f"SSH to {self.target} (port {self.port}) was refused with "
                               f"key {self.key!r}: {said}. Check auth.ssh_user and "
                               "auth.ssh_private_key, and that the public key is in the "
                               "host's authorized_keys")
        raise HostUnreachableError(f"cannot reach the SSH server at {where}: {said}. Check "
                                   "that the host is up, that sshd listens on that port "
                                   "(provider.ssh_port) and that no firewall blocks it")

    def run(self, command: str, *, stdin: str | None = None, timeout: float = 600.0,
            what: str = "command") -> str:
        """Run ``command`` (a shell string) on the host; return its stdout.
        ``stdin`` is sent on its standard input (never on a command line)."""
        self._check_key()
        try:
            out = subprocess.run(self.ssh_command(command), input=stdin, text=True,
                                 capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RemoteCommandError(f"{what} on {self.host} did not finish within "
                                     f"{timeout:g} s: {command}") from exc
        if out.returncode == 255:
            self._raise_for_ssh(out.returncode, out.stderr)
        if out.returncode != 0:
            tail = _tail(out.stdout + "\n" + out.stderr)
            raise RemoteCommandError(f"{what} failed on {self.host} (exit "
                                     f"{out.returncode}): {command}\n--- output tail ---\n"
                                     f"{tail}", output=tail, returncode=out.returncode)
        return out.stdout

    def _rsync(self, src: str, dst: str, timeout: float) -> None:
        self._check_key()
        remote_shell = shlex.join(["ssh", *self.ssh_options()])
        argv = ["rsync", "-az", "--protect-args", "-e", remote_shell, src, dst]
        try:
            out = subprocess.run(argv, text=True, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RemoteCommandError(f"rsync {src} -> {dst} did not finish within "
                                     f"{timeout:g} s") from exc
        if out.returncode == 255 or (out.returncode == 12 and "ssh:" in out.stderr):
            self._raise_for_ssh(out.returncode, out.stderr)  # ssh itself failed
        if out.returncode != 0:
            tail = _tail(out.stdout + "\n" + out.stderr)
            raise RemoteCommandError(f"rsync {src} -> {dst} failed (exit {out.returncode})"
                                     f"\n--- output tail ---\n{tail}", output=tail,
                                     returncode=out.returncode)

    def rsync_up(self, src: str, dst: str, timeout: float = 600.0) -> None:
        """Copy local ``src`` to ``dst`` on the host (rsync's trailing-slash rules)."""
        self._rsync(src, f"{self.target}:{dst}", timeout)

    def rsync_down(self, src: str, dst: str, timeout: float = 600.0) -> None:
        """Copy ``src`` on the host to local ``dst``."""
        self._rsync(f"{self.target}:{src}", dst, timeout)

    def sync_mounts(self, file_mounts: Mapping[str, str]) -> None:
        """Copy each ``{remote: local}`` of a config's ``file_mounts`` up (parents made)."""
        for remote, local in file_mounts.items():
            parent = os.path.dirname(remote.rstrip("/")) or "."
            self.run(f"mkdir -p {shlex.quote(parent)}", what="mkdir for file_mounts")
            src = local.rstrip("/") + "/" if os.path.isdir(local) else local
            self.rsync_up(src, remote)

    def run_all(self, commands: Sequence[str], what: str, timeout: float = 600.0) -> None:
        """Run each command in turn; the first failure raises :class:`RemoteCommandError`."""
        for command in commands:
            self.run(command, what=what, timeout=timeout)


def runner_for(host: str, provider: Mapping[str, Any], auth: Mapping[str, str],
               state_dir: str) -> SSHRunner:
    """An :class:`SSHRunner` for ``host`` from a config's ``provider`` (``ssh_port``,
    ``connect_timeout``) and ``auth`` sections; known hosts kept in ``state_dir``."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    return SSHRunner(host, auth.get("ssh_user") or os.environ.get("USER", ""),
                     auth.get("ssh_private_key"), os.path.join(state_dir, "known_hosts"),
                     port=int(provider.get("ssh_port", 22)),
                     connect_timeout=float(provider.get("connect_timeout", 10)))


class LocalRunner:
    """The :class:`SSHRunner` interface on this machine (the ``local`` provider's head):
    commands run with ``sh -c``, files copied with a local rsync."""

    host = "127.0.0.1"

    def run(self, command: str, *, stdin: str | None = None, timeout: float = 600.0,
            what: str = "command") -> str:
        out = subprocess.run(["sh", "-c", command], input=stdin, text=True,
                             capture_output=True, timeout=timeout)
        if out.returncode != 0:
            tail = _tail(out.stdout + "\n" + out.stderr)
            raise RemoteCommandError(f"{what} failed on this machine (exit {out.returncode})"
                                     f": {command}\n--- output tail ---\n{tail}",
                                     output=tail, returncode=out.returncode)
        return out.stdout

    def _rsync(self, src: str, dst: str, timeout: float) -> None:
        out = subprocess.run(["rsync", "-a", src, dst], text=True, capture_output=True,
                             timeout=timeout)
        if out.returncode != 0:
            tail = _tail(out.stderr)
            raise RemoteCommandError(f"rsync {src} -> {dst} failed (exit {out.returncode})"
                                     f"\n--- output tail ---\n{tail}", output=tail,
                                     returncode=out.returncode)

    def rsync_up(self, src: str, dst: str, timeout: float = 600.0) -> None:
        self._rsync(src, os.path.expanduser(dst), timeout)

    def rsync_down(self, src: str, dst: str, timeout: float = 600.0) -> None:
        self._rsync(os.path.expanduser(src), dst, timeout)

    def interactive_command(self) -> list[str]:
        """A login shell here."""
        return [os.environ.get("SHELL") or "/bin/sh", "-l"]
