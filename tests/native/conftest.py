"""Leak checks for the native runtime tests: when the tests are done, no node
manager or worker of ours runs, and nothing of ours is left in /dev/shm."""

from __future__ import annotations

import os
import time

import psutil
import pytest


def _our_store_dirs() -> list[str]:
    me = str(os.getpid())
    found = []
    for root in ("/dev/shm", "/tmp"):
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            owners = os.path.join(root, name, ".owners")
            if name.startswith("fedexec-") and os.path.exists(owners):
                try:
                    with open(owners) as f:
                        if me in f.read().split()[:1]:
                            found.append(os.path.join(root, name))
                except OSError:
                    continue
    return found


def _our_runtime_processes() -> list[psutil.Process]:
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "fedexec.backends.native.node" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            continue
    return out


@pytest.fixture(scope="module", autouse=True)
def _no_leaks():
    yield
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not _our_store_dirs() and not _our_runtime_processes():
            return
        time.sleep(0.1)
    raise AssertionError(
        f"left behind: store dirs {_our_store_dirs()}, processes {_our_runtime_processes()}"
    )
