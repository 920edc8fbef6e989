"""A closed-loop HTTP/1.1 load generator (keep-alive, one request in flight per
connection): ``python _serve_load.py URL CONCURRENCY SECONDS`` prints one JSON
line with qps, p50_ms, p99_ms, errors. Run it in its own process."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


async def _worker(host: str, port: int, request: bytes, stop: float, lat: list[float],
                  errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    clock = time.perf_counter
    try:
        while clock() < stop:
            t0 = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length, chunked = 0, False
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v)
                elif k == b"transfer-encoding" and b"chunked" in v:
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
            lat.append(clock() - t0)
    finally:
        writer.close()


async def main(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Connection: keep-alive\r\n\r\n").encode()
    warm: list[float] = []
    await asyncio.gather(*[_worker(host, port, request, time.perf_counter() + 0.5, warm, [])
                           for _ in range(concurrency)])
    lat: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    await asyncio.gather(*[_worker(host, port, request, start + seconds, lat, errors)
                           for _ in range(concurrency)])
    elapsed = time.perf_counter() - start
    lat.sort()
    n = len(lat)
    return {"qps": n / elapsed, "p50_ms": 1e3 * lat[n // 2] if n else float("nan"),
            "p99_ms": 1e3 * lat[min(n - 1, int(n * 0.99))] if n else float("nan"),
            "requests": n, "errors": len(errors)}


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))))
