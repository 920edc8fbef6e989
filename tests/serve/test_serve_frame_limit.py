"""A request or an answer over serve's frame limit fails alone, with a clear error.

The limit is read once per process (``FEDEXEC_SERVE_MAX_FRAME_BYTES``), so each
backend runs in a driver of its own, started with a small limit: its cluster's
proxy and replicas inherit it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from _backend_support import free_port

LIMIT = 1 << 16

DRIVER = r'''
import sys

import fedexec
import requests
from fedexec import serve
from fedexec.exceptions import FrameTooLargeError

backend, port, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


@serve.deployment(max_ongoing_requests=1)  # a slot lost to a failed request shows as a 503
class Echo:
    async def __call__(self, request):
        n = int(request.query_params.get("n", "0"))
        return b"x" * n if n else len(await request.body())

    def length(self, data: bytes) -> int:
        return len(data)

    def sized(self, n: int) -> bytes:
        return b"x" * n


def fails(call, *words):
    try:
        call()
    except FrameTooLargeError as exc:
        text = str(exc)
        assert all(w in text for w in words), text
        return
    raise AssertionError("no FrameTooLargeError")


with fedexec.Executor(backend=backend, num_cpus=2) as ex:
    serve.start(http_options={"port": port, "request_timeout_s": 3}, executor=ex)
    try:
        handle = serve.run(Echo.bind(), name="frames", route_prefix="/echo")
        url = f"http://127.0.0.1:{port}/echo"
        with requests.Session() as http:  # one keep-alive connection throughout
            for _ in range(2):
                r = http.post(url, data=b"x" * (limit + 1), timeout=30)
                assert r.status_code == 413, (r.status_code, r.text)
                assert "message limit" in r.text and "FEDEXEC_SERVE_MAX_FRAME_BYTES" in r.text
                r = http.post(url, data=b"abc", timeout=30)
                assert (r.status_code, r.text) == (200, "3"), (r.status_code, r.text)
                r = http.get(url, params={"n": limit + 1}, timeout=30)
                assert r.status_code == 500, (r.status_code, r.text[:300])
                assert "the response of deployment 'Echo'" in r.text and "limit" in r.text
                r = http.get(url, params={"n": 10}, timeout=30)
                assert (r.status_code, r.content) == (200, b"x" * 10), r.status_code
        for _ in range(2):
            fails(lambda: handle.length.remote(b"x" * (limit + 1)).result(timeout_s=30),
                  "limit")
            assert handle.length.remote(b"ab").result(timeout_s=30) == 2
            fails(lambda: handle.sized.remote(limit + 1).result(timeout_s=30),
                  "the value of Echo.sized", "limit")
            assert handle.sized.remote(3).result(timeout_s=30) == b"xxx"
    finally:
        serve.shutdown()
print("FRAMES OK")
'''


@pytest.mark.timeout(300)
def test_oversized_request_and_answer_fail_alone(serve_backend, tmp_path):
    env = {**os.environ, "FEDEXEC_SERVE_MAX_FRAME_BYTES": str(LIMIT),
           "FEDEXEC_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", DRIVER, serve_backend, str(free_port()),
                          str(LIMIT)], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and "FRAMES OK" in out.stdout, \
        f"rc {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
