"""fedexec.serve side by side with plain uvicorn and Ray Serve (issue 15).

Usage::

    python benchmarks/serve.py [--systems uvicorn,fedexec,ray] [--handlers noop,numpy]
                               [--concurrency 1,16,64] [--seconds 5] [--python-ray PATH]
                               [--json out.json]
    python benchmarks/serve.py --interleave 7 [--handlers noop,numpy] [--seconds 3]

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

``--interleave N`` settles the concurrency-1 target on a machine whose load
swings: plain uvicorn and fedexec.serve (1 replica) both stay up, and N pairs of
short runs alternate between them (the order flips every pair); it prints each
pair's QPS ratio and added p50, and their medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def _server(python: str, system: str, replicas: int, handler: str) -> Iterator[int]:
    """A server child serving ``handler``, up and warm; its port."""
    port = _free_port()
    server = subprocess.Popen(
        [python, os.path.abspath(__file__), "--server", system, handler, str(replicas),
         str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=_child_env())
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
        yield port
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _load(port: int, handler: str, c: int, seconds: float) -> dict[str, Any]:
    """One closed-loop load run from a child process (see ``_serve_load.py``)."""
    query = "/" if handler == "noop" else "/?x=0.5"
    out = subprocess.run([sys.executable, os.path.join(HERE, "_serve_load.py"),
                          f"http://127.0.0.1:{port}{query}", str(c), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 120,
                         env=_child_env())
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_system(python: str, system: str, replicas: int, handler: str,
               levels: list[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    with _server(python, system, replicas, handler) as port:
        for c in levels:
            result = _load(port, handler, c, seconds)
            rows.append({"system": system if system == "uvicorn" else f"{system}-{replicas}",
                         "handler": handler, "concurrency": c, **result})
            print(f"  {rows[-1]['system']:<10} {handler:<6} c={c:<3} "
                  f"{result['qps']:>8.0f} qps  p50 {result['p50_ms']:.2f} ms  "
                  f"p99 {result['p99_ms']:.2f} ms  errors {result['errors']}", flush=True)
    return rows


def interleave(handlers: list[str], pairs: int, seconds: float) -> list[dict[str, Any]]:
    """Concurrency 1: ``pairs`` alternating runs of plain uvicorn and fedexec.serve
    with 1 replica, both servers up throughout; one row per pair."""
    rows = []
    for handler in handlers:
        with _server(sys.executable, "uvicorn", 1, handler) as floor, \
                _server(sys.executable, "fedexec", 1, handler) as fx:
            print(f"{handler}, c=1: pair  uvicorn qps  fedexec-1 qps  ratio  "
                  "uvicorn p50 ms  fedexec-1 p50 ms  added p50 ms", flush=True)
            for i in range(pairs):
                order = [("uvicorn", floor), ("fedexec", fx)]
                got = {name: _load(port, handler, 1, seconds)
                       for name, port in (order if i % 2 == 0 else order[::-1])}
                u, f = got["uvicorn"], got["fedexec"]
                row = {"handler": handler, "pair": i + 1, "uvicorn_qps": u["qps"],
                       "fedexec_qps": f["qps"], "ratio": f["qps"] / u["qps"],
                       "uvicorn_p50_ms": u["p50_ms"], "fedexec_p50_ms": f["p50_ms"],
                       "added_p50_ms": f["p50_ms"] - u["p50_ms"],
                       "errors": u["errors"] + f["errors"]}
                rows.append(row)
                print(f"{'':14}{i + 1:>4}  {u['qps']:>11.0f}  {f['qps']:>13.0f}  "
                      f"{row['ratio']:>5.2f}  {u['p50_ms']:>14.2f}  {f['p50_ms']:>16.2f}  "
                      f"{row['added_p50_ms']:>+12.2f}", flush=True)
            mine = [r for r in rows if r["handler"] == handler]
            print(f"{handler}, c=1: median ratio "
                  f"{statistics.median(r['ratio'] for r in mine):.2f} (target >= 0.5), "
                  f"median added p50 "
                  f"{statistics.median(r['added_p50_ms'] for r in mine):+.2f} ms "
                  "(target <= 1 ms)", flush=True)
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
    p.add_argument("--interleave", type=int, default=0, metavar="N",
                   help="c=1 only: N alternating pairs of uvicorn and fedexec-1 runs")
    args = p.parse_args()
    if args.interleave:
        pairs = interleave(args.handlers.split(","), args.interleave, args.seconds)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(pairs, f, indent=1)
        return
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
