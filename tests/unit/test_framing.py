"""``fedexec._framing``, the framing of every connection: frames survive any split
of the stream, many frames in one read, and a frame over the limit is refused at
its header (before its body is read or buffered), by every reader and by ``pack``."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedexec import _framing
from fedexec._framing import HEADER, FrameReader, pack, read_frame, recv_frame
from fedexec.exceptions import FrameTooLargeError, ProtocolError

# msgpack values as the protocols use them: ints, strings, bytes, lists, maps
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=30)
    | st.binary(max_size=300) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(_values, min_size=1, max_size=8), cuts=st.lists(
    st.integers(0, 10_000), max_size=12))
def test_any_frames_round_trip_through_any_split_of_the_stream(frames, cuts):
    stream = b"".join(pack(f) for f in frames)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reader, got = FrameReader(), []
    for lo, hi in itertools.pairwise(points):
        got.extend(reader.feed(stream[lo:hi]))
    assert got == frames


def test_many_frames_in_one_read_and_a_partial_one_kept():
    frames = [[1, i, b"x" * i] for i in range(100)]
    stream = b"".join(pack(f) for f in frames)
    extra = pack(["last", b"y" * 5000])
    reader = FrameReader()
    assert reader.feed(stream + extra[:7]) == frames  # 100 frames, and 7 bytes kept
    assert reader.feed(extra[7:2000]) == []
    assert reader.feed(extra[2000:]) == [["last", b"y" * 5000]]


def test_partial_header_then_body_byte_by_byte():
    data = pack({"k": [1, 2, 3]})
    reader, got = FrameReader(), []
    for i in range(len(data)):
        got.extend(reader.feed(data[i:i + 1]))
    assert got == [{"k": [1, 2, 3]}]


def test_a_header_over_the_limit_is_refused_before_the_body_arrives():
    reader = FrameReader(limit=1000)
    assert reader.feed(pack(b"a" * 900)) == [b"a" * 900]
    with pytest.raises(FrameTooLargeError, match="1001 bytes is over the 1000-byte limit "
                                                 "of this connection") as info:
        reader.feed(HEADER.pack(1001))  # only the header: refused at once
    assert isinstance(info.value, ProtocolError) and isinstance(info.value, ValueError)


def test_pack_refuses_a_frame_over_the_limit():
    with pytest.raises(FrameTooLargeError, match="outgoing"):
        pack(b"z" * 2000, limit=1000)
    assert len(pack(b"z" * 900, limit=1000)) > 900


def test_the_default_limit_is_two_gib_and_refuses_more():
    assert _framing.default_limit() == 1 << 31
    with pytest.raises(FrameTooLargeError):
        FrameReader().feed(HEADER.pack((1 << 31) + 1))


@pytest.mark.timeout(30)
def test_recv_frame_reads_frames_from_a_socket_in_pieces_and_refuses_oversize():
    a, b = socket.socketpair()
    with a, b:
        payload = pack(["one", b"1" * 100_000]) + pack(["two"])

        def send_slowly() -> None:
            for i in range(0, len(payload), 4096):
                a.sendall(payload[i:i + 4096])

        sender = threading.Thread(target=send_slowly)
        sender.start()
        buf = bytearray()
        assert recv_frame(b, buf) == ["one", b"1" * 100_000]
        assert recv_frame(b, buf) == ["two"]
        sender.join()
        a.sendall(HEADER.pack(5000))
        with pytest.raises(FrameTooLargeError):
            recv_frame(b, bytearray(), limit=4999)
        a.close()
        with pytest.raises(EOFError):
            recv_frame(b, bytearray())


@pytest.mark.timeout(30)
def test_read_frame_on_an_asyncio_stream():
    async def main() -> None:
        reader = asyncio.StreamReader()
        data = pack([1, "x"]) + pack({"a": b"b"}) + HEADER.pack(10_000)
        reader.feed_data(data[:3])
        task = asyncio.ensure_future(read_frame(reader))
        await asyncio.sleep(0)
        reader.feed_data(data[3:])
        assert await task == [1, "x"]
        assert await read_frame(reader) == {"a": b"b"}
        with pytest.raises(FrameTooLargeError):
            await read_frame(reader, limit=9_999)
        reader.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(reader)

    asyncio.run(main())
