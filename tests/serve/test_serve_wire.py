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
