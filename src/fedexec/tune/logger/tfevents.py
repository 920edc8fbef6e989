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


def _table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


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


def event_bytes(wall_time: float, step: int = 0, scalars: Iterable[tuple[str, float]] = (),
                file_version: str | None = None) -> bytes:
    """One serialized ``Event`` with ``scalars`` as ``(tag, value)`` summaries."""
    out = b"\x09" + struct.pack("<d", wall_time)  # field 1, 64-bit
    if step:
        out += b"\x10" + _varint(step)  # field 2, varint
    if file_version is not None:
        out += _field(3, file_version.encode())
    values = b"".join(
        _field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
        for tag, value in scalars)
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
