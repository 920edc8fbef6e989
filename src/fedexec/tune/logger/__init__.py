"""Result loggers (``tune.logger``): per-trial ``result.json`` (JSON lines),
``progress.csv``, ``params.json`` and TensorBoard event files.

The default three are on for every experiment; all of them run on one writer
thread of the driver, so writing never delays a trial's next decision.
"""

from .logger import (
    DEFAULT_LOGGERS,
    CSVLoggerCallback,
    JsonLoggerCallback,
    LoggerCallback,
    TBXLoggerCallback,
)

__all__ = [
    "DEFAULT_LOGGERS",
    "CSVLoggerCallback",
    "JsonLoggerCallback",
    "LoggerCallback",
    "TBXLoggerCallback",
]
