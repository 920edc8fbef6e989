"""The head's state on its disk: one sqlite file (stdlib ``sqlite3``, no server).

Tables hold JSON rows by key: ``actors`` (the actor directory, see
``directory.py``), ``placement_groups`` (their list rows), ``nodes`` (address and
resources of each live node) and ``meta`` (``head_id``: the node id of the head
that wrote it). Each change is committed at once (WAL, ``synchronous=NORMAL``: a
killed head process loses nothing committed; a power cut may lose the last
changes). A head started on the file of a head that was killed takes it back (see
``node.NodeManager._recover``); one that stops cleanly removes it, so a new cluster
never inherits a stopped one's names.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from typing import Any

__all__ = ["FILE_NAME", "HeadStore"]

FILE_NAME = "head.sqlite"
TABLES = ("actors", "placement_groups", "nodes", "meta")


class HeadStore:
    """The sqlite file ``<state_dir>/head.sqlite`` (made if missing)."""

    def __init__(self, state_dir: str):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, FILE_NAME)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        os.chmod(self.path, 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        for table in TABLES:
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                            "(key TEXT PRIMARY KEY, row TEXT NOT NULL)")

    def put(self, table: str, key: str, row: Any) -> None:
        self.db.execute(f"INSERT OR REPLACE INTO {table} (key, row) VALUES (?, ?)",
                        (key, json.dumps(row)))

    def delete(self, table: str, key: str) -> None:
        self.db.execute(f"DELETE FROM {table} WHERE key = ?", (key,))

    def load(self, table: str) -> dict[str, Any]:
        return {key: json.loads(row)
                for key, row in self.db.execute(f"SELECT key, row FROM {table}")}

    def remove(self) -> None:
        """Close and delete the file (a clean stop)."""
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(self.path + suffix)
