"""Expected failures: bad parameters, missing or damaged files, a diverging training run.

Each is a :class:`MimicError` whose message is one line that names the key or file at fault and
what would fix it. The ``mimic`` command line prints that line on stderr and exits with status 2
(``--debug`` shows the traceback instead); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MimicError(Exception):
    """An expected failure; the message is one line naming the key or file and the fix."""


class IntegrityError(MimicError, ValueError):
    """A file fails its checks: checksum, format, finiteness or the settings recorded in it."""


class TrainingDiverged(MimicError, ArithmeticError):
    """Training met a non-finite loss or gradient; nothing was written."""


class MissingToolError(MimicError, RuntimeError):
    """An external program or package a step needs (Java for the caption metrics, the OK-VQA stemmer's data)
    is not installed; the message names it and how to install it."""


class ScoringError(MimicError, RuntimeError):
    """Scoring generated predictions failed; the predictions are kept and a rerun scores them without generating."""


class DiskFullError(MimicError, OSError):
    """A file system has too little free space for an output (checked before the heavy work where the size can
    be estimated, or met while writing); nothing was replaced: the previous output is as it was."""
