"""The loggers: each gets a trial's start, its results and its end, on the
writer thread (see :mod:`fedexec.tune.logger.writer`), and keeps its files open
while the trial runs.

Files in each trial directory (as Ray's):

``params.json``       the trial's config (``params.pkl`` too, for any value)
``result.json``       one JSON object per result, ``config`` included
``progress.csv``      one row per result; columns from the first result, nested
                      keys flattened with ``/``, ``config`` left out
``events.out.tfevents.*``  TensorBoard scalars ``tune/<key>`` per iteration
                      (written by :mod:`.tfevents`)
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from numbers import Real
from typing import Any

import numpy as np

from ..search.variant_generator import flatten_dict
from .tfevents import EventFileWriter

__all__ = [
    "DEFAULT_LOGGERS",
    "CSVLoggerCallback",
    "JsonLoggerCallback",
    "LoggerCallback",
    "TBXLoggerCallback",
    "to_jsonable",
]

EXPR_PARAM_FILE = "params.json"
EXPR_PARAM_PICKLE_FILE = "params.pkl"
EXPR_RESULT_FILE = "result.json"
EXPR_PROGRESS_FILE = "progress.csv"


def to_jsonable(value: Any) -> Any:
    """JSON encoder fallback: numpy scalars and arrays as Python values, the rest
    as their ``str``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


class LoggerCallback:
    """Base of the loggers; runs on the writer thread. ``trial.local_path`` is the
    trial directory (it exists when ``log_trial_start`` is called)."""

    def log_trial_start(self, trial: Any) -> None:
        """The trial (re)started."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        """One result of the trial."""

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """The trial ended: close its files."""

    def flush(self) -> None:
        """Push buffered lines to the files (called when the writer is idle)."""


class JsonLoggerCallback(LoggerCallback):
    """``params.json``, ``params.pkl`` and ``result.json`` (JSON lines)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[Any, str]] = {}  # trial -> (file, ',"config": ...}')

    def log_trial_start(self, trial: Any) -> None:
        path = trial.local_path
        config = json.dumps(trial.config, default=to_jsonable)
        with open(os.path.join(path, EXPR_PARAM_FILE), "w") as f:
            f.write(json.dumps(trial.config, indent=2, sort_keys=True, default=to_jsonable))
        try:
            with open(os.path.join(path, EXPR_PARAM_PICKLE_FILE), "wb") as f:
                pickle.dump(trial.config, f)
        except Exception:  # an unpicklable config value: params.json is enough
            pass
        self._files[trial.trial_id] = (open(os.path.join(path, EXPR_RESULT_FILE), "a"),
                                       f', "config": {config}}}\n')

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        entry = self._files.get(trial.trial_id)
        if entry is None:
            return
        f, config_tail = entry
        text = _dumps(result)
        f.write(text[:-1] + config_tail if len(text) > 2 else text[:-1] + config_tail[1:])

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        entry = self._files.pop(trial.trial_id, None)
        if entry is not None:
            entry[0].close()

    def flush(self) -> None:
        for f, _ in self._files.values():
            f.flush()


_dumps = json.JSONEncoder(default=to_jsonable).encode


def _flat(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` without ``config``, nested dicts flattened (no copy when flat)."""
    if "config" not in result and not any(v.__class__ is dict for v in result.values()):
        return result
    return flatten_dict({k: v for k, v in result.items() if k != "config"})


class CSVLoggerCallback(LoggerCallback):
    """``progress.csv``: one row per result, the first result's columns."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[Any, Any, list[str] | None]] = {}

    def log_trial_start(self, trial: Any) -> None:
        path = os.path.join(trial.local_path, EXPR_PROGRESS_FILE)
        f = open(path, "a", newline="")
        fields = None
        if f.tell() > 0:  # restored: keep the header already in the file
            with open(path, newline="") as existing:
                fields = next(csv.reader(existing), None)
        self._files[trial.trial_id] = (f, csv.writer(f), fields)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        entry = self._files.get(trial.trial_id)
        if entry is None:
            return
        f, writer, fields = entry
        row = _flat(result)
        if fields is None:
            fields = list(row)
            writer.writerow(fields)
            self._files[trial.trial_id] = (f, writer, fields)
        writer.writerow([row.get(k, "") for k in fields])

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        entry = self._files.pop(trial.trial_id, None)
        if entry is not None:
            entry[0].close()

    def flush(self) -> None:
        for f, _, _ in self._files.values():
            f.flush()


class TBXLoggerCallback(LoggerCallback):
    """TensorBoard event files of every numeric metric (tag ``tune/<key>``, step
    ``training_iteration``), in the format tensorboardX and TensorBoard read."""

    def __init__(self) -> None:
        self._writers: dict[str, EventFileWriter] = {}

    def log_trial_start(self, trial: Any) -> None:
        self._writers[trial.trial_id] = EventFileWriter(trial.local_path)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        writer = self._writers.get(trial.trial_id)
        if writer is None:
            return
        scalars = [(f"tune/{k}", float(v)) for k, v in _flat(result).items()
                   if k not in _NOT_SCALARS and isinstance(v, Real) and not isinstance(v, bool)]
        writer.add_scalars(int(result.get("training_iteration") or 0), scalars)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        writer = self._writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()


#: automatic fields not worth a TensorBoard chart (time_total_s and the iteration are)
_NOT_SCALARS = frozenset({"pid", "timestamp", "done", "time_this_iter_s", "time_since_restore",
                          "iterations_since_restore"})


DEFAULT_LOGGERS = (JsonLoggerCallback, CSVLoggerCallback, TBXLoggerCallback)
