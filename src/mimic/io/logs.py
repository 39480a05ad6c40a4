"""Logging for the stages: a log file under results/logs/ plus the console, and progress.

Progress of a long step (:func:`progress`) is a live tqdm bar where stderr is a terminal,
and one plain log line every ``every`` steps (and at the end) in the log file. Where
stderr is not a terminal (a Slurm output file, ``2> file``) there is no bar at all, since
tqdm would write one carriage-return frame per update there; the same periodic lines go
to stderr instead.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

PROGRESS_LINES = 20  # periodic lines per run when ``every`` is not given (every 5%)


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _NotOnALiveBar(logging.Filter):
    """On a terminal console the live bar shows progress; its periodic lines go to the log file only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "progress", False)


def setup_logging(log_path: str | None, name: str = "mimic") -> logging.Logger:
    """Log to ``log_path`` (created) and to stderr; returns the stage's logger."""
    root = logging.getLogger("mimic")
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    if is_terminal(sys.stderr):
        console.addFilter(_NotOnALiveBar())
    else:
        _quiet_library_bars()
    root.addHandler(console)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(log_path, mode="w")
        file.setFormatter(fmt)
        root.addHandler(file)
    root.propagate = False
    return logging.getLogger(name)


def _quiet_library_bars() -> None:
    """transformers' and huggingface_hub's own bars (e.g. 'Loading weights') off when stderr is a file."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when they are imported
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """tqdm's ``update`` / ``set_postfix`` / ``close`` (and iteration), for terminals and log files.

    A bar is drawn only where stderr is a terminal; in every case a line goes to ``logger``
    each ``every`` steps and at the end: ``<desc>: 120/500 (24%) 3.1 it/s elapsed 0:39 eta 2:02 loss=0.41``.
    """

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", logger: logging.Logger | None = None,
                 every: int | None = None, stream=None):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc = desc
        self.logger = logger or logging.getLogger("mimic.progress")
        self.every = every or max(1, math.ceil((self.total or PROGRESS_LINES) / PROGRESS_LINES))
        stream = stream if stream is not None else sys.stderr
        self.bar = tqdm(total=self.total, desc=desc, dynamic_ncols=True, file=stream) if is_terminal(stream) else None
        self.n, self.logged, self.postfix = 0, 0, ""
        self.start = time.perf_counter()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, **values) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        if self.n - self.logged >= self.every or (self.total is not None and self.n >= self.total):
            self._line()

    def close(self) -> None:
        if self.n != self.logged:
            self._line()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self) -> None:
        self.logged = self.n
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        eta = f" eta {_duration((self.total - self.n) / rate)}" if self.total and rate > 0 else ""
        text = f"{self.desc}: {done} {rate:.2f} it/s elapsed {_duration(elapsed)}{eta}"
        self.logger.info("%s", f"{text} {self.postfix}".rstrip(), extra={"progress": True})


def progress(iterable=None, total: int | None = None, desc: str = "", logger: logging.Logger | None = None,
             every: int | None = None) -> Progress:
    """A live bar on a terminal, periodic log lines in log files (see :class:`Progress`)."""
    return Progress(iterable, total=total, desc=desc, logger=logger, every=every)


def log_to_files(message: str, level: int = logging.ERROR) -> None:
    """Write ``message`` to the stage's log files only (the console gets its own line from the CLI)."""
    logger = logging.getLogger("mimic")
    record = logger.makeRecord("mimic", level, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            handler.flush()
