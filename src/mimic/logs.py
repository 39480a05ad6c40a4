"""Logging for the stages: a log file under results/logs/ plus the console."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(log_path: str | None, name: str = "mimic") -> logging.Logger:
    """Log to ``log_path`` (created) and to stderr; returns the stage's logger."""
    root = logging.getLogger("mimic")
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(log_path, mode="w")
        file.setFormatter(fmt)
        root.addHandler(file)
    root.propagate = False
    return logging.getLogger(name)


def log_to_files(message: str, level: int = logging.ERROR) -> None:
    """Write ``message`` to the stage's log files only (the console gets its own line from the CLI)."""
    logger = logging.getLogger("mimic")
    record = logger.makeRecord("mimic", level, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            handler.flush()
