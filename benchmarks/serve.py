"""fedexec.serve side by side with plain uvicorn and Ray Serve (issue 15).

Usage::

    python benchmarks/serve.py [--systems uvicorn,fedexec,ray] [--handlers noop,numpy]
                               [--concurrency 1,16,64] [--seconds 5] [--python-ray PATH]
                               [--json out.json]

Every system serves the same async handler over HTTP on 127.0.0.1: ``noop``
returns ``{"ok": 1}``; ``numpy`` runs a small model (a 64x64 matrix times the
vector given in the query, tanh, sum). Systems: plain uvicorn + starlette in one
process (the floor), fedexec.serve with 1 and 2 replicas, Ray Serve with 1 and 2
replicas (``max_ongoing_requests=100`` and no access log for both). Each server
runs in a child process of its own; the load comes from another child
(``_serve_load.py``: closed loop, one keep-alive connection per concurrent
client, 0.5 s warm-up, then ``--seconds`` measured). Measured: QPS, p50, p99.

Targets (issue 15): fedexec >= 5x Ray Serve's QPS at concurrency 16 and 64;
fedexec with 1 replica >= 50% of plain uvicorn's QPS; added p50 over plain
uvicorn <= 1 ms at concurrency 1. ``--python-ray`` names an interpreter with
``ray[serve]`` (Ray's systems are skipped if it cannot import ray).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
READY = "@@READY@@"


# ------------------------------------------------------------------ the shared handlers
def make_numpy_model() -> Any:
    import numpy as np

    weights = np.random.default_rng(0).standard_normal((64, 64))

    def predict(x: float) -> float:
        return float(np.tanh(weights @ np.full(64, x)).sum())

    return predict


# ------------------------------------------------------------------ servers (children)
def serve_uvicorn(handler: str, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    predict = make_numpy_model()

    async def endpoint(request: Any) -> Any:
        if handler == "noop":
            return JSONResponse({"ok": 1})
        return JSONResponse({"y": predict(float(request.query_params.get("x", "0.5")))})

    app = Starlette(routes=[Route("/", endpoint)])
    print(READY, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                http="httptools", loop="uvloop")


def model_class(handler: str) -> type:
    """The deployment class both serving systems run (undecorated)."""

    class Model:
        def __init__(self) -> None:
            self.predict = make_numpy_model()

        async def __call__(self, request: Any) -> Any:
            if handler == "noop":
                return {"ok": 1}
            return {"y": self.predict(float(request.query_params.get("x", "0.5")))}

    return Model


def serve_fedexec(handler: str, port: int, replicas: int) -> None:
    import fedexec
    from fedexec import serve

    Model = serve.deployment(num_replicas=replicas, max_ongoing_requests=100)(
        model_class(handler))

    fedexec.init(num_cpus=2)
    serve.start(http_options={"port": port})
    serve.run(Model.bind())
    print(READY, flush=True)
    sys.stdin.read()
    serve.shutdown()
    fedexec.shutdown()


def serve_ray(handler: str, port: int, replicas: int) -> None:
    import ray
    from ray import serve

    Model = serve.deployment(num_replicas=replicas, max_ongoing_requests=100,
                             logging_config={"enable_access_log": False},
                             ray_actor_options={"num_cpus": 0})(model_class(handler))

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Model.bind())
    print(READY, flush=True)
    sys.stdin.read()
    serve.shutdown()
    ray.shutdown()


# ------------------------------------------------------------------ the driver
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env() -> dict[str, str]:
    sys.path.insert(0, HERE)
    from _env import child_env

    return child_env()


def run_system(python: str, system: str, replicas: int, handler: str,
               levels: list[int], seconds: float) -> list[dict[str, Any]]:
    port = _free_port()
    server = subprocess.Popen(
        [python, os.path.abspath(__file__), "--server", system, handler, str(replicas),
         str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=_child_env())
    rows = []
    try:
        deadline = time.monotonic() + 180
        assert server.stdout is not None
        while True:
            line = server.stdout.readline()
            if READY in line:
                break
            if (not line and server.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"{system} server did not start")
        time.sleep(1.0)
        query = "/" if handler == "noop" else "/?x=0.5"
        for c in levels:
            out = subprocess.run([sys.executable, os.path.join(HERE, "_serve_load.py"),
                                  f"http://127.0.0.1:{port}{query}", str(c), str(seconds)],
                                 capture_output=True, text=True, timeout=seconds + 120,
                                 env=_child_env())
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"system": system if system == "uvicorn" else f"{system}-{replicas}",
                         "handler": handler, "concurrency": c, **result})
            print(f"  {rows[-1]['system']:<10} {handler:<6} c={c:<3} "
                  f"{result['qps']:>8.0f} qps  p50 {result['p50_ms']:.2f} ms  "
                  f"p99 {result['p99_ms']:.2f} ms  errors {result['errors']}", flush=True)
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return rows


def _ratios(rows: list[dict[str, Any]]) -> list[str]:
    by = {(r["system"], r["handler"], r["concurrency"]): r for r in rows}
    out = []
    for handler in sorted({r["handler"] for r in rows}):
        for c in sorted({r["concurrency"] for r in rows}):
            base, fx1 = by.get(("uvicorn", handler, c)), by.get(("fedexec-1", handler, c))
            if base and fx1:
                out.append(f"{handler} c={c}: fedexec-1 / uvicorn QPS = "
                           f"{fx1['qps'] / base['qps']:.2f} (target >= 0.5); added p50 "
                           f"{fx1['p50_ms'] - base['p50_ms']:+.2f} ms")
            for n in (1, 2):
                fx, ray = by.get((f"fedexec-{n}", handler, c)), by.get((f"ray-{n}", handler, c))
                if fx and ray:
                    out.append(f"{handler} c={c}: fedexec-{n} / ray-{n} QPS = "
                               f"{fx['qps'] / ray['qps']:.1f}x (target >= 5x at c>=16)")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--server":
        system, handler, replicas, port = sys.argv[2], sys.argv[3], int(sys.argv[4]), \
            int(sys.argv[5])
        if system == "uvicorn":
            serve_uvicorn(handler, port)
        elif system == "fedexec":
            serve_fedexec(handler, port, replicas)
        else:
            serve_ray(handler, port, replicas)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default="uvicorn,fedexec,ray")
    p.add_argument("--handlers", default="noop,numpy")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--replicas", default="1,2")
    p.add_argument("--python-ray", default=os.environ.get("FEDEXEC_BENCH_RAY_PYTHON",
                                                          "/tmp/serveray/bin/python"))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    replicas = [int(n) for n in args.replicas.split(",")]
    rows: list[dict[str, Any]] = []
    for handler in args.handlers.split(","):
        for system in args.systems.split(","):
            python = sys.executable
            if system == "ray":
                python = args.python_ray
                ok = subprocess.run([python, "-c", "import ray.serve"], capture_output=True)
                if ok.returncode:
                    print(f"  ray: skipped ({python} cannot import ray.serve)")
                    continue
            for n in ([1] if system == "uvicorn" else replicas):
                rows.extend(run_system(python, system, n, handler, levels, args.seconds))
    print()
    for line in _ratios(rows):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
