"""The fedexec command, run as a user would."""

import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "fedexec", *args], capture_output=True,
                          text=True, timeout=60)


def test_version_and_backends_are_printed():
    out = run()
    assert out.returncode == 0
    assert "fedexec 0." in out.stdout and "local" in out.stdout


def test_backends_as_json():
    out = run("backends", "--format", "json")
    assert out.returncode == 0
    assert "actors" in json.loads(out.stdout)["local"]


def test_version_flag():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("fedexec ")
