"""Progress output of a real driver process: a live table of trials when stdout is
a terminal (a pseudo-terminal here), a one-line summary when it is not, nothing
with ``verbose=0``."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.timeout(180)

DRIVER = textwrap.dedent("""
    import sys
    import fedexec
    from fedexec import tune
    from _tune_trainables import quadratic

    with fedexec.Executor(num_cpus=2) as ex:
        tune.run(quadratic, config={"x": tune.grid_search([0, 1, 2]), "y": 0},
                 storage_path=sys.argv[1], verbose=int(sys.argv[2]), metric="score",
                 mode="min", executor=ex)
    print("DRIVER DONE", flush=True)
""")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env():
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": tests_dir, "COLUMNS": "160", "TERM": "xterm"}


def _run_in_terminal(cmd, timeout=120):
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=_env())
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the process ended
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, ANSI.sub("", out.decode(errors="replace"))


def test_a_terminal_gets_a_table_of_trials(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    code, out = _run_in_terminal([sys.executable, str(tmp_path / "driver.py"),
                                  str(tmp_path / "results"), "1"])
    assert code == 0, out
    assert "DRIVER DONE" in out
    header = [line for line in out.splitlines() if "status" in line and "score" in line]
    assert header, out  # the table's header: trial, status, the varying x, the metric
    assert "x" in header[-1]
    rows = [line for line in out.splitlines() if "TERMINATED" in line and "quadratic_" in line]
    assert len({re.search(r"quadratic_\w+", r).group(0) for r in rows}) == 3, out


def test_a_pipe_gets_one_summary_line_and_verbose_0_nothing(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    piped = subprocess.run([sys.executable, str(tmp_path / "driver.py"),
                            str(tmp_path / "results"), "1"], capture_output=True, text=True,
                           env=_env(), timeout=120)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    summaries = [line for line in lines if line.startswith("tune: ")]
    assert summaries and "3 of 3 trials (3 TERMINATED)" in summaries[-1], piped.stdout
    assert "best score=0 " in summaries[-1] or "best score=0 (" in summaries[-1], piped.stdout
    assert not any("status" in line for line in lines), piped.stdout  # no table
    quiet = subprocess.run([sys.executable, str(tmp_path / "driver.py"),
                            str(tmp_path / "results"), "0"], capture_output=True, text=True,
                           env=_env(), timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "DRIVER DONE"
