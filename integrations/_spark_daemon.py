"""``SparkDaemon``: a fedexec actor that runs one Spark standalone daemon (a master
or a worker) from the pyspark package's own ``bin/spark-class`` and jars.

The actor owns its daemon: the daemon runs under a supervisor process
(``_spark_supervisor``) that kills the daemon's whole process group (executor JVMs
and Python workers included) and removes its work directory when the actor stops
it or the actor's process dies, SIGKILL included. So a Spark worker lives exactly
as long as the actor, and its executors run inside the actor's process tree, on
the actor's node, under the CPUs and memory the actor reserved.

State of one actor: ``_workdir`` (a private temp dir: the daemon's log, Spark
conf, work and local dirs; the supervisor removes it), ``_supervisor`` (Popen),
``_info`` (what ``start_*`` returned).

Exchanging files with fedexec: a worker's environment, which its executors and
their Python workers inherit, names the fedexec node they run on
(``FEDEXEC_SPARK_NODE_ID``) and a directory on it, ``<workdir>/exchange``
(``FEDEXEC_SPARK_EXCHANGE_DIR``), where Spark tasks and fedexec tasks on that node
leave files for each other (``fedexec.data``'s ``from_spark``/``to_spark``); it is
removed with the daemon.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import fedexec
from fedexec.exceptions import FedexecError

__all__ = ["EXCHANGE_DIR_ENV", "NODE_ID_ENV", "SparkDaemon", "find_java", "spark_home"]

#: In a worker's executors' environment: the id of the fedexec node they run on.
NODE_ID_ENV = "FEDEXEC_SPARK_NODE_ID"
#: In a worker's executors' environment: the node-local directory for exchanged files.
EXCHANGE_DIR_ENV = "FEDEXEC_SPARK_EXCHANGE_DIR"

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
_MASTER_URL = re.compile(r"Starting Spark master at (spark://\S+)")
_MASTER_ALIVE = re.compile(r"New state: ALIVE")
_WORKER_REGISTERED = re.compile(r"Successfully registered with master (spark://\S+)")
_PORT_IN_USE = re.compile(r"BindException|Address already in use")
_STOP_WAIT = 20.0  # seconds stop() waits for the supervisor (its grace is 10 s)


def spark_home() -> str:
    """The pyspark package's directory, a Spark distribution (bin/, jars/)."""
    import pyspark

    return os.path.dirname(os.path.abspath(pyspark.__file__))


def find_java(where: str) -> str:
    """The ``java`` that ``spark-class`` will run (``$JAVA_HOME/bin/java``, else the
    one on PATH); ``FedexecError`` naming ``where`` and the fix if there is none."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = os.path.join(home, "bin", "java")
        if os.access(java, os.X_OK):
            return java
        raise FedexecError(
            f"JAVA_HOME={home} on {where} has no bin/java: Spark needs a Java 17+ runtime; "
            "point JAVA_HOME at one (or unset it to use the java on PATH) in the "
            "environment the fedexec nodes are started with")
    found = shutil.which("java")
    if found is None:
        raise FedexecError(
            f"no Java runtime on {where} (JAVA_HOME is unset and no java on PATH): Spark "
            "needs Java 17+; install one (e.g. apt-get install openjdk-17-jre-headless) "
            "or set JAVA_HOME in the environment the fedexec nodes are started with")
    return found


def _tail(path: str, limit: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _write_properties(path: str, properties: dict[str, str]) -> None:
    """A Java properties file, readable by this user only (it may hold a secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for key, value in properties.items():
            esc = str(value).replace("\\", "\\\\").replace("\n", "\\n")
            f.write(f"{key}={esc}\n")


class SparkDaemon:
    """One Spark master or worker, owned by this actor (see the module docstring)."""

    def __init__(self) -> None:
        self._workdir: str | None = None
        self._supervisor: subprocess.Popen[bytes] | None = None
        self._info: dict[str, Any] = {}

    def start_master(self, host: str | None, port: int, properties: dict[str, str],
                     timeout: float) -> dict[str, Any]:
        """Start a master on ``host`` (None: this node's address) and ``port`` (0: a
        free one); returns ``info()`` with ``url`` (``spark://host:port``) once the
        master is ALIVE."""
        host = host or fedexec.util.get_node_ip_address()
        props = {"spark.master.rest.enabled": "false", **properties}
        if port:  # a taken port fails instead of Spark quietly trying the next ones
            props["spark.port.maxRetries"] = "0"
        args = ["--host", host, "--port", str(port), "--webui-port", "0"]
        log = self._launch("Spark master", MASTER_CLASS, args, host, props)
        match = self._wait_ready(log, "Spark master", (_MASTER_URL, _MASTER_ALIVE), timeout,
                                 port=port, host=host)
        self._info.update(role="master", url=match.group(1))
        return self.info()

    def start_worker(self, master_url: str, host: str | None, cores: int, memory_mib: int,
                     properties: dict[str, str], timeout: float) -> dict[str, Any]:
        """Start a worker offering ``cores`` and ``memory_mib`` to the master at
        ``master_url``; returns ``info()`` once the master has registered it, with
        ``host`` (the worker's address) and ``exchange_dir`` (see the module docstring)."""
        host = host or fedexec.util.get_node_ip_address()
        assert self._workdir is None, "one daemon per actor"
        self._workdir = tempfile.mkdtemp(prefix="spark-on-fedexec-")
        work = os.path.join(self._workdir, "work")
        exchange = os.path.join(self._workdir, "exchange")
        os.makedirs(exchange)
        args = [master_url, "--host", host, "--port", "0", "--webui-port", "0",
                "--cores", str(cores), "--memory", f"{memory_mib}M", "--work-dir", work]
        env = {NODE_ID_ENV: fedexec.get_runtime_context().node_id, EXCHANGE_DIR_ENV: exchange}
        log = self._launch("Spark worker", WORKER_CLASS, args, host, dict(properties), env)
        self._wait_ready(log, "Spark worker", (_WORKER_REGISTERED,), timeout)
        self._info.update(role="worker", url=master_url, host=host, exchange_dir=exchange)
        return self.info()

    def info(self) -> dict[str, Any]:
        """``pid`` (this actor's process), ``node_id``, ``pgid`` (the daemon's process
        group), ``role``, ``url`` (the master's); a worker's also ``host`` and
        ``exchange_dir``."""
        return {"pid": os.getpid(), "node_id": fedexec.get_runtime_context().node_id,
                **self._info}

    def diagnostics(self) -> str:
        """The end of the daemon's log and of its newest executor's stderr."""
        if self._workdir is None:
            return ""
        out = _tail(os.path.join(self._workdir, "log"))
        stderrs = glob.glob(os.path.join(self._workdir, "work", "*", "*", "stderr"))
        if stderrs:
            newest = max(stderrs, key=os.path.getmtime)
            out += f"\n--- {os.path.relpath(newest, self._workdir)} ---\n" + _tail(newest)
        return out

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL to its whole group); idempotent."""
        sup, self._supervisor = self._supervisor, None
        pgid = self._info.get("pgid")
        if sup is not None and sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(_STOP_WAIT)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait()
        if pgid:  # the supervisor killed it already, unless it was killed itself
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _launch(self, what: str, cls: str, args: list[str], host: str,
                properties: dict[str, str], extra_env: dict[str, str] | None = None) -> str:
        """Start ``spark-class cls args`` under a supervisor (``extra_env`` added to
        its environment); returns the log path."""
        node = fedexec.get_runtime_context().node_id
        find_java(f"node {node} ({what})")
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="spark-on-fedexec-")
        workdir = self._workdir
        props = os.path.join(workdir, "spark.properties")
        _write_properties(props, properties)
        local = os.path.join(workdir, "local")
        os.makedirs(local, exist_ok=True)
        home = spark_home()
        env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": host,
               "SPARK_CONF_DIR": workdir, "SPARK_LOCAL_DIRS": local, "SPARK_LOG_DIR": workdir,
               "SPARK_NO_DAEMONIZE": "1", **(extra_env or {})}
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        command = [os.path.join(home, "bin", "spark-class"), cls, *args,
                   "--properties-file", props]
        log = os.path.join(workdir, "log")
        with open(log, "ab") as out:
            self._supervisor = subprocess.Popen(
                [sys.executable, "-m", "fedexec.integrations._spark_supervisor",
                 str(os.getpid()), workdir, "--", *command],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=workdir)
        return log

    def _wait_ready(self, log: str, what: str, patterns: tuple[re.Pattern[str], ...],
                    timeout: float, *, port: int = 0, host: str = "") -> re.Match[str]:
        """Wait until the log matches every pattern (returns the first's match);
        ``FedexecError`` with the log's end if the daemon exits or ``timeout``
        passes first (the daemon is then stopped)."""
        assert self._supervisor is not None and self._workdir is not None
        deadline = time.monotonic() + timeout
        exit_code = os.path.join(self._workdir, "exit_code")
        while True:
            text = _tail(log, 1 << 20)
            if "pgid" not in self._info:
                with contextlib.suppress(OSError, ValueError), \
                        open(os.path.join(self._workdir, "pgid")) as f:
                    self._info["pgid"] = int(f.read())
            matches = [p.search(text) for p in patterns]
            if all(matches):
                return matches[0]  # type: ignore[return-value]
            exited = os.path.exists(exit_code) or self._supervisor.poll() is not None
            if exited or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        text = _tail(log)
        node = fedexec.get_runtime_context().node_id
        self.stop()
        if port and _PORT_IN_USE.search(text):
            raise FedexecError(
                f"the {what} could not listen on {host}:{port}: the port is in use; pass "
                "another master_port, or none to let the system pick a free one")
        why = "exited" if exited else f"was not ready within {timeout:g} s"
        raise FedexecError(f"the {what} on node {node} {why}; the end of its log:\n{text}")
