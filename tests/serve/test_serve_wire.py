"""The frame codec and the handshake of serve's direct path (no processes)."""

from __future__ import annotations

import random

import pytest

from fedexec.serve._wire import MAC, FrameReader, Op, mac, new_nonce, pack


def test_frames_survive_any_split_of_the_stream():
    frames = [[Op.HTTP, i, "GET", f"/p/{i}", b"q=1", [[b"k", b"v"]], b"x" * (i * 37), ""]
              for i in range(50)]
    stream = b"".join(pack(f) for f in frames)
    rng = random.Random(0)
    for _ in range(20):
        reader, got, pos = FrameReader(), [], 0
        while pos < len(stream):
            step = rng.randint(1, 300)
            got.extend(reader.feed(stream[pos:pos + step]))
            pos += step
        assert got == [[int(f[0]), *f[1:]] for f in frames]


def test_oversized_frame_is_refused():
    reader = FrameReader()
    with pytest.raises(ValueError, match="over the"):
        reader.feed(b"\xff\xff\xff\xff")


def test_mac_depends_on_secret_label_and_nonce():
    nonce = new_nonce()
    base = mac(b"s" * 32, b"client", nonce)
    assert len(base) == MAC
    assert base != mac(b"t" * 32, b"client", nonce)
    assert base != mac(b"s" * 32, b"server", nonce)
    assert base != mac(b"s" * 32, b"client", new_nonce())


def test_importing_serve_leaves_the_http_stack_to_the_actors():
    import subprocess
    import sys

    code = ("import sys, fedexec; assert 'fedexec.serve' not in sys.modules; "
            "from fedexec import serve; "
            "heavy = {'starlette', 'uvicorn', 'fastapi', 'prometheus_client'} & set(sys.modules); "
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_serve_refuses_a_backend_without_actors():
    import fedexec
    from fedexec import serve

    pytest.importorskip("pyspark")
    with fedexec.Executor(backend="spark", num_cpus=1) as ex:
        with pytest.raises(fedexec.UnsupportedOnBackendError,
                           match=r"needs \['actors', 'named_actors'\].*'spark' backend"):
            serve.start(executor=ex)


class _CountingTransport:
    """A real transport whose writes are recorded (each call's bytes) on the way."""

    def __init__(self, transport) -> None:
        self.transport, self.writes = transport, []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()


def _frames(data: bytes) -> list:
    return FrameReader().feed(data)


@pytest.mark.timeout(30)
def test_writer_writes_a_lone_frame_at_once_and_coalesces_the_rest_of_the_turn():
    import asyncio

    from fedexec.serve._wire import Writer

    async def main() -> list:
        loop = asyncio.get_running_loop()
        got = bytearray()
        done = asyncio.Event()

        class Sink(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                got.extend(data)
                if len(_frames(bytes(got))) == 6:
                    done.set()

        server = await loop.create_server(Sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        spy = _CountingTransport(transport)
        writer = Writer(spy, loop.call_soon)

        writer.send([Op.RESPONSE, 1, 200, [], b"a"])  # idle: out before send returns
        assert [_frames(w) for w in spy.writes] == [[[Op.RESPONSE, 1, 200, [], b"a"]]]
        writer.send([Op.RESPONSE, 2, 200, [], b"b"])  # same turn: queued ...
        writer.send([Op.RESPONSE, 3, 200, [], b"c"])
        assert len(spy.writes) == 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # ... and out together on the next turn
        assert [len(_frames(w)) for w in spy.writes] == [1, 2]

        await asyncio.sleep(0)  # idle again: the next frame goes at once
        writer.send([Op.RESPONSE, 4, 200, [], b"d"])
        assert len(spy.writes) == 3

        await asyncio.sleep(0)
        await asyncio.sleep(0)
        writer.mark_started(5)  # a request began: its STARTED frame waits for the turn,
        writer.mark_started(6)
        writer.kick()
        writer.send([Op.RESPONSE, 5, 200, [], b"e"])  # and 5's answer says it started
        assert len(spy.writes) == 3
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(spy.writes) == 4
        assert _frames(spy.writes[3]) == [[Op.STARTED, 0, [6]], [Op.RESPONSE, 5, 200, [], b"e"]]
        await asyncio.wait_for(done.wait(), 10)
        transport.close()
        server.close()
        return [f[1] for f in _frames(bytes(got))]

    from fedexec.serve._loop import _new_loop

    loop = _new_loop()
    try:
        assert loop.run_until_complete(main()) == [1, 2, 3, 4, 0, 5]
    finally:
        loop.close()
