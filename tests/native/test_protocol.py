"""The native wire protocol against a real node manager: the HELLO exchange checks
the protocol version and the role, each role may send only its ops, errors keep
their type, and an oversized frame closes the connection before it is read."""

from __future__ import annotations

import socket
import time

import pytest

import fedexec
from fedexec.backends.native import cluster, protocol
from fedexec.backends.native.protocol import (
    Call,
    FrameReader,
    Op,
    client_handshake,
    decode_error,
    pack_frame,
)
from fedexec.exceptions import FrameTooLargeError, ProtocolError, ProtocolVersionError

T = 60


@pytest.fixture
def ex():
    executor = fedexec.Executor("native", num_cpus=1)
    yield executor
    executor.shutdown()


@pytest.fixture
def logged_ex(capfd):
    """An executor whose node manager logs to ``capfd``: it is started in the test's
    call phase (the first use of the fixture's function), not at setup."""
    made = []

    def start():
        made.append(fedexec.Executor("native", num_cpus=1))
        return made[-1]
    yield start
    for executor in made:
        executor.shutdown()


def _connect(executor, role: str) -> socket.socket:
    """A new authenticated connection to ``executor``'s node manager as ``role``."""
    info = executor._backend._runtime.attach_info()
    sock = cluster.connect(("unix", info["socket_path"]))
    try:
        client_handshake(sock, info["token"], role=role)
    except BaseException:
        sock.close()
        raise
    return sock


def _logged(capfd, text: str, timeout: float = 20.0) -> bool:
    """Whether the node manager's log (our captured stderr) says ``text`` soon."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += capfd.readouterr().err
        if text in seen:
            return True
        time.sleep(0.05)
    return False


def _read_until_closed(sock: socket.socket, timeout: float = 30.0) -> list:
    """Every message the node manager sends until it closes the connection."""
    sock.settimeout(timeout)
    reader, messages = FrameReader(), []
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return messages
        for frame in reader.feed(data):
            messages.extend(frame)


def _ask(sock: socket.socket, req: int, call: int, *args) -> list:
    """Send a REQUEST, return its REPLY ``[op, req, ok, value]``."""
    sock.sendall(pack_frame([[Op.REQUEST, req, int(call), list(args)]]))
    sock.settimeout(30)
    reader = FrameReader()
    while True:
        data = sock.recv(1 << 16)
        assert data, "the node manager closed the connection"
        for frame in reader.feed(data):
            for msg in frame:
                if msg[0] == Op.REPLY and msg[1] == req:
                    return msg


# ------------------------------------------------------------------ versions
@pytest.mark.timeout(90)
def test_a_client_of_another_protocol_version_is_refused_naming_both(logged_ex, monkeypatch,
                                                                      capfd):
    ex = logged_ex()
    monkeypatch.setattr(protocol, "PROTOCOL_VERSION", protocol.PROTOCOL_VERSION + 40)
    with pytest.raises(ProtocolVersionError) as info:
        _connect(ex, "driver")
    text = str(info.value)
    assert f"protocol {protocol.PROTOCOL_VERSION - 40}" in text  # the node manager's
    assert f"protocol {protocol.PROTOCOL_VERSION}" in text       # ours
    assert "same fedexec version on every node" in text
    monkeypatch.undo()
    assert ex.submit(pow, 2, 5).result(timeout=T) == 32  # the node carries on
    assert _logged(capfd, "refused a connection")


def test_a_role_the_node_manager_does_not_take_is_refused(ex):
    with pytest.raises(ProtocolError, match="not 'job'"):
        _connect(ex, "job")


# ------------------------------------------------------------ roles and ops
@pytest.mark.timeout(90)
@pytest.mark.parametrize("msg", [
    [Op.PULL, "o" * 28],                                # node only
    [Op.VIEW, [["n" * 28, "127.0.0.1:1", {}, {}, True, 0]]],  # node only
    [Op.TASK_DONE, "t" * 28, []],                       # worker only
])
def test_a_driver_sending_an_op_of_another_role_is_refused_and_closed(logged_ex, msg, capfd):
    ex = logged_ex()
    sock = _connect(ex, "driver")
    try:
        sock.sendall(pack_frame([msg]))
        messages = _read_until_closed(sock)
    finally:
        sock.close()
    refused = [m for m in messages if m[0] == Op.REFUSED]
    assert len(refused) == 1 and refused[0][1] == msg[0]
    error = decode_error(refused[0][2])
    assert type(error) is ProtocolError
    assert f"driver connection may not send {Op(msg[0]).name}" in str(error)
    assert _logged(capfd, "may not send")  # the node manager logged why
    assert ex.submit(pow, 3, 3).result(timeout=T) == 27  # and carries on


@pytest.mark.timeout(90)
def test_a_hello_claiming_another_role_than_connected_as_closes(logged_ex, capfd):
    ex = logged_ex()
    sock = _connect(ex, "driver")
    try:
        sock.sendall(pack_frame([[Op.HELLO, "worker", 1, "w" * 28, {}]]))
        _read_until_closed(sock)
    finally:
        sock.close()
    assert _logged(capfd, "not the role it connected as")


@pytest.mark.timeout(90)
def test_a_node_only_control_call_from_a_driver_gets_a_typed_error_reply(ex):
    sock = _connect(ex, "driver")
    try:
        _, _, ok, value = _ask(sock, 7, Call.RELEASE_BUNDLES, "p" * 28)
        assert not ok
        error = decode_error(value)
        assert type(error) is ProtocolError and "only another node" in str(error)
        # the connection stays usable: an allowed call is answered
        _, _, ok, value = _ask(sock, 8, Call.CLUSTER_RESOURCES)
        assert ok and value["CPU"] == 1
    finally:
        sock.close()


def test_every_op_the_node_manager_handles_is_allowed_to_some_role():
    from fedexec.backends.native.federation import Federation
    from fedexec.backends.native.node import NodeManager
    from fedexec.backends.native.transfers import Transfers

    allowed = set().union(*protocol.ROLES.values())
    handled = set(NodeManager._handlers) | set(Federation.OPS) | set(Transfers.OPS)
    assert {Op.FETCH, Op.HEARTBEAT, Op.SUBMIT} <= handled
    assert handled <= allowed, handled - allowed


# --------------------------------------------------------------- typed errors
@pytest.mark.parametrize("exc", [
    KeyError("a key"), ValueError("bad"), TypeError("t"), ProtocolError("p"),
    FrameTooLargeError("big"), fedexec.exceptions.ObjectLostError("lost"),
])
def test_an_error_value_comes_back_with_its_type_and_message(exc):
    back = decode_error(protocol.encode_error(exc))
    assert type(back) is type(exc)
    assert back.args == exc.args


def test_an_error_of_an_unknown_type_is_a_fedexec_error_naming_it():
    class Strange(Exception):
        pass

    back = decode_error(protocol.encode_error(Strange("odd")))
    assert type(back) is fedexec.FedexecError and str(back) == "Strange: odd"
    assert isinstance(decode_error("ValueError: old text form"), ValueError)


# ------------------------------------------------------------------- framing
@pytest.mark.timeout(90)
def test_an_oversized_frame_closes_the_connection_before_it_is_read(logged_ex, capfd):
    ex = logged_ex()
    sock = _connect(ex, "driver")
    try:
        # announce 4 GiB - 1 (over the 2 GiB default), send none of it
        sock.sendall(b"\xff\xff\xff\xff" + b"x" * 100)
        assert _read_until_closed(sock) == []
    finally:
        sock.close()
    assert _logged(capfd, "limit of this connection")
    assert ex.submit(pow, 2, 2).result(timeout=T) == 4


@pytest.mark.timeout(90)
def test_a_refused_driver_raises_the_typed_error_it_was_sent(ex):
    backend = ex._backend
    backend._send([Op.PULL, "o" * 28])  # a driver may not: the node manager closes it
    deadline = time.monotonic() + 30
    while not backend._channel.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(ProtocolError, match="driver connection may not send PULL"):
        backend._request(Call.NODES, timeout=10)
