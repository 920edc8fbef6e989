"""Many simulated nodes in one process, for the head-scale benchmark of ``multinode.py``.

Each simulated node is a bare protocol client of the head, as a real node's
federation link is (``federation.py``: ``_open_link`` / ``_join_head`` / ``_tick``)::

    connect ─ client_handshake(token, role="node") ─ [[HELLO, "node", pid, node_id, {address, total}]]
            ◀─ [[WELCOME, head_id, rows]]
    every interval:  [[HEARTBEAT, available, queued]]  ─▶ head
    whatever the head sends (VIEW deltas, NODE_DEAD) is read and counted, not decoded

No node runs tasks: every one reports ``available = {"CPU": 0.0}`` (its 4 CPUs are
all busy), so the head never forwards work to one. One selectors loop serves every
socket, so 500 nodes cost a few ms of CPU per second here. Node 0 is the
*observer*: it decodes what it gets (VIEW rows), to time when the head's view says
a silenced node is dead.

Driven over stdin/stdout, one JSON object per line::

    {"cmd": "join", "n": 90}           -> {"event": "joined", "alive": 100, "s": 0.8}
    {"cmd": "mode", "mode": "all"}     -> {"event": "mode", ...}   idle | one | all
    {"cmd": "stats"}                   -> {"event": "stats", ...}  counters since last stats
    {"cmd": "silence", "n": 10, "wait": 12}
                                       -> {"event": "silenced", ...} then, once all are
                                          declared dead (or after wait s),
                                          {"event": "dead", "closed_s": [...], "view_s": [...]}
    {"cmd": "quit"}

Modes: ``idle`` -- every report is the same as the last (the head's view does not
change); ``one`` -- node 1's queue length flips 0/1 on every heartbeat (one row
changes per report; node 1 and not the observer, which is never sent its own row);
``all`` -- every node's queue length flips on every heartbeat (every row changes
every interval: a busy cluster).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import resource
import selectors
import socket
import sys
import time
from typing import Any

from fedexec.backends.native.cluster import token_bytes
from fedexec.backends.native.protocol import FrameReader, Op, client_handshake, pack_frame

_READ = selectors.EVENT_READ
_JOIN_BATCH = 20  # handshakes per loop turn, so joined nodes keep heartbeating


class SimNode:
    __slots__ = ("closed", "due", "idx", "joined", "node_id", "queued", "reader", "silent",
                 "sock")

    def __init__(self, idx: int, node_id: str, sock: socket.socket):
        self.idx = idx
        self.node_id = node_id
        self.sock = sock
        self.reader: FrameReader | None = FrameReader()  # until WELCOME (observer: always)
        self.joined = False
        self.silent = False
        self.closed = 0.0
        self.queued = 0
        self.due = 0.0


class Simulator:
    def __init__(self, address: str, token: bytes, interval: float):
        host, _, port = address.rpartition(":")
        self.target = (host.strip("[]") or "127.0.0.1", int(port))
        self.token = token
        self.interval = interval
        self.sel = selectors.DefaultSelector()
        self.nodes: list[SimNode] = []
        self.by_sock: dict[int, SimNode] = {}
        self.schedule: list[tuple[float, int]] = []  # heap of (due, node index)
        self.prefix = os.urandom(4).hex()
        self.mode = "idle"
        self.to_join = 0
        self.join_started = 0.0
        self.buf = bytearray(1 << 20)
        self.out = sys.stdout
        # counters, reset by "stats"
        self.rx_bytes = 0
        self.rx_views = 0
        self.rx_view_rows = 0
        self.hb_sent = 0
        self.hb_lag_max = 0.0
        self.stats_t = time.monotonic()
        self.stats_cpu = self._cpu()
        # node loss
        self.silenced: dict[str, float] = {}
        self.view_dead: dict[str, float] = {}
        self.silence_deadline = 0.0
        self.unexpected_closed: list[str] = []
        self.stdin_buf = b""
        self.quit = False

    @staticmethod
    def _cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    def emit(self, **event: Any) -> None:
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    # ------------------------------------------------------------- joining
    def _connect_one(self) -> None:
        idx = len(self.nodes)
        node_id = f"sim{self.prefix}{idx:06d}"
        sock = socket.create_connection(self.target, timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client_handshake(sock, self.token, timeout=10, role="node")
        sock.sendall(pack_frame([[Op.HELLO, "node", os.getpid(), node_id,
                                  {"address": "", "total": {"CPU": 4.0}}]]))
        sock.setblocking(False)
        node = SimNode(idx, node_id, sock)
        self.nodes.append(node)
        self.by_sock[sock.fileno()] = node
        self.sel.register(sock, _READ, node)

    def _alive(self) -> int:
        return sum(1 for n in self.nodes if n.joined and not n.closed)

    # ------------------------------------------------------------- reading
    def _on_readable(self, node: SimNode) -> None:
        try:
            n = node.sock.recv_into(self.buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        now = time.monotonic()
        if n == 0:
            self._closed(node, now)
            return
        self.rx_bytes += n
        if node.reader is None:
            return
        for frame in node.reader.feed(bytes(self.buf[:n])):
            for msg in frame:
                self._on_message(node, msg, now)

    def _on_message(self, node: SimNode, msg: list[Any], now: float) -> None:
        op = msg[0]
        if op == Op.WELCOME and not node.joined:
            node.joined = True
            # Real nodes join at unrelated times: spread the heartbeats over the interval.
            node.due = now + random.uniform(0.0, self.interval)
            heapq.heappush(self.schedule, (node.due, node.idx))
            if node.idx != 0:
                node.reader = None  # from now on only count what comes
        elif op == Op.VIEW:
            self.rx_views += 1
            self.rx_view_rows += len(msg[1])
            for row in msg[1]:
                if not row[4] and row[0] in self.silenced and row[0] not in self.view_dead:
                    self.view_dead[row[0]] = now
        elif op == Op.NODE_DEAD and msg[1] == node.node_id:
            self._closed(node, now)

    def _closed(self, node: SimNode, now: float) -> None:
        if node.closed:
            return
        node.closed = now
        self.sel.unregister(node.sock)
        node.sock.close()
        if node.node_id not in self.silenced:
            self.unexpected_closed.append(node.node_id)

    # ---------------------------------------------------------- heartbeats
    def _heartbeats(self, now: float) -> None:
        sched = self.schedule
        hb = Op.HEARTBEAT
        free = {"CPU": 0.0}
        while sched and sched[0][0] <= now:
            node = self.nodes[heapq.heappop(sched)[1]]
            if node.closed or node.silent:
                continue
            lag = now - node.due
            if lag > self.hb_lag_max:
                self.hb_lag_max = lag
            if self.mode == "all" or (self.mode == "one" and node.idx == 1):
                node.queued ^= 1
            try:
                node.sock.send(pack_frame([[hb, free, node.queued]]))
                self.hb_sent += 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._closed(node, now)
                continue
            node.due += self.interval
            if node.due < now:  # we fell behind: do not send a burst to catch up
                node.due = now + self.interval
            heapq.heappush(sched, (node.due, node.idx))

    # ------------------------------------------------------------ commands
    def _on_stdin(self) -> None:
        data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            self.quit = True
            return
        self.stdin_buf += data
        while b"\n" in self.stdin_buf:
            line, _, self.stdin_buf = self.stdin_buf.partition(b"\n")
            if line.strip():
                self._command(json.loads(line))

    def _command(self, cmd: dict[str, Any]) -> None:
        what = cmd["cmd"]
        now = time.monotonic()
        if what == "join":
            self.to_join += int(cmd["n"])
            self.join_started = now
            if not self.to_join:
                self.emit(event="joined", alive=self._alive(), s=0.0)
        elif what == "mode":
            self.mode = cmd["mode"]
            self.emit(event="mode", mode=self.mode)
        elif what == "stats":
            cpu = self._cpu()
            dt = now - self.stats_t
            self.emit(event="stats", s=dt, rx_bytes=self.rx_bytes, views=self.rx_views,
                      view_rows=self.rx_view_rows, heartbeats=self.hb_sent,
                      hb_lag_max=self.hb_lag_max, sim_cpu=cpu - self.stats_cpu,
                      alive=self._alive(), unexpected_closed=len(self.unexpected_closed))
            self.rx_bytes = self.rx_views = self.rx_view_rows = self.hb_sent = 0
            self.hb_lag_max = 0.0
            self.stats_t, self.stats_cpu = now, cpu
        elif what == "silence":
            live = [n for n in self.nodes if n.joined and not n.closed and not n.silent
                    and n.idx != 0]
            victims = live[-int(cmd["n"]):]
            self.silenced = {}
            self.view_dead = {}
            for n in victims:
                n.silent = True
                self.silenced[n.node_id] = now
            self.silence_deadline = now + float(cmd.get("wait", 30.0))
            self.emit(event="silenced", n=len(victims))
        elif what == "quit":
            self.quit = True

    def _check_silenced(self, now: float) -> None:
        if not self.silenced:
            return
        nodes = [n for n in self.nodes if n.node_id in self.silenced]
        done = all(n.closed for n in nodes) and all(n.node_id in self.view_dead for n in nodes)
        if not done and now < self.silence_deadline:
            return
        t0 = self.silenced
        self.emit(event="dead", n=len(nodes),
                  closed_s=[n.closed - t0[n.node_id] for n in nodes if n.closed],
                  view_s=[self.view_dead[i] - t0[i] for i in t0 if i in self.view_dead],
                  timed_out=not done)
        self.silenced = {}

    # ----------------------------------------------------------------- loop
    def run(self) -> None:
        os.set_blocking(sys.stdin.fileno(), False)
        self.sel.register(sys.stdin.fileno(), _READ, "stdin")
        self.emit(event="ready", pid=os.getpid())
        while not self.quit:
            now = time.monotonic()
            if self.to_join:
                for _ in range(min(_JOIN_BATCH, self.to_join)):
                    self._connect_one()
                    self.to_join -= 1
                timeout = 0.0
            else:
                timeout = 0.05
                if self.schedule:
                    timeout = max(0.0, min(timeout, self.schedule[0][0] - now))
            for key, _mask in self.sel.select(timeout):
                if key.data == "stdin":
                    self._on_stdin()
                else:
                    self._on_readable(key.data)
            now = time.monotonic()
            self._heartbeats(now)
            if self.join_started and not self.to_join and \
                    all(n.joined or n.closed for n in self.nodes):
                self.emit(event="joined", alive=self._alive(), s=now - self.join_started)
                self.join_started = 0.0
            self._check_silenced(now)
        for n in self.nodes:
            if not n.closed:
                n.sock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--address", required=True, help="the head's host:port")
    ap.add_argument("--interval", type=float, required=True, help="heartbeat interval, s")
    args = ap.parse_args()
    token = os.environ.get("FEDEXEC_TOKEN", "")  # not on the command line
    Simulator(args.address, token_bytes(token), args.interval).run()


if __name__ == "__main__":
    main()
