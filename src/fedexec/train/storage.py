"""The run directory ``<storage_path>/<name>/`` and the checkpoints kept in it.

Files::

    <storage_path>/<name>/
        checkpoint_000000/ ...   rank 0's checkpoints (CheckpointConfig decides which stay)
        result.json              one JSON line per result of the latest fit() (rank 0's metrics)
        .fedexec_train_marker    a token telling workers whether they share this directory

Rank 0 writes a checkpoint straight into its final place when it shares the
directory; otherwise the trainer unpacks the archive it sent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from typing import Any

from fedexec.tune.checkpoint import Checkpoint, unpack
from fedexec.tune.config import CheckpointConfig
from fedexec.tune.execution.checkpoints import to_delete

__all__ = ["RunStorage", "run_directory"]

DEFAULT_STORAGE = "~/fedexec_results"
RESULT_FILE = "result.json"
_CHECKPOINT = re.compile(r"^checkpoint_(\d+)$")


def run_directory(storage_path: str | None, name: str | None, default_name: str) -> str:
    """``<storage_path>/<name>`` (storage defaults to ``$FEDEXEC_RESULTS_DIR`` or
    ``~/fedexec_results``; name to ``<default_name>_<date>``)."""
    storage = storage_path or os.environ.get("FEDEXEC_RESULTS_DIR") or DEFAULT_STORAGE
    name = name or f"{default_name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return os.path.join(os.path.abspath(os.path.expanduser(storage)), name)


class RunStorage:
    """The run directory: the marker, the results file and the kept checkpoints.

    Checkpoints already in the directory (an earlier run of the same name) are
    kept and counted, so new ones get new numbers.
    """

    def __init__(self, path: str, config: CheckpointConfig | None) -> None:
        self.path = path
        self.config = config or CheckpointConfig()
        os.makedirs(path, exist_ok=True)
        token = uuid.uuid4().hex
        marker = os.path.join(path, ".fedexec_train_marker")
        with open(marker, "w") as f:
            f.write(token)
        self.marker = (marker, token)
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.next_index = 0
        for entry in sorted(os.listdir(path)):
            match = _CHECKPOINT.match(entry)
            if match:
                self.next_index = max(self.next_index, int(match.group(1)) + 1)
        # the results of this fit() (an earlier run's checkpoints stay; its results go)
        self._results = open(os.path.join(path, RESULT_FILE), "w")

    def add_checkpoint(self, saved: tuple[str, Any], metrics: dict[str, Any]) -> Checkpoint:
        """Keep rank 0's checkpoint (``("path", dir)`` or ``("bytes", (name,
        archive))``) and delete the ones ``CheckpointConfig`` no longer keeps."""
        kind, value = saved
        if kind == "path":
            path = str(value)
        else:
            name, data = value
            path = os.path.join(self.path, name)
            shutil.rmtree(path, ignore_errors=True)
            unpack(data, path)
        match = _CHECKPOINT.match(os.path.basename(path))
        if match:
            self.next_index = max(self.next_index, int(match.group(1)) + 1)
        self.records.append((path, metrics))
        for record in to_delete(self.records, self.config):
            self.records.remove(record)
            shutil.rmtree(record[0], ignore_errors=True)
        return Checkpoint(path)

    @property
    def latest(self) -> Checkpoint | None:
        return Checkpoint(self.records[-1][0]) if self.records else None

    def best_checkpoints(self) -> list[tuple[Checkpoint, dict[str, Any]]]:
        return [(Checkpoint(path), metrics) for path, metrics in self.records]

    def add_result(self, row: dict[str, Any]) -> None:
        self._results.write(json.dumps(row, default=_plain) + "\n")
        self._results.flush()

    def close(self) -> None:
        self._results.close()
        try:
            os.remove(self.marker[0])
        except OSError:
            pass


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(value)
