"""TensorBoard event files, written directly.

An event file is a sequence of records ``[len u64][crc(len) u32][data][crc(data) u32]``
(little endian, CRCs masked CRC-32C) whose data are ``Event`` protocol buffers.
Scalars need only three messages, encoded here by hand::

    Event   {1: wall_time double, 2: step int64, 3: file_version string, 5: summary}
    Summary {1: repeated Value}
    Value   {1: tag string, 2: simple_value float}

Writing them here avoids importing ``tensorboardX``, whose package import pulls
in torch when it is installed (seconds); files are the same bytes TensorBoard
and tensorboardX read.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable
from typing import BinaryIO

__all__ = ["EventFileWriter", "crc32c", "event_bytes"]


def _tables() -> list[list[int]]:
    """The 8 tables of slicing-by-8 CRC-32C (table 0 is the byte-wise one)."""
    first = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        first.append(crc)
    tables = [first]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[i] >> 8) ^ first[prev[i] & 0xFF] for i in range(256)])
    return tables


_T = _tables()


def _crc32c_python(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, eight bytes per step."""
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    crc = 0xFFFFFFFF
    n = len(data) - len(data) % 8
    for (lo, hi) in struct.iter_unpack("<II", data[:n]):
        lo ^= crc
        crc = (t7[lo & 0xFF] ^ t6[(lo >> 8) & 0xFF] ^ t5[(lo >> 16) & 0xFF] ^ t4[lo >> 24]
               ^ t3[hi & 0xFF] ^ t2[(hi >> 8) & 0xFF] ^ t1[(hi >> 16) & 0xFF] ^ t0[hi >> 24])
    for byte in data[n:]:
        crc = t0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # the C implementation (google-crc32c, in the [tune] extra) when installed
    from google_crc32c import value as crc32c
except ImportError:  # pragma: no cover - depends on the environment
    crc32c = _crc32c_python


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited (wire type 2)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_VALUE_PREFIX: dict[str, bytes] = {}


def _value(tag: str, value: float) -> bytes:
    """``Summary.Value {tag, simple_value}`` as a ``Summary.value`` field."""
    prefix = _VALUE_PREFIX.get(tag)
    if prefix is None:
        tag_field = _field(1, tag.encode())
        prefix = _varint(1 << 3 | 2) + _varint(len(tag_field) + 5) + tag_field + b"\x15"
        if len(_VALUE_PREFIX) < 10_000:
            _VALUE_PREFIX[tag] = prefix
    return prefix + struct.pack("<f", value)


def event_bytes(wall_time: float, step: int = 0, scalars: Iterable[tuple[str, float]] = (),
                file_version: str | None = None) -> bytes:
    """One serialized ``Event`` with ``scalars`` as ``(tag, value)`` summaries."""
    out = b"\x09" + struct.pack("<d", wall_time)  # field 1, 64-bit
    if step:
        out += b"\x10" + _varint(step)  # field 2, varint
    if file_version is not None:
        out += _field(3, file_version.encode())
    values = b"".join([_value(tag, value) for tag, value in scalars])
    if values:
        out += _field(5, values)
    return out


class EventFileWriter:
    """Appends events to ``<directory>/events.out.tfevents.<time>.<host>``."""

    def __init__(self, directory: str) -> None:
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self.path = f"{directory}/{name}"
        self._file: BinaryIO = open(self.path, "ab")
        self.write(event_bytes(time.time(), file_version="brain.Event:2"))

    def write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", _masked(header)) + data
                         + struct.pack("<I", _masked(data)))

    def add_scalars(self, step: int, scalars: Iterable[tuple[str, float]]) -> None:
        self.write(event_bytes(time.time(), step, scalars))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
