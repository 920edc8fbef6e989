"""A real OpenSSH server on 127.0.0.1 for the ssh provider's tests.

:func:`start_sshd` generates a client key pair and a host key under a directory,
writes an ``sshd_config`` that accepts only that key for the current user, and runs
``/usr/sbin/sshd -D`` on a free port as the current user. When sshd, ssh or rsync
is missing it skips with the reason if not root, and fails as root (CI runs as
root, and ``scripts/setup-system.sh`` installs them).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest

from _backend_support import free_port

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    port: int
    user: str
    key: str  # the client's private key file
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_sshd(root: str) -> Sshd:
    """Start sshd for the current user under ``root`` (see the module docstring)."""
    missing = [tool for tool in (SSHD, "ssh", "ssh-keygen", "rsync") if not shutil.which(tool)]
    if missing:
        why = (f"{', '.join(missing)} missing: the ssh provider tests need Debian's "
               "openssh-server, openssh-client and rsync (bash scripts/setup-system.sh "
               "installs them as root)")
        if os.geteuid() == 0:
            pytest.fail(why)  # root could have installed them: the setup was skipped
        pytest.skip(why + "; not root, so not installed")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    os.chmod(root, 0o700)
    key, host_key = os.path.join(root, "id_ed25519"), os.path.join(root, "host_ed25519")
    for path in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path],
                       check=True, capture_output=True)
    authorized = os.path.join(root, "authorized_keys")
    with open(key + ".pub") as src, open(authorized, "w") as dst:
        dst.write(src.read())
    port = free_port()
    config = os.path.join(root, "sshd_config")
    with open(config, "w") as f:
        f.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                f"AuthorizedKeysFile {authorized}\nPidFile {root}/sshd.pid\n"
                "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n")
    log = open(os.path.join(root, "sshd.log"), "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", config, "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            text = open(os.path.join(root, "sshd.log")).read()
            pytest.fail(f"sshd exited with {proc.returncode}: {text[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("sshd did not listen within 20 s")
        time.sleep(0.1)
    return Sshd(port, getpass.getuser(), key, proc)
